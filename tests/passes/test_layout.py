"""layout: each conv's weight layout (blocked by output channels on narrow maps), what weights.bin then stores, and
what the kernels are told; activations stay NCHW and the values computed do not change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from masic.codegen.kernels import Conv2dKernel, DenseKernel, Pool2dKernel
from masic.codegen.lower import lower
from masic.codegen.weights import stored_weight, write_weights
from masic.ir.graph import Graph, Node, TensorType
from masic.ir.interpret import run
from masic.ir.ops import activation_block
from masic.ir.text import parse, print_graph
from masic.ir.verify import VerifyError, verify
from masic.passes import DEFAULT_PIPELINE, REGISTRY, PassOptions, layout
from masic.passes.manager import PassManager
from masic.passes.patch_rows import patch_rows, stage_ends
from masic.passes.slice_layers import slice_to
from masic.passes.spike_dtype import spiking
from tests.filecheck import filecheck
from tests.pipelines import UNFUSED_PIPELINE
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
    """A conv with blocked weights stores its output blocked alike when every reader reads that freely (a pool, a
    blocked conv), and NCHW when one does not (an unpadded OIHW conv)."""
    graph = _graph()
    laid_out = layout.run(graph, PassOptions())
    verify(laid_out)
    filecheck(
        print_graph(laid_out),
        """
        CHECK: %in = input() : f32[2,8,32]
        CHECK-NEXT: %wide = conv2d(%in) {weight=@wide.w, bias=@wide.b, out_channels=16,
        CHECK-SAME: groups=1} : f32[16,8,32]
        CHECK-NEXT: %cols = conv2d(%wide) {weight=@cols.w,
        CHECK-SAME: groups=1, weight_layout="OIHW8o", layout="NCHW8c"} : f32[8,8,24]
        CHECK-NEXT: %pool = maxpool2d(%cols) {kernel=(1,3), stride=(1,3), padding=(0,0)} : f32[8,8,8]
        CHECK-NEXT: %narrow = conv2d(%pool) {weight=@narrow.w,
        CHECK-SAME: groups=1, weight_layout="OIHW16o", layout="NCHW16c"} : f32[32,4,4]
        CHECK-NEXT: %grouped = conv2d(%narrow) {weight=@grouped.w,
        CHECK-SAME: groups=2, weight_layout="OIHW4o"} : f32[24,4,4]
        CHECK-NEXT: %six = conv2d(%grouped) {weight=@six.w,
        CHECK-SAME: groups=1} : f32[6,2,2]
        CHECK: %mv = conv2d(%one) {weight=@mv.w,
        CHECK-SAME: groups=1} : f32[10,1,1]
        CHECK-NEXT: %z = lif(%mv)
        """,
    )
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
    assert "layout" in REGISTRY
    order = [DEFAULT_PIPELINE.index(name) for name in ("slice-layers", "patch-rows", "schedule", "layout")]
    assert order == sorted(order)


def test_kernels_read_and_weights_bin_stores_the_chosen_layout(tmp_path: Path) -> None:
    planned = PassManager(DEFAULT_PIPELINE, PassOptions()).run(_graph())
    kernels, calls = lower(planned)
    convs = {call.node.name: kernel for call in calls for kernel in kernels if kernel.symbol == call.symbol}
    assert convs["narrow"].weight_layout == "OIHW16o" and convs["narrow"].weight_shape() == (2, 8, 3, 3, 16)
    assert convs["wide"].weight_layout == "OIHW" and isinstance(convs["mv"], DenseKernel)
    weights = write_weights(planned, tmp_path / "weights.bin")
    data = (tmp_path / "weights.bin").read_bytes()
    stored = {s.name: data[s.file_offset : s.file_offset + s.nbytes] for s in weights.resident}
    for node in planned.nodes:
        if node.op == "conv2d":
            name = node.attr("weight").name
            want = stored_weight(planned.weights[name], node.attr("weight_layout", "OIHW"))
            assert stored[name] == np.ascontiguousarray(want).tobytes(), name
    assert stored["narrow.w"] != planned.weights["narrow.w"].tobytes()


def test_sliced_pieces_get_their_own_layouts() -> None:
    """Slicing cuts along output channels: a piece keeps blocks only when they divide its own outputs."""
    graph = slice_to(_graph(), 11 * 8 * 9 * 4)  # narrow.w in 3 pieces of 10, 11 and 11 outputs ...
    laid_out = layout.run(graph, PassOptions())
    pieces = {n.name: n.attr("weight_layout") for n in laid_out.nodes if n.name.startswith("narrow.part")}
    assert pieces == {"narrow.part0": None, "narrow.part1": None, "narrow.part2": None}
    graph = slice_to(_graph(), 16 * 8 * 9 * 4)  # ... or 2 of 16
    laid_out = layout.run(graph, PassOptions())
    pieces = {n.name: n.attr("weight_layout") for n in laid_out.nodes if n.name.startswith("narrow.part")}
    assert pieces == {"narrow.part0": "OIHW16o", "narrow.part1": "OIHW16o"}


def test_row_patches_share_one_layout_and_conflicts_are_refused() -> None:
    graph = _graph()
    end = [n.name for n in graph.nodes].index("grouped")
    assert end in stage_ends(graph)
    patched = patch_rows(graph, end, 2)
    laid_out = layout.run(patched, PassOptions())
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
    conv = Conv2dKernel("c", (16, 4, 4), 24, (3, 3), groups=2, weight_layout="OIHW4o")
    assert conv.weight_shape() == (6, 8, 3, 3, 4)


SPIKING_DENSE = """graph @fc timesteps=4 {
  param @fc.w : f32[8,64]
  %in = input() : f32[64]
  %z = lif(%in) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.2, v_reset=0.0} : ?
  %fc = dense(%z) {weight=@fc.w, in_features=64, out_features=8} : ?
  %y = li(%fc) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0} : ?
  output %y
}
"""


@pytest.mark.parametrize(("cache_bytes", "block", "layout_"), [(1 << 20, 1, "IO"), (0, 4, None)])
def test_dense_layers_of_spikes_accumulate_unless_batched(cache_bytes: int, block: int, layout_: str | None) -> None:
    """One step per call: the accumulate-only kernel (W stored transposed), its operand bit-packed. On a machine
    without a cache the schedule batches the layer over blocks of 4 steps, whose kernel multiplies, reading W
    (out, in) once, and bytes of spikes."""
    from masic.analysis.cost import Machine

    weights = {"fc.w": np.random.default_rng(3).normal(0, 0.5, (8, 64)).astype(np.float32)}
    graph = parse(SPIKING_DENSE, weights)
    options = PassOptions(machine=Machine(1e9, 1e9, 1e9, cache_bytes=cache_bytes))
    planned = PassManager(DEFAULT_PIPELINE, options).run(graph)
    assert planned.schedule.block == block and planned.node("fc").attr("weight_layout") == layout_
    # the accumulating kernel reads z's spikes bit-packed; the batched one multiplies bytes
    assert planned.node("z").type == TensorType((64,), "bits" if layout_ else "spike")
    kernels, _ = lower(planned)
    assert {type(k).__name__ for k in kernels if "Dense" in type(k).__name__} == {
        "AccumulateDenseKernel" if layout_ else "DenseKernel"
    }
    x = np.random.default_rng(4).uniform(0, 1, (9, 64)).astype(np.float32)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(PassManager(["infer-shapes"]).run(graph), x))


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


def test_spikes_only_accumulating_dense_layers_read_are_bit_packed() -> None:
    planned = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(_bits_graph())
    types = {n.name: str(n.type) for n in planned.nodes}
    assert {name: types[name] for name in ("z1", "r", "f", "z2", "m", "p", "z3", "d", "cat")} == {
        "z1": "bits[40]",
        "r": "bits[1,5,8]",
        "f": "bits[40]",
        "z2": "spike[8]",  # a max pool reads it too
        "m": "spike[2,2,2]",
        "p": "spike[2,1,1]",
        "z3": "spike[5]",  # a delay's source
        "d": "spike[5]",
        "cat": "spike[7]",
    }
    assert types["z4"] == "f32[8]"  # the output
    assert planned.plan.buffer_of("f") == planned.plan.buffer_of("z1")  # views share the words
    assert planned.plan.buffer_of("z1").size == 8  # 40 spikes: two 32-bit words
    assert layout.summary(planned) == (
        "layout: activations 11 NCHW; conv weights: no convs; spike buffers: 1 bit-packed, 5 one byte per spike"
    )
    assert layout.run(planned, PassOptions()) == planned  # a second run changes nothing
    assert parse(print_graph(planned), planned.weights) == planned  # bits[...] round trips
    kernels, calls = lower(planned)
    by_node = {call.node.name: kernel for call in calls for kernel in kernels if kernel.symbol == call.symbol}
    assert by_node["z1"].packed and by_node["z1"].arg_dtype("z") == "uint32"
    assert by_node["fc1"].packed and by_node["fc1"].arg_shapes()["x"] == (2,)
    assert not by_node["fc1"].neuron.packed and not by_node["fc2"].packed  # z2 (bytes) runs in fc1's kernel
    assert planned.node("z2").attr("fused") and not planned.node("z1").attr("fused")
    x = np.random.default_rng(6).uniform(0, 1, (4, 40)).astype(np.float32)
    expected = run(PassManager(["infer-shapes"]).run(_bits_graph()), x)
    np.testing.assert_array_equal(run(planned, x), expected)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), expected)


def test_the_pieces_of_a_sliced_dense_layer_all_read_the_bits() -> None:
    """Slicing cuts a dense layer of spikes along its outputs: every piece reads the same operand and accumulates,
    so the spikes stay bit-packed."""
    typed = PassManager(DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("slice-layers")]).run(_bits_graph())
    sliced = slice_to(typed, 4 * 40 * 4)  # fc1.w (8, 40) in two pieces of 4 rows
    planned = PassManager(["schedule", "layout", "assign-offsets"], PassOptions(alignment=16)).run(sliced)
    pieces = [n for n in planned.nodes if n.name.startswith("fc1.part")]
    assert len(pieces) == 2 and all(n.attr("weight_layout") == "IO" and n.inputs == ("f",) for n in pieces)
    assert planned.node("z1").type.dtype == "bits"
    x = np.random.default_rng(7).uniform(0, 1, (4, 40)).astype(np.float32)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(typed, x))


def test_the_verifier_keeps_bits_between_spiking_neurons_and_accumulating_layers() -> None:
    planned = replace(PassManager(UNFUSED_PIPELINE, PassOptions(alignment=16)).run(_bits_graph()), plan=None)

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
    scheduled one step per call or in batched blocks: exactly the values the rule picks are
    bits, the rest of the spikes bytes; a bits buffer is 4 bytes per 32 spikes; the results do not change."""
    from masic.analysis.cost import Machine

    options = PassOptions(alignment=16, machine=Machine(6e9, 4e9, 4e7, cache_bytes=cache_bytes))
    planned = PassManager(DEFAULT_PIPELINE, options).run(graph)
    bits = {n.name for n in planned.nodes if n.type.dtype == "bits"}
    assert bits == _rule_bits(planned)
    event(f"bit-packed values: {min(len(bits), 2)}")
    for name in bits:
        assert planned.plan.buffer_of(name).size == 4 * -(-planned.node(name).type.numel // 32)
    assert layout.run(planned, options) == planned
    x = np.random.default_rng(1).uniform(0, 3, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)
    expected = run(PassManager(DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("spike-dtype")]).run(graph), x)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), expected)


def _rule_blocked(graph: Graph) -> dict[str, str]:
    """The channel-blocking rule restated over a laid-out graph: a conv with a weight blocked by c on a map of more
    than one pixel, and the element-wise ops of one operand downstream of it, are stored NCHW{c}c exactly when none
    of them is the output or a delay's source, every other reader is a pool, a padded conv or a conv with a blocked
    weight (random graphs share no parameters, so the rule's clause on them is not restated)."""
    carriers = ("relu", "scale", "offset", "threshold", "lif", "lif_box", "li", "li_box", "iaf")
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
    (and the verifier accepts them); the kernels are told so; the results do not change."""
    planned = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(graph)
    stored = {n.name: n.attr("layout") for n in planned.nodes if n.attr("layout")}
    assert stored == _rule_blocked(planned)
    event(f"blocked values: {min(len(stored), 3)}")
    assert layout.run(planned, PassOptions(alignment=16)) == planned
    kernels, calls = lower(planned)
    by_symbol = {kernel.symbol: kernel for kernel in kernels}
    for call in calls:
        kernel, node = by_symbol[call.symbol], call.node
        if isinstance(kernel, Conv2dKernel | Pool2dKernel):
            assert kernel.in_block == activation_block(planned.layout(node.inputs[0]))
        if isinstance(kernel, Conv2dKernel):
            assert kernel.out_block == activation_block(planned.layout(node.name))
    x = np.random.default_rng(1).uniform(0, 3, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)
    expected = run(PassManager(DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("layout")]).run(graph), x)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), expected)


def test_the_verifier_keeps_blocked_values_between_their_writers_and_readers() -> None:
    laid_out = layout.run(_graph(), PassOptions())  # cols and narrow stored blocked (the FileCheck test above)

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
