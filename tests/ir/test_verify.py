"""Verifier: each rule, broken once, gives an error naming the node (underlined in the text)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from masic.ir.graph import Buffer
from masic.ir.text import parse
from masic.ir.verify import VerifyError, verify
from masic.passes import PassOptions
from tests.ir.test_text import TEXT
from tests.pipelines import planned


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


RECURRENT = """graph @rec timesteps=3 {
  param @s.factor : f32[3]
  %in = input() : f32[3]
  %prev = delay() {source="sum"} : f32[3]
  %sum = add(%in, %prev) : f32[3]
  %s = scale(%sum) {factor=@s.factor} : f32[3]
  %z = iaf(%s) {v_th=1.0, v_reset=0.0, probe="v"} : f32[3]
  output %z
}
"""


def _broken_recurrent(old: str, new: str) -> str:
    assert old in RECURRENT
    return RECURRENT.replace(old, new)


def test_a_recurrent_graph_passes() -> None:
    import numpy as np

    verify(parse(RECURRENT, {"s.factor": np.ones(3, np.float32)}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_broken_recurrent('source="sum"', 'source="ghost"'), "delay source %ghost is not a node of the graph"),
        (_broken_recurrent('source="sum"', 'source="in"'), "delay source %in must come after the delay"),
        (
            _broken_recurrent("  %sum = add", '  %other = delay() {source="sum"} : f32[2]\n  %sum = add'),
            "delay source %sum is f32[3], not f32[2]",
        ),
        (_broken_recurrent('probe="v"', 'probe="i"'), "probe must name a state of iaf"),
        (_broken_recurrent("param @s.factor : f32[3]", "param @s.factor : f32[2]"), "per-element parameter factor"),
        (_broken_recurrent("{factor=@s.factor}", '{factor="big"}'), "scale parameter factor must be a float"),
    ],
)
def test_broken_recurrent_rules_are_reported(text: str, message: str) -> None:
    with pytest.raises(VerifyError) as info:
        verify(parse(text))
    assert message in str(info.value)


def test_a_delay_must_declare_its_type() -> None:
    from masic.passes import infer_shapes
    from masic.passes.base import PassError

    untyped = parse(_broken_recurrent('delay() {source="sum"} : f32[3]', 'delay() {source="sum"} : ?'))
    verify(untyped)  # types are infer-shapes' business
    with pytest.raises(PassError, match="delay nodes must declare their type"):
        infer_shapes.run(untyped, PassOptions())


def test_error_underlines_the_node_and_names_its_origin() -> None:
    with pytest.raises(VerifyError) as info:
        verify(parse(_broken("in_features=2", "in_features=5")))
    lines = str(info.value).splitlines()
    assert lines[1].strip().startswith("%fc = dense(%in)")
    assert set(lines[2].strip()) == {"^"}
    assert lines[3].strip() == "from model.0 (Linear)"


def _planned(text: str = TEXT):
    return planned(parse(text), PassOptions(alignment=16), without=("fuse-neurons",))


FUSED = TEXT.replace("v_reset=0.0}", "v_reset=0.0, fused=true}")  # the LIF in the dense kernel's epilogue


def _with_buffer(graph, name: str, **changes):
    assert name in {b.name for b in graph.plan.buffers}
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


@pytest.mark.parametrize(
    ("buffer", "lifetime", "message"),
    [  # positions: in 0, fc 1, lif 2
        ("fc", (1, 2), r"buffer fc of %lif \(output\) is not live at position 2"),  # lif updates fc in place
        ("fc", (2, 3), r"buffer fc of %fc \(output\) is not live at position 1"),
        ("@fc.w", (2, 3), r"of %@fc.w \(weight\) is not live at position 1"),
        ("lif.v", (0, 2), r"of %lif.v \(state\) is not live at position 2"),
        ("in", (1, 3), r"of %in \(input\) is not live at position 0"),
    ],
)
def test_plan_checker_rejects_buffers_dead_where_they_are_used(buffer: str, lifetime: tuple, message: str) -> None:
    graph = _planned()
    assert [node.name for node, _ in graph.positions()] == ["in", "fc", "lif"]
    with pytest.raises(VerifyError, match=message):
        verify(_with_buffer(graph, buffer, start=lifetime[0], end=lifetime[1]))


@pytest.mark.parametrize(
    ("buffer", "lifetime", "message"),
    [  # positions: in 0, fc 1 (computing lif too), lif 2 (runs nothing)
        ("lif", (2, 3), r"buffer lif of %lif \(output\) is not live at position 1"),
        ("@fc.w", (2, 3), r"of %@fc.w \(weight\) is not live at position 1"),
        ("in", (0, 1), r"of %in \(operand\) is not live at position 1"),
    ],
)
def test_plan_checker_checks_a_fused_neuron_at_its_operands_position(
    buffer: str, lifetime: tuple, message: str
) -> None:
    graph = _planned(FUSED)
    assert graph.node("lif").attr("fused") and "fc" not in {b.name for b in graph.plan.buffers}
    verify(graph)
    with pytest.raises(VerifyError, match=message):
        verify(_with_buffer(graph, buffer, start=lifetime[0], end=lifetime[1]))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("%lif = lif(%fc)", "%lif = lif(%in)"), r"operand %in is a input, not one of conv2d, dense"),
        (("output %lif", "output %fc"), r"operand %fc is the graph output"),
        (("v_reset=0.0}", 'v_reset=0.0, fused="yes"}'), r"fused must be true"),
    ],
)
def test_verifier_refuses_a_neuron_that_cannot_be_fused(edit: tuple[str, str], message: str) -> None:
    verify(parse(FUSED))
    text = FUSED.replace(", fused=true", "") if "fused=" in edit[1] else FUSED
    text = text.replace(*edit).replace("%in = input() : f32[2]", "%in = input() : f32[3]")
    text = text.replace("in_features=2", "in_features=3").replace("f32[3,2]", "f32[3,3]")
    with pytest.raises(VerifyError, match=message):
        verify(parse(text))


def test_plan_checker_requires_carried_state_over_the_whole_block() -> None:
    """State read at one position only still carries to the next step: it may not be reused in between."""
    with pytest.raises(VerifyError, match="state carried across blocks"):
        verify(_with_buffer(_planned(), "lif.v", start=2, end=3))


def test_buffers_dead_at_different_times_may_share_memory() -> None:
    a, b = Buffer("a", "activation", 64, 0, 2), Buffer("b", "activation", 64, 2, 4)
    assert not a.overlaps_in_time(b)
