"""Host latency of whole models with float32, float16 and int8 weights: Norse zoo models (tests/zoo_models.py)
compiled for this machine under a memory budget (VGG16's 528 MB of float32 weights then stream from weights.bin
every inference) and run as a user runs them (`model --input x.npy --threads 2 --no-exit`): the best of --runs
rounds (10x as many for small models), each round running every format in turn.

    python bench/compressed_latency.py [--workdir build/compressed_latency] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
from masic.frontends.dispatch import ImportOptions
from masic.targets import get_target

from bench.machine import cpu_model
from masic import driver
from masic.ir.weight_formats import WeightChoice
from masic.units import parse_bytes

ROOT = Path(__file__).resolve().parents[1]
BUDGET = "64MB"
# (zoo factory, per-sample input shape, timesteps): VGGs at ImageNet size, ConvNet4 at the size its zoo entry has
MODELS = (
    ("convnet4", (1, 16, 16), 8),
    ("vgg11", (3, 224, 224), 2),
    ("vgg16", (3, 224, 224), 2),
)
FORMATS = ("float32", "float16", "int8")


def compile_model(name: str, shape: tuple[int, ...], timesteps: int, fmt: str, out: Path) -> None:
    """`tests.zoo_models:NAME` compiled for x86_64 under BUDGET with every weight stored as `fmt` (unless a previous
    run left the artifact)."""
    if (out / "manifest.json").exists():
        return
    target, budget = get_target("x86_64"), parse_bytes(BUDGET)
    graph = driver.import_model(f"tests.zoo_models:{name}", ImportOptions(shape, timesteps))
    planned = driver.plan(graph, driver.options_for(target, budget, WeightChoice(fmt))).graph
    driver.build(planned, target, out, budget=budget)


def run_once(out: Path, x: Path) -> dict:
    """The stats of one run on 2 threads (every timestep run)."""
    command = [str(out / "model"), "--input", str(x), "--threads", "2", "--no-exit"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_runs(outs: dict[str, Path], x: Path, rounds: int) -> dict[str, dict]:
    """Each artifact's fastest run of `rounds`, the formats run in turn in each round (so that a busy moment of the
    machine slows every format alike)."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for fmt, out in outs.items():
            stats = run_once(out, x)
            if fmt not in best or stats["wall_s"] < best[fmt]["wall_s"]:
                best[fmt] = stats
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "compressed_latency")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=[name for name, _, _ in MODELS])
    args = parser.parse_args()
    os.environ.setdefault("MASIC_CACHE_DIR", str(args.workdir / "cache"))
    print(f"Machine: {cpu_model()}, 2 threads, budget {BUDGET}")
    print()
    print("| model | input | T | weights | weights.bin MB | arena MB | latency ms | vs float32 |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for name, shape, timesteps in (m for m in MODELS if m[0] in args.models):
        folder = args.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        x = folder / "x.npy"
        np.save(x, np.random.default_rng(0).uniform(0, 20, (timesteps, *shape)).astype(np.float32))
        outs = {fmt: folder / fmt for fmt in FORMATS}
        for fmt, out in outs.items():
            compile_model(name, shape, timesteps, fmt, out)
        rounds = args.runs if math.prod(shape) > 10_000 else 10 * args.runs  # small models: more, cheap runs
        best = best_runs(outs, x, rounds)
        for fmt, stats in best.items():
            print(
                f"| {name} | {'x'.join(map(str, shape))} | {timesteps} | {fmt} | {stats['weights_bytes'] / 1e6:.1f} | "
                f"{stats['arena_bytes'] / 1e6:.1f} | {1e3 * stats['wall_s']:.2f} | "
                f"{stats['wall_s'] / best['float32']['wall_s']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
