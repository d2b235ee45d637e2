"""The pass manager: runs passes by name, verifies after each (an invalid result names the pass and the node), and
prints, times and dumps the IR after each."""

from __future__ import annotations

from dataclasses import replace

import pytest

from masic.ir.text import parse
from masic.passes import DEFAULT_PIPELINE, REGISTRY, PassOptions
from masic.passes.base import Pass, PassError
from masic.passes.manager import PassManager
from tests.passes.test_fold_batchnorm import CONV_BN


def test_manager_prints_times_and_dumps_after_each_pass(tmp_path) -> None:
    printed: list[str] = []
    manager = PassManager(DEFAULT_PIPELINE, PassOptions(), print_after_all=True, dump_dir=tmp_path, emit=printed.append)
    manager.run(parse(CONV_BN))
    assert [name for name, _ in manager.timings] == list(DEFAULT_PIPELINE)
    assert [p.splitlines()[0] for p in printed] == [f"// ----- IR after {n} -----" for n in DEFAULT_PIPELINE]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:02d}-{n}.ir" for i, n in enumerate(DEFAULT_PIPELINE)]
    assert "batchnorm2d" in (tmp_path / "00-infer-shapes.ir").read_text()
    assert "batchnorm2d" not in (tmp_path / "01-fold-batchnorm.ir").read_text()


def test_manager_refuses_unknown_pass_names() -> None:
    with pytest.raises(ValueError, match="unknown pass 'fuse-everything'"):
        PassManager(["fuse-everything"])


def test_an_invalid_result_names_the_pass_and_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass that leaves the graph invalid (here: an operand renamed to nothing) is stopped by the verifier."""

    def broken(graph, options):
        return graph.with_nodes([replace(n, inputs=("ghost",)) if n.name == "z" else n for n in graph.nodes])

    registry = dict(REGISTRY) | {"break-it": Pass("break-it", broken, "breaks a graph")}
    monkeypatch.setattr("masic.passes.manager.REGISTRY", registry)
    with pytest.raises(PassError, match=r"^break-it: produced an invalid graph: operand %ghost is not defined") as info:
        PassManager(["infer-shapes", "break-it"]).run(parse(CONV_BN))
    assert info.value.node.name == "z"
