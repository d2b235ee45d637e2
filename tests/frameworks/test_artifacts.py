"""End to end: each framework's whole zoo, merged into one graph, compiled into one artifact per target and run
(natively for x86_64, under qemu-aarch64 for aarch64) on 32 steps of input: every case's output identical to its
framework's, its membrane within rtol 1e-5 (tests/frameworks/cases.py says why they can be exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.artifacts import compile_graph, run_artifact
from tests.frameworks.cases import check, merged, zoos

pytestmark = pytest.mark.slow
ZOOS = zoos()


@pytest.mark.parametrize("zoo", ZOOS)
def test_compiled_zoo_reproduces_its_framework(zoo: str, target: str, tmp_path: Path) -> None:
    cases = merged(ZOOS[zoo])
    x = cases.input(seed=1)
    out = compile_graph(cases.graph, target, tmp_path / "out")
    result, outputs = run_artifact(out, x, tmp_path, "--no-exit")
    assert result.returncode == 0, result.stderr
    assert outputs.shape[0] == len(x)
    for case, got in zip(cases.cases, cases.split(outputs), strict=True):
        check(case, case.run(case.make(), case.input(seed=1)), got)
