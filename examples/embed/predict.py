"""Runs a masic artifact from Python with the artifact's own masic_runtime.py (no masic installed; numpy optional).

    python examples/embed/predict.py out/ frames.raw

Feeds the raw float32 frames of FRAMES (one timestep's input each) one step at a time, prints each step's output and,
when the exit rule holds, the prediction; then runs the first frame as a whole sample with Model.run.
"""

from __future__ import annotations

import array
import sys
from pathlib import Path


def main(artifact: Path, frames_path: Path) -> None:
    sys.path.insert(0, str(artifact))  # masic_runtime.py ships in the artifact folder
    from masic_runtime import MasicError, Model

    try:
        with Model(str(artifact)) as model:
            frames = array.array("f", frames_path.read_bytes())
            n = model.input_floats
            steps = 0
            for first in range(0, len(frames) - n + 1, n):
                y, exit_now = model.step(frames[first : first + n])
                steps += 1
                print(f"step {steps}:", " ".join(f"{float(v):.9g}" for v in y))
                if exit_now or steps == model.default_timesteps:
                    print(f"prediction {model.stats()['prediction']} after {steps} steps")
                    model.reset()
                    steps = 0
            print("whole sample of the first frame:", model.run(frames[:n]))
    except MasicError as error:
        sys.exit(f"predict.py: error: {error}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: predict.py ARTIFACT_FOLDER FRAMES")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
