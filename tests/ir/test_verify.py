"""Verifier: each rule, broken once, gives an error naming the node (underlined in the text)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from masic.ir.graph import Buffer
from masic.ir.text import parse
from masic.ir.verify import VerifyError, verify
from masic.passes import DEFAULT_PIPELINE, PassOptions
from masic.passes.manager import PassManager
from tests.ir.test_text import TEXT


def _broken(old: str, new: str) -> str:
    assert old in TEXT
    return TEXT.replace(old, new)


def test_valid_graph_passes() -> None:
    verify(parse(TEXT))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_broken("dense(%in)", "dense(%nope)"), "operand %nope is not defined before its use"),
        (_broken("dense(%in)", "dense(%lif)"), "operand %lif is not defined before its use"),
        (_broken("dense(%in)", "densest(%in)"), "unknown op 'densest'"),
        (_broken("dense(%in)", "dense(%in, %in)"), "dense takes 1 operand"),
        (_broken("weight=@fc.w", "weight=@fc.q"), "missing parameter @fc.q"),
        (_broken(", in_features=2", ""), "missing ['in_features']"),
        (_broken("out_features=3}", "out_features=3, colour=1}"), "unexpected ['colour']"),
        (_broken("out_features=3} : f32[3]", "out_features=3} : f32[4]"), "declared type f32[4] but operands give"),
        (_broken("in_features=2", "in_features=5"), "dense expects 5 input features"),
        (_broken("v_th=1.0", "v_th=1"), "neuron parameter v_th must be a float"),
        (_broken("%lif = lif", "%fc = lif"), "value %fc is defined twice"),
        (_broken("output %lif", "output %ghost"), "graph output %ghost"),
        (_broken("timesteps=4", "timesteps=0"), "timesteps=0"),
    ],
)
def test_broken_rules_are_reported(text: str, message: str) -> None:
    with pytest.raises(VerifyError) as info:
        verify(parse(text))
    assert message in str(info.value)


def test_error_underlines_the_node_and_names_its_origin() -> None:
    with pytest.raises(VerifyError) as info:
        verify(parse(_broken("in_features=2", "in_features=5")))
    lines = str(info.value).splitlines()
    assert lines[1].strip().startswith("%fc = dense(%in)")
    assert set(lines[2].strip()) == {"^"}
    assert lines[3].strip() == "from model.0 (Linear)"


def _planned():
    return PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(parse(TEXT))


def _with_buffer(graph, name: str, **changes):
    buffers = tuple(replace(b, **changes) if b.name == name else b for b in graph.plan.buffers)
    return replace(graph, plan=replace(graph.plan, buffers=buffers))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"offset": 8}, "not a multiple of the alignment"),
        ({"offset": 1 << 20}, "past the arena"),
        ({"size": 4}, "does not fit its buffer"),
        ({"start": 2, "end": 2}, "empty lifetime"),
    ],
)
def test_plan_checker_rejects_broken_buffers(changes: dict, message: str) -> None:
    with pytest.raises(VerifyError, match=message):
        verify(_with_buffer(_planned(), "lif.v", **changes))


def test_plan_checker_rejects_overlap_of_live_buffers() -> None:
    graph = _planned()
    other = graph.plan.buffer("lif.i")
    with pytest.raises(VerifyError, match="live together and overlap"):
        verify(_with_buffer(graph, "lif.v", offset=other.offset))


def test_plan_checker_rejects_unplaced_values() -> None:
    graph = _planned()
    values = tuple(v for v in graph.plan.values if v[0] != "fc")
    with pytest.raises(VerifyError, match="value %fc has no buffer"):
        verify(replace(graph, plan=replace(graph.plan, values=values)))


def test_buffers_dead_at_different_times_may_share_memory() -> None:
    a, b = Buffer("a", "activation", 64, 0, 2), Buffer("b", "activation", 64, 2, 4)
    assert not a.overlaps_in_time(b)
