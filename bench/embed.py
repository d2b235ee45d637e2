"""The model inside the user's program: what the C library's API, `out/model --stream` and a process that opens the
model once cost, on the digits example for the host (x86_64).

1. Compiles the digits SNN (`examples.digits:digits_model`, weights as initialised) for the host, without a budget
   (every weight resident, blocks of one step). SAMPLES random digit-sized inputs in [0, 2) are the data.
2. Builds bench/embed_bench.c against the artifact's lib/libmasic_model.a; single-threaded, best of 5: the kernels
   of one step alone (masic_model_block on the session's arena) against masic_step on the same steps; masic_step
   over the inputs as frames, PASSES times, a reset every 16 steps (what --stream does, in process); masic_run of
   each input for 16 steps from one open.
3. Times `out/model --stream --no-exit` on the same frames, minus the same command on no frames (start-up and
   opening the model), per frame, against the in-process loop.
4. Takes `out/model --labels --no-exit` on the same inputs (its own wall_s_per_sample: the loop, without start-up)
   against masic_run's time per sample.

Each figure is the best of 5 rounds; a round runs embed_bench (itself best of 5) and then out/model, so that a busy
spell of the shared machine slows both sides of a comparison rather than one.

    python bench/embed.py [--workdir build/embed] [--samples 1000] [--passes 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.artifacts import masic_cli

BENCH = Path(__file__).with_name("embed_bench.c")
STEPS = 16
REPEATS = 3  # runs of a command per timing
ROUNDS = 5


def compile_digits(workdir: Path) -> Path:
    out = workdir / "out"
    run = masic_cli(
        "compile", "examples.digits:digits_model", "--input-shape", "1,8,8", "--target", "x86_64", "-o", str(out)
    )
    if run.returncode != 0:
        sys.exit(f"embed.py: masic compile failed: {run.stderr.strip()}")
    return out


def timed(command: list[str], stdin: Path | None = None) -> float:
    """Best wall time of REPEATS runs of a command that must succeed."""
    times = []
    for _ in range(REPEATS):
        with open(stdin or "/dev/null", "rb") as source:
            start = time.perf_counter()
            subprocess.run(command, stdin=source, stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/embed"))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=20, help="passes of --stream over the samples as frames")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = compile_digits(args.workdir)

    x = np.random.default_rng(0).random((args.samples, 1, 8, 8), dtype=np.float32) * 2
    samples, frames = args.workdir / "samples.raw", args.workdir / "frames.raw"
    x.tofile(samples)
    np.tile(x, (args.passes, 1, 1, 1)).tofile(frames)
    np.save(args.workdir / "x.npy", x)
    np.save(args.workdir / "y.npy", np.zeros(args.samples, dtype=np.int64))

    bench = args.workdir / "embed_bench"
    include = [f"-I{out / 'include'}", f"-I{Path(__file__).resolve().parents[1] / 'masic/codegen/runtime'}"]
    library = str(out / "lib/libmasic_model.a")
    subprocess.run(
        ["cc", "-O2", "-std=c11", *include, "-o", str(bench), str(BENCH), library, "-lpthread", "-lm"], check=True
    )
    command = [str(bench), str(out / "weights.bin"), str(samples), str(STEPS), str(args.passes)]
    model = [str(out / "model"), "--threads", "1", "--no-exit"]
    labelled = [*model, "--input", str(args.workdir / "x.npy"), "--labels", str(args.workdir / "y.npy")]
    n_frames = args.samples * args.passes
    api: dict[str, float] = {}
    per_sample = stream_s = float("inf")
    for _ in range(ROUNDS):
        figures = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        api = {key: min(value, api.get(key, value)) for key, value in figures.items()}
        stream_s = min(stream_s, (timed([*model, "--stream"], frames) - timed([*model, "--stream"])) / n_frames)
        batch = subprocess.run(labelled, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        per_sample = min(per_sample, json.loads(batch)["wall_s_per_sample"])

    kernels, step = api["kernels_s_per_step"], api["step_s_per_step"]
    in_process, run = api["frames_s_per_step"], api["run_s_per_sample"]
    rows = [
        ("kernels of one step (masic_model_block)", f"{kernels * 1e6:.2f} us", ""),
        ("masic_step, same steps", f"{step * 1e6:.2f} us", f"API overhead {(step - kernels) * 1e6:+.2f} us per step"),
        (f"masic_step over {n_frames} frames, in process", f"{in_process * 1e6:.2f} us", "per step"),
        (
            f"out/model --stream, {n_frames} frames",
            f"{stream_s * 1e6:.2f} us",
            f"over in process {(stream_s - in_process) * 1e6:+.2f} us per step",
        ),
        (f"masic_run, one open, {args.samples} x {STEPS} steps", f"{run * 1e6:.1f} us", "per sample"),
        (
            f"out/model --labels, {args.samples} x {STEPS} steps",
            f"{per_sample * 1e6:.1f} us",
            f"per sample; one open differs by {100 * (run / per_sample - 1):+.1f}%",
        ),
    ]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_name()}; single thread")
    print(f"{'what':48} {'time':>10}  note")
    for what, figure, note in rows:
        print(f"{what:48} {figure:>10}  {note}")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
