"""Compiled artifacts against the frameworks they come from: one table per framework zoo, per case and target.

For every zoo of tests/frameworks (`<framework>_models.py`: snnTorch, SpikingJelly, Sinabs, steps of the user's own
code through torch.export, and any other zoo added there), merges its cases into one graph, compiles it once per
target with masic, runs the artifact (natively for x86_64, under qemu-aarch64 for aarch64) on the cases' inputs,
runs each case in its framework on the same inputs, and prints per case: the steps, the outputs compared (spikes,
spike counts or membranes of the case's last neuron, every step), the spikes the framework fired (non-zero outputs),
how many outputs differ, and the largest membrane error relative to the largest membrane. The modules a zoo covers
are listed above its table.

    python bench/frontends.py [--steps 32] [--targets x86_64,aarch64] [--zoos snntorch_models,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.artifacts import compile_graph, run_artifact
from tests.frameworks.cases import STEPS, Case, compare, merged, zoos


def covered(cases: list[Case]) -> list[str]:
    """The framework and torch.nn module classes the zoo's models hold: not plain nn.Sequential, not the
    surrogate-gradient modules SpikingJelly's neurons hold (backward only), not the test's own step classes."""
    names = set()
    for case in cases:
        for m in case.make().modules():
            kind = type(m).__module__
            if type(m) is not nn.Sequential and "surrogate" not in kind and not kind.startswith("tests."):
                names.add(type(m).__name__)
    return sorted(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--targets", default="x86_64,aarch64")
    parser.add_argument("--zoos", default="", help="comma-separated zoo modules (default: all)")
    args = parser.parse_args()
    chosen = set(filter(None, args.zoos.split(",")))
    for zoo, cases in zoos().items():
        if chosen and zoo not in chosen:
            continue
        framework = cases[0].framework
        print(f"{framework} ({zoo}): {len(cases)} cases; modules: {', '.join(covered(cases))}")
        print(
            f"{'case':<30} {'target':<8} {'steps':>5} {'compared':>9} {'spikes':>7} {'differing':>9} {'mem. error':>10}"
        )
        group = merged(cases, args.steps)
        x = group.input(args.steps, seed=1)
        for target in args.targets.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                out = compile_graph(group.graph, target, Path(tmp) / "out")
                run, outputs = run_artifact(out, x, Path(tmp), "--no-exit")
            if run.returncode != 0:
                raise SystemExit(f"{zoo} on {target}: {run.stderr.strip()}")
            totals = [0, 0, 0]
            for case, got in zip(cases, group.split(outputs), strict=True):
                result = compare(case.run(case.make(), case.input(args.steps, seed=1)), got)
                totals = [totals[0] + result.compared, totals[1] + result.spikes, totals[2] + result.differing]
                print(
                    f"{case.name:<30} {target:<8} {args.steps:>5} {result.compared:>9} {result.spikes:>7} "
                    f"{result.differing:>9} {result.membrane_error:>10.2e}"
                )
            label = f"all {len(cases)} cases"
            print(f"{label:<30} {target:<8} {args.steps:>5} {totals[0]:>9} {totals[1]:>7} {totals[2]:>9}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
