"""layout, alone, on graphs prepared by the passes before it: each conv's weight layout (blocked by output channels
on narrow maps), which activations are stored channel-blocked and which spikes bit-packed, exactly where its rules
say, and the values computed do not change; the verifier keeps every layout between writers and readers that
handle it. What it prints: tests/filecheck/layout/; what the kernels and weights.bin make of it:
tests/codegen/test_lowering_choices.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from masic.ir.graph import Graph, Node, TensorType
from masic.ir.interpret import run
from masic.ir.neurons import FAMILIES
from masic.ir.text import parse, print_graph
from masic.ir.verify import VerifyError, verify
from masic.opt import run_passes
from masic.passes import DEFAULT_PIPELINE, PassOptions, layout
from masic.passes.patch_rows import patch_rows, stage_ends
from masic.passes.slice_layers import slice_to
from masic.passes.spike_dtype import spiking
from tests.pipelines import prepared
from tests.strategies import conv_stages, graphs, spiking_dense_graphs

# A 32-column map (whole vectors), 8x8 / 24-column maps, a grouped conv whose groups have 12 outputs, 6 outputs
# (no block of 4 divides them), and a 1x1 conv of a 1x1 map (a matrix-vector product).
GRAPH = """graph @maps timesteps=2 {
  param @wide.w : f32[16,2,3,3]
  param @wide.b : f32[16]
  param @cols.w : f32[8,16,1,9]
  param @narrow.w : f32[32,8,3,3]
  param @grouped.w : f32[24,16,3,3]
  param @six.w : f32[6,24,3,3]
  param @mv.w : f32[10,6,1,1]
  %in = input() : f32[2,8,32]
  %wide = conv2d(%in) {weight=@wide.w, bias=@wide.b, out_channels=16, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : f32[16,8,32]
  %cols = conv2d(%wide) {weight=@cols.w, out_channels=8, kernel=(1,9), stride=(1,1), padding=(0,0), dilation=(1,1), groups=1} : f32[8,8,24]
  %pool = maxpool2d(%cols) {kernel=(1,3), stride=(1,3), padding=(0,0)} : f32[8,8,8]
  %narrow = conv2d(%pool) {weight=@narrow.w, out_channels=32, kernel=(3,3), stride=(2,2), padding=(1,1), dilation=(1,1), groups=1} : f32[32,4,4]
  %grouped = conv2d(%narrow) {weight=@grouped.w, out_channels=24, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=2} : f32[24,4,4]
  %six = conv2d(%grouped) {weight=@six.w, out_channels=6, kernel=(3,3), stride=(1,1), padding=(0,0), dilation=(1,1), groups=1} : f32[6,2,2]
  %one = avgpool2d(%six) {kernel=(2,2), stride=(2,2), padding=(0,0)} : f32[6,1,1]
  %mv = conv2d(%one) {weight=@mv.w, out_channels=10, kernel=(1,1), stride=(1,1), padding=(0,0), dilation=(1,1), groups=1} : f32[10,1,1]
  %z = lif(%mv) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.2, v_reset=0.0} : f32[10,1,1]
  output %z
}
"""


def _graph():
    rng = np.random.default_rng(0)
    text = parse(GRAPH, {})
    weights = {p.name: rng.normal(0, 0.5, p.type.shape).astype(np.float32) for p in text.params}
    return parse(GRAPH, weights)


def test_narrow_maps_get_blocked_weights_and_outputs() -> None:
    """Which layouts (tests/filecheck/layout/narrow-maps.ir prints them), counted by the summary; the graph's weights
    stay logical, so the interpreter computes the same."""
    graph = _graph()
    laid_out = run_passes(graph, ["layout"])
    verify(laid_out)
    assert layout.summary(laid_out) == (
        "layout: activations 7 NCHW, 1 NCHW16c, 1 NCHW8c; conv weights: 3 OIHW, 1 OIHW16o, 1 OIHW4o, 1 OIHW8o"
    )
    assert parse(print_graph(laid_out), laid_out.weights) == laid_out  # the attribute round trips
    assert laid_out.weights == graph.weights  # the graph keeps the logical layout ...
    x = np.random.default_rng(1).uniform(0, 2, (2, 2, 8, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(laid_out, x), run(graph, x))  # ... so the interpreter computes the same


def test_strided_columns_are_gathered_so_the_weights_are_blocked() -> None:
    attrs = dict(parse(GRAPH, {}).node("wide").attrs)
    strided = Node("s", "conv2d", ("in",), tuple((attrs | {"stride": (1, 2)}).items()), TensorType((16, 8, 16)))
    assert layout.weight_layout(strided, (2, 8, 32)) == "OIHW16o"
    assert layout.weight_layout(replace(strided, attrs=tuple(attrs.items())), (2, 8, 32)) == "OIHW"


def test_pointwise_convs_of_spikes_keep_oihw() -> None:
    """A 1x1 conv of an 8x8 map gets blocks of floats, but not of spikes (its kernel would convert every byte once
    per block of outputs)."""
    conv = Node(
        "pw",
        "conv2d",
        ("x",),
        (
            ("out_channels", 24),
            ("kernel", (1, 1)),
            ("stride", (1, 1)),
            ("padding", (0, 0)),
            ("dilation", (1, 1)),
            ("groups", 1),
        ),
        TensorType((24, 8, 8)),
    )
    assert layout.weight_layout(conv, (144, 8, 8)) == "OIHW8o"
    assert layout.weight_layout(conv, (144, 8, 8), "spike") == "OIHW"


def test_the_pass_runs_after_slicing_patching_and_scheduling() -> None:
    order = [DEFAULT_PIPELINE.index(name) for name in ("slice-layers", "patch-rows", "schedule", "layout")]
    assert order == sorted(order)


def test_sliced_pieces_get_their_own_layouts() -> None:
    """Slicing cuts along output channels: a piece keeps blocks only when they divide its own outputs."""
    graph = slice_to(_graph(), 11 * 8 * 9 * 4)  # narrow.w in 3 pieces of 10, 11 and 11 outputs ...
    laid_out = run_passes(graph, ["layout"])
    pieces = {n.name: n.attr("weight_layout") for n in laid_out.nodes if n.name.startswith("narrow.part")}
    assert pieces == {"narrow.part0": None, "narrow.part1": None, "narrow.part2": None}
    graph = slice_to(_graph(), 16 * 8 * 9 * 4)  # ... or 2 of 16
    laid_out = run_passes(graph, ["layout"])
    pieces = {n.name: n.attr("weight_layout") for n in laid_out.nodes if n.name.startswith("narrow.part")}
    assert pieces == {"narrow.part0": "OIHW16o", "narrow.part1": "OIHW16o"}


def test_row_patches_share_one_layout_and_conflicts_are_refused() -> None:
    graph = _graph()
    end = [n.name for n in graph.nodes].index("grouped")
    assert end in stage_ends(graph)
    patched = patch_rows(graph, end, 2)
    laid_out = run_passes(patched, ["layout"])
    narrow = [n for n in laid_out.nodes if n.op == "conv2d" and n.attr("weight").name == "narrow.w"]
    assert len(narrow) == 2 and {n.attr("weight_layout") for n in narrow} == {"OIHW16o"}
    x = np.random.default_rng(2).uniform(0, 2, (2, 2, 8, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(laid_out, x), run(graph, x))
    second = narrow[1]
    nodes = [
        replace(n, attrs=second.with_attrs(weight_layout=None, layout=None).attrs) if n is second else n
        for n in laid_out.nodes
    ]
    with pytest.raises(VerifyError, match=r"weight @narrow\.w is read as OIHW16o and as OIHW"):
        verify(laid_out.with_nodes(nodes))


def test_layouts_that_split_a_group_are_refused() -> None:
    bad = GRAPH.replace("groups=2} : f32[24,4,4]", 'groups=2, weight_layout="OIHW8o"} : f32[24,4,4]')
    with pytest.raises(VerifyError, match="splits a group's 12 outputs"):
        verify(parse(bad, {}))


SPIKING_DENSE = """graph @fc timesteps=4 {
  param @fc.w : f32[8,64]
  %in = input() : f32[64]
  %z = lif(%in) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.2, v_reset=0.0} : ?
  %fc = dense(%z) {weight=@fc.w, in_features=64, out_features=8} : ?
  %y = li(%fc) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0} : ?
  output %y
}
"""


# Spikes of z1 reach a dense layer through two views, and z2's a dense layer and a max pool; z3 is a delay's source,
# z4 the graph's output: only z1 (and its views) may be bit-packed.
BITS = """graph @bits timesteps=4 {
  param @fc1.w : f32[8,40]
  param @fc1.b : f32[8]
  param @fc2.w : f32[5,8]
  param @fc3.w : f32[8,7]
  %in = input() : f32[40]
  %z1 = lif(%in) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.2, v_reset=0.0} : ?
  %r = reshape(%z1) {shape=(1,5,8)} : ?
  %f = flatten(%r) : ?
  %fc1 = dense(%f) {weight=@fc1.w, bias=@fc1.b, in_features=40, out_features=8} : ?
  %z2 = iaf(%fc1) {v_th=0.1, v_reset=0.0} : ?
  %fc2 = dense(%z2) {weight=@fc2.w, in_features=8, out_features=5} : ?
  %m = reshape(%z2) {shape=(2,2,2)} : ?
  %p = maxpool2d(%m) {kernel=(2,2), stride=(2,2), padding=(0,0)} : ?
  %pf = flatten(%p) : ?
  %d = delay() {source="z3"} : f32[5]
  %s = add(%fc2, %d) : ?
  %z3 = lif_box(%s) {dt_tau_mem=0.5, v_leak=0.0, v_th=0.2, v_reset=0.0, reset="value"} : ?
  %cat = concat(%pf, %z3) {axis=0} : ?
  %fc3 = dense(%cat) {weight=@fc3.w, in_features=7, out_features=8} : ?
  %z4 = lif(%fc3) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.2, v_reset=0.0} : ?
  output %z4
}
"""


def _bits_graph():
    rng = np.random.default_rng(5)
    weights = {p.name: rng.normal(0, 1, p.type.shape).astype(np.float32) for p in parse(BITS, {}).params}
    return parse(BITS, weights)


def _laid_out(graph: Graph, options: PassOptions | None = None) -> tuple[Graph, Graph]:
    """(the graph as the layout pass receives it, the graph after it)."""
    before = prepared(graph, "layout", options)
    return before, run_passes(before, ["layout"], options)


def test_spikes_only_accumulating_dense_layers_read_are_bit_packed() -> None:
    """Which values are bits: tests/filecheck/layout/bit-packed-spikes.ir; here the summary, a second run, the
    text and the values."""
    before, after = _laid_out(_bits_graph())
    assert layout.summary(after) == (
        "layout: activations 11 NCHW; conv weights: no convs; spike buffers: 1 bit-packed, 5 one byte per spike"
    )
    assert run_passes(after, ["layout"]) == after  # a second run changes nothing
    assert parse(print_graph(after), after.weights) == after  # bits[...] round trips
    x = np.random.default_rng(6).uniform(0, 1, (4, 40)).astype(np.float32)
    np.testing.assert_array_equal(run(after, x), run(before, x))


def test_the_pieces_of_a_sliced_dense_layer_all_read_the_bits() -> None:
    """Slicing cuts a dense layer of spikes along its outputs: every piece reads the same operand and accumulates,
    so the spikes stay bit-packed."""
    typed = prepared(_bits_graph(), "slice-layers")
    sliced = run_passes(slice_to(typed, 4 * 40 * 4), ["schedule"])  # fc1.w (8, 40) in two pieces of 4 rows
    laid_out = run_passes(sliced, ["layout"])
    pieces = [n for n in laid_out.nodes if n.name.startswith("fc1.part")]
    assert len(pieces) == 2 and all(n.attr("weight_layout") == "IO" and n.inputs == ("f",) for n in pieces)
    assert laid_out.node("z1").type.dtype == "bits"
    x = np.random.default_rng(7).uniform(0, 1, (4, 40)).astype(np.float32)
    np.testing.assert_array_equal(run(laid_out, x), run(typed, x))


def test_the_verifier_keeps_bits_between_spiking_neurons_and_accumulating_layers() -> None:
    _, planned = _laid_out(_bits_graph())

    def changed(name: str, node: Node) -> Node:
        if name == "fc1":  # multiplying
            return node.with_attrs(weight_layout=None)
        return replace(node, type=TensorType(node.type.shape, "bits"))  # z2's spikes packed, though a pool reads them

    for names, message in ((("fc1",), "dense cannot read bits"), (("z2", "m", "p"), "maxpool2d cannot output bits")):
        nodes = [changed(n.name, n) if n.name in names else n for n in planned.nodes]
        with pytest.raises(VerifyError, match=message):
            verify(planned.with_nodes(nodes))


def _rule_bits(graph) -> set[str]:
    """The bit-packing rule restated over a laid-out graph: a spiking neuron's spikes and their views are bits
    exactly when some node reads them, every reader but a view is a dense layer with "IO" that is not batched, and
    none of them is the output or a delay's source."""
    owner: dict[str, str] = {}  # spike value -> the spiking neuron whose buffer it shares
    for node in graph.nodes:
        if node.op in ("flatten", "reshape") and node.inputs[0] in owner:
            owner[node.name] = owner[node.inputs[0]]
        elif spiking(node) and node.type.dtype in ("spike", "bits"):
            owner[node.name] = node.name
    verdicts: dict[str, list[bool]] = {}
    for node in graph.nodes:
        for value in node.inputs:
            if value in owner and node.op not in ("flatten", "reshape"):
                accumulating = node.attr("weight_layout") == "IO" and not graph.batched(node)
                verdicts.setdefault(owner[value], []).append(accumulating)
    pinned = {
        owner[v] for v in (graph.output, *(n.attr("source") for n in graph.nodes if n.op == "delay")) if v in owner
    }
    return {value for value, neuron in owner.items() if all(verdicts.get(neuron, [False])) and neuron not in pinned}


@settings(max_examples=100, deadline=None)
@given(st.one_of(graphs(), spiking_dense_graphs()), st.sampled_from([1 << 20, 1 << 20, 0]))
def test_bits_exactly_where_the_rule_says(graph, cache_bytes: int) -> None:
    """On random graphs (some ending in a spiking neuron that dense layers and perhaps other nodes read),
    scheduled one step per call or in batched blocks: exactly the values the rule picks are bits, the rest of the
    spikes bytes; a second run changes nothing; the results do not change."""
    from masic.targets.machine import Machine

    options = PassOptions(alignment=16, machine=Machine(6e9, 4e9, 4e7, cache_bytes=cache_bytes))
    before, after = _laid_out(graph, options)
    bits = {n.name for n in after.nodes if n.type.dtype == "bits"}
    assert bits == _rule_bits(after)
    event(f"bit-packed values: {min(len(bits), 2)}")
    assert run_passes(after, ["layout"], options) == after
    x = np.random.default_rng(1).uniform(0, 3, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)
    np.testing.assert_array_equal(run(after, x), run(before, x))


def _rule_blocked(graph: Graph) -> dict[str, str]:
    """The channel-blocking rule restated over a laid-out graph: a conv with a weight blocked by c on a map of more
    than one pixel, and the element-wise ops of one operand downstream of it, are stored NCHW{c}c exactly when none
    of them is the output or a delay's source, every other reader is a pool, a padded conv or a conv with a blocked
    weight (random graphs share no parameters, so the rule's clause on them is not restated)."""
    carriers = ("relu", "scale", "offset", "threshold", "div_by", "div_into", "clamp_min", "clamp_max", "exp")
    carriers += ("ge_value", "le_value", "eq_value", "sigmoid", *FAMILIES)  # every neuron family
    root: dict[str, str] = {}  # value -> the conv whose output reaches it through carriers only
    for node in graph.nodes:
        if node.op == "conv2d":
            root[node.name] = node.name
        elif node.op in carriers and node.inputs[0] in root:
            root[node.name] = root[node.inputs[0]]
    fine: dict[str, bool] = {}
    delay_sources = {n.attr("source") for n in graph.nodes if n.op == "delay"}
    for node in graph.nodes:
        if node.name in root:
            fine.setdefault(root[node.name], True)
            fine[root[node.name]] &= node.name != graph.output and node.name not in delay_sources
        for value in node.inputs:
            if value in root and not (node.op in carriers and root.get(node.name) == root[value]):
                rows = node.attr("row_padding") or (node.attr("padding", (0, 0))[0],) * 2
                padded = rows != (0, 0) or node.attr("padding", (0, 0))[1] != 0
                free = node.op != "conv2d" or padded or node.attr("weight_layout") is not None
                fine[root[value]] &= node.op in ("conv2d", "maxpool2d", "avgpool2d", "sumpool2d") and free
    chosen = {}
    for value, conv in root.items():
        node = graph.node(conv)
        weight = node.attr("weight_layout")
        if weight and node.type.shape[1:] != (1, 1) and fine[conv]:
            chosen[value] = f"NCHW{weight.removeprefix('OIHW').removesuffix('o')}c"
    return chosen


@settings(max_examples=150, deadline=None)
@given(st.one_of(conv_stages(outputs=(4, 8, 12, 16, 32)), conv_stages(outputs=(16,), max_layers=3), graphs()))
def test_channel_blocked_exactly_where_the_rule_says(graph) -> None:
    """On random conv stages with narrow maps and wide convs: exactly the values the rule picks are stored blocked
    (and the verifier accepts them); a second run changes nothing; the results do not change."""
    before, after = _laid_out(graph, PassOptions(alignment=16))
    stored = {n.name: n.attr("layout") for n in after.nodes if n.attr("layout")}
    assert stored == _rule_blocked(after)
    event(f"blocked values: {min(len(stored), 3)}")
    verify(after)
    assert run_passes(after, ["layout"]) == after
    x = np.random.default_rng(1).uniform(0, 3, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)
    np.testing.assert_array_equal(run(after, x), run(before, x))


def test_the_verifier_keeps_blocked_values_between_their_writers_and_readers() -> None:
    laid_out = run_passes(_graph(), ["layout"])  # cols and narrow stored blocked (the FileCheck test above)

    def changed(**attrs: dict) -> Graph:
        return laid_out.with_nodes([n.with_attrs(**attrs[n.name]) if n.name in attrs else n for n in laid_out.nodes])

    cases = [
        ({"narrow": {"weight_layout": "OIHW8o"}}, "a conv stores NCHW16c only with its weight in OIHW16o"),
        ({"cols": {"layout": "NCHW4c"}}, "a conv stores NCHW4c only with its weight in OIHW4o"),
        ({"cols": {"layout": "NCHW3c"}}, r"NCHW3c needs \(C, H, W\) with C a multiple of 3"),
        ({"cols": {"layout": "NHWC"}}, "unknown activation layout 'NHWC'"),
        ({"cols": {"layout": "NCHW"}}, "NCHW is the default: leave the attribute out"),
        ({"z": {"layout": "NCHW5c"}}, r"its operand %mv is stored NCHW, not NCHW5c"),
    ]
    for attrs, message in cases:
        with pytest.raises(VerifyError, match=message):
            verify(changed(**attrs))
    # a reader that takes NCHW only, and the graph output
    text = print_graph(laid_out).replace(
        "%pool = maxpool2d(%cols) {kernel=(1,3), stride=(1,3), padding=(0,0)} : f32[8,8,8]",
        "%pool = relu(%cols) : f32[8,8,24]\n  %pool2 = maxpool2d(%pool) {kernel=(1,3), stride=(1,3), padding=(0,0)}"
        " : f32[8,8,8]",
    )
    text = text.replace("conv2d(%pool)", "conv2d(%pool2)")
    with pytest.raises(VerifyError, match=r"relu reads %cols, stored NCHW8c, as NCHW"):
        verify(parse(text, laid_out.weights))
    output = print_graph(laid_out).replace("output %z", "output %narrow")
    with pytest.raises(VerifyError, match="the graph output and delay sources are stored NCHW"):
        verify(parse(output, laid_out.weights))
