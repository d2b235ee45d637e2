"""Compiled artifacts against Norse: how close the outputs are, per model and target, in one run.

For each reference model (the test models and the digits example architecture) and each target, compiles the model
with `masic compile`, runs the artifact (natively, or under qemu-aarch64) on a random input sequence, runs Norse
step by step on the same input, and prints:
- the largest relative error of the output membrane potentials (|compiled - norse| / max|norse|);
- the fraction of spikes that differ, on the model cut after its last spiking layer.

    python bench/correctness.py [--timesteps 16] [--targets x86_64,aarch64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from norse.torch import SequentialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.digits import digits_model
from tests.artifacts import compile_model, run_artifact, spiking_prefix
from tests.norse_models import MODELS, random_input, run_norse


def compiled_outputs(
    model: SequentialState, shape: tuple[int, ...], x: np.ndarray, target: str, tmp: Path
) -> np.ndarray:
    run, outputs = run_artifact(compile_model(model, shape, target, tmp), x, tmp)
    assert run.returncode == 0 and run.stats["timesteps"] == len(x), run.stderr
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=16)
    parser.add_argument("--targets", default="x86_64,aarch64")
    args = parser.parse_args()
    models: dict[str, tuple[Callable[[], SequentialState], tuple[int, ...]]] = {
        **MODELS,
        "digits": (digits_model, (1, 8, 8)),
    }
    print(f"{'model':<8} {'target':<8} {'max rel. error (membrane)':>26} {'spikes':>8} {'spikes differing':>17}")
    for name, (factory, shape) in models.items():
        for target in args.targets.split(","):
            x = random_input(shape, args.timesteps, seed=7)
            with tempfile.TemporaryDirectory() as tmp:
                model = factory().eval()
                expected = run_norse(model, x)
                got = compiled_outputs(model, shape, x, target, Path(tmp))
                rel = np.abs(got - expected).max() / np.abs(expected).max()
                spiking = spiking_prefix(model)
                spikes_expected = run_norse(spiking, x)
                spikes_got = compiled_outputs(spiking, shape, x, target, Path(tmp))
            differing = int(np.sum(spikes_got != spikes_expected))
            print(
                f"{name:<8} {target:<8} {rel:>26.2e} {spikes_expected.size:>8} "
                f"{differing:>8} ({differing / spikes_expected.size:.3%})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
