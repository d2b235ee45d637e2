"""Verifier: each rule, broken once, gives an error naming the node (underlined in the text)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from masic.ir.graph import Buffer
from masic.ir.names import state, value
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
        (_broken("timesteps=4", "timesteps=1000001"), "it must be from 1 to 1000000"),
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
        (
            _broken_recurrent("param @s.factor : f32[3]", "param @s.factor : f32[2]"),
            "factor @s.factor is f32[2], but a scale of f32[3] reads f32[3]",
        ),
        (_broken_recurrent("{factor=@s.factor}", '{factor="big"}'), "scale parameter factor must be a float"),
    ],
)
def test_broken_recurrent_rules_are_reported(text: str, message: str) -> None:
    with pytest.raises(VerifyError) as info:
        verify(parse(text))
    assert message in str(info.value)


# Every operand and parameter of every op is checked against the others (a kernel reads what the shapes say).
SHAPES = """graph @shapes timesteps=2 {
  param @c.w : f32[4,2,3,3]
  param @c.b : f32[4]
  param @bn.m : f32[4]
  param @bn.v : f32[4]
  param @z.th : f32[4,6,6]
  param @fc.w : f32[5,72]
  param @fc.b : f32[5]
  %in = input() : f32[2,8,8]
  %c = conv2d(%in) {weight=@c.w, bias=@c.b, out_channels=4, kernel=(3,3), stride=(1,1), padding=(0,0), \
dilation=(1,1), groups=1} : f32[4,6,6]
  %bn = batchnorm2d(%c) {mean=@bn.m, var=@bn.v, eps=1e-05} : f32[4,6,6]
  %z = lif_box(%bn) {dt_tau_mem=0.5, v_leak=0.0, v_th=@z.th, v_reset=0.0, reset="value"} : f32[4,6,6]
  %sum = add(%z, %bn) : f32[4,6,6]
  %p = maxpool2d(%sum) {kernel=(2,2), stride=(2,2), padding=(0,0)} : f32[4,3,3]
  %j = concat(%p, %p) {axis=1} : f32[4,6,3]
  %f = flatten(%j) : f32[72]
  %fc = dense(%f) {weight=@fc.w, bias=@fc.b, in_features=72, out_features=5} : f32[5]
  output %fc
}
"""


def _broken_shapes(old: str, new: str) -> str:
    assert old in SHAPES
    return SHAPES.replace(old, new)


def test_the_shapes_graph_passes() -> None:
    verify(parse(SHAPES))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # the digits case: an input of 3 channels for a conv of 1 (here 2) would read past the weight
            _broken_shapes("input() : f32[2,8,8]", "input() : f32[3,8,8]"),
            "weight @c.w is f32[4,2,3,3], but a conv2d of f32[3,8,8] reads f32[4,3,3,3]",
        ),
        (_broken_shapes("@c.w : f32[4,2,3,3]", "@c.w : f32[4,2,2,2]"), "a conv2d of f32[2,8,8] reads f32[4,2,3,3]"),
        (
            _broken_shapes("@c.b : f32[4]", "@c.b : f32[5]"),
            "bias @c.b is f32[5], but a conv2d of f32[2,8,8] reads f32[4]",
        ),
        (_broken_shapes("weight=@c.w,", "weight=1.0,"), "conv2d weight must be a parameter, got 1.0"),
        (_broken_shapes("groups=1", "groups=0"), "attribute groups must be a positive integer, got 0"),
        (_broken_shapes("stride=(1,1), padding", "stride=(0,1), padding"), "stride must be a pair of integers of at"),
        (_broken_shapes("padding=(0,0), dilation", "padding=(-1,0), dilation"), "padding must be a pair of integers"),
        (_broken_shapes("@bn.m : f32[4]", "@bn.m : f32[1]"), "mean @bn.m is f32[1], but a batchnorm2d of"),
        (_broken_shapes("@z.th : f32[4,6,6]", "@z.th : f32[4,6,5]"), "v_th @z.th is f32[4,6,5], but a lif_box of"),
        (_broken_shapes("add(%z, %bn)", "add(%z, %in)"), "operands must have equal shapes, got f32[4,6,6], f32[2,8,8]"),
        (_broken_shapes("kernel=(2,2), stride=(2,2)", "kernel=(8,8), stride=(2,2)"), "does not fit input 6x6"),
        (_broken_shapes("concat(%p, %p) {axis=1}", "concat(%p, %p) {axis=2}"), "concat joins along axis 0, or 1"),
        (_broken_shapes("@fc.w : f32[5,72]", "@fc.w : f32[5,71]"), "weight @fc.w is f32[5,71], but a dense of f32[72]"),
        (
            _broken_shapes("@fc.b : f32[5]", "@fc.b : f32[6]"),
            "bias @fc.b is f32[6], but a dense of f32[72] reads f32[5]",
        ),
        (_broken_shapes("eps=1e-05", "eps=@bn.v"), "batchnorm2d eps must be a float"),
        (_broken_shapes("input() : f32[2,8,8]", "input() : f32[0,8,8]"), "every dimension must be a positive integer"),
    ],
)
def test_every_operand_and_parameter_is_checked(text: str, message: str) -> None:
    with pytest.raises(VerifyError) as info:
        verify(parse(text))
    assert message in str(info.value)


def test_a_parameter_only_where_the_op_reads_one() -> None:
    """infer-shapes checks parameters before the verifier's attribute rules run: an attribute that is no parameter
    of its op is refused."""
    from masic.passes import infer_shapes
    from masic.passes.base import PassError

    with pytest.raises(PassError, match="attribute reset of lif_box cannot be a parameter, got @z"):
        infer_shapes.run(parse(_broken_shapes('reset="value"', "reset=@z.th")), PassOptions())


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
    """The graph with the buffer whose text is `name` changed."""
    assert name in {str(b.name) for b in graph.plan.buffers}
    buffers = tuple(replace(b, **changes) if str(b.name) == name else b for b in graph.plan.buffers)
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
    other = graph.plan.buffer(state("lif", "i"))
    with pytest.raises(VerifyError, match="live together and overlap"):
        verify(_with_buffer(graph, "lif.v", offset=other.offset))


def test_plan_checker_rejects_unplaced_values() -> None:
    graph = _planned()
    values = tuple(v for v in graph.plan.values if v[0] != value("fc"))
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
    a, b = Buffer(value("a"), "activation", 64, 0, 2), Buffer(value("b"), "activation", 64, 2, 4)
    assert not a.overlaps_in_time(b)
