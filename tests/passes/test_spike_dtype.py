"""The spike dtype: its textual form and verifier rules, the spike-dtype pass's contract, the smaller buffers the
planner sees, the interpreter and plan simulator storing spikes as bytes, and weights stored transposed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from masic.analysis.liveness import analyse, transient_states
from masic.analysis.minimum_budget import minimum_budget
from masic.codegen.weights import stored_weight, write_weights
from masic.ir.graph import TensorType
from masic.ir.interpret import run
from masic.ir.text import ParseError, parse, print_graph
from masic.ir.verify import VerifyError, verify
from masic.passes import DEFAULT_PIPELINE, REGISTRY, PassOptions, spike_dtype
from masic.passes.manager import PassManager
from masic.passes.patch_rows import patch_rows
from masic.passes.slice_layers import slice_to
from tests.filecheck import filecheck
from tests.strategies import graphs

LIF = "dt_tau_mem=0.5, neg_dt_tau_syn=-0.5, v_leak=0.0, v_th=0.3, v_reset=0.0"
# conv -> lif -> maxpool -> flatten -> dense -> lif -> dense -> li: the digits example's shape
CONVNET = f"""graph @convnet timesteps=4 {{
  param @c.w : f32[4,1,3,3]
  param @fc1.w : f32[16,36]
  param @fc1.b : f32[16]
  param @fc2.w : f32[3,16]
  %in = input() : f32[1,6,6]
  %c = conv2d(%in) {{weight=@c.w, out_channels=4, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1}} : ?
  %z1 = lif(%c) {{{LIF}}} : ?
  %p = maxpool2d(%z1) {{kernel=(2,2), stride=(2,2), padding=(0,0)}} : ?
  %f = flatten(%p) : ?
  %fc1 = dense(%f) {{weight=@fc1.w, bias=@fc1.b, in_features=36, out_features=16}} : ?
  %z2 = lif(%fc1) {{{LIF}}} : ?
  %fc2 = dense(%z2) {{weight=@fc2.w, in_features=16, out_features=3}} : ?
  %out = li(%fc2) {{dt_tau_mem=0.5, neg_dt_tau_syn=-0.5, v_leak=0.0}} : ?
  output %out
}}
"""


def _weights(text: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {p.name: p.type.shape for p in parse(text).params}
    return {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in shapes.items()}


def _typed(text: str, with_spikes: bool = True):
    passes = DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("spike-dtype") + with_spikes]
    return PassManager(passes).run(parse(text, _weights(text)))


def _planned(graph, *skip: str):
    return PassManager([p for p in DEFAULT_PIPELINE if p not in skip], PassOptions(alignment=16)).run(graph)


def _input(graph, steps: int = 6) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 3, (steps, *graph.inputs[0].type.shape)).astype(np.float32)


def test_registered_in_the_default_pipeline_before_slicing() -> None:
    assert REGISTRY["spike-dtype"].run is spike_dtype.run
    order = list(DEFAULT_PIPELINE)
    assert order.index("fold-batchnorm") < order.index("spike-dtype") < order.index("slice-layers")


def test_spiking_outputs_and_what_passes_them_on_are_spikes() -> None:
    filecheck(
        print_graph(_typed(CONVNET)),
        """
        CHECK: %c = conv2d(%in) {weight=@c.w, out_channels=4, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : f32[4,6,6]
        CHECK-NEXT: %z1 = lif(%c) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.5, v_leak=0.0, v_th=0.3, v_reset=0.0} : spike[4,6,6]
        CHECK-NEXT: %p = maxpool2d(%z1) {kernel=(2,2), stride=(2,2), padding=(0,0)} : spike[4,3,3]
        CHECK-NEXT: %f = flatten(%p) : spike[36]
        CHECK-NEXT: %fc1 = dense(%f) {weight=@fc1.w, bias=@fc1.b, in_features=36, out_features=16} : f32[16]
        CHECK-NEXT: %z2 = lif(%fc1) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.5, v_leak=0.0, v_th=0.3, v_reset=0.0} : spike[16]
        CHECK-NEXT: %fc2 = dense(%z2) {weight=@fc2.w, in_features=16, out_features=3} : f32[3]
        CHECK-NEXT: %out = li(%fc2)
        """,
    )


def test_text_round_trips_spike_types_and_refuses_unknown_ones() -> None:
    graph = _typed(CONVNET)
    assert parse(print_graph(graph), graph.weights) == graph
    with pytest.raises(ParseError, match="unknown element type 'u8'"):
        parse(print_graph(graph).replace("spike[16]", "u8[16]"))


def test_a_spike_tensor_the_loader_reads_stays_float() -> None:
    """The output (here a flatten of a max pool of a neuron) and a concat mixing spikes and floats stay float32: the
    neurons behind them keep float32 outputs; other neurons still output spikes."""
    text = CONVNET.replace("output %out", "output %f")
    graph = _typed(text)
    assert {n.name: n.type.dtype for n in graph.nodes if n.name in ("z1", "p", "f", "z2")} == {
        "z1": "f32",
        "p": "f32",
        "f": "f32",
        "z2": "spike",
    }
    assert graph.node("fc1").attr("weight_layout") is None
    mixed = CONVNET.replace("%f = flatten(%p) : ?", "%cat = concat(%p, %p2) : ?\n  %f = flatten(%cat) : ?")
    mixed = mixed.replace(
        "  %z1 = lif", "  %p2 = maxpool2d(%c) {kernel=(2,2), stride=(2,2), padding=(0,0)} : ?\n  %z1 = lif"
    )
    mixed = mixed.replace("in_features=36", "in_features=72").replace("@fc1.w : f32[16,36]", "@fc1.w : f32[16,72]")
    typed = _typed(mixed)
    assert typed.node("z1").type.dtype == typed.node("cat").type.dtype == "f32"
    assert typed.node("z2").type.dtype == "spike"


def test_probes_and_delays() -> None:
    """A probed neuron outputs its membrane (float32); a delay of spikes holds spikes, its state too."""
    text = f"""graph @rec timesteps=3 {{
  param @w : f32[5,5]
  %in = input() : f32[5]
  %d = delay() {{source="z"}} : f32[5]
  %r = dense(%d) {{weight=@w, in_features=5, out_features=5}} : ?
  %s = add(%in, %r) : ?
  %z = lif(%s) {{{LIF}}} : ?
  %v = lif(%z) {{{LIF}, probe="v"}} : ?
  output %v
}}
"""
    graph = _typed(text)
    assert [graph.node(n).type.dtype for n in ("d", "r", "s", "z", "v")] == ["spike", "f32", "f32", "spike", "f32"]
    planned = _planned(parse(text, _weights(text)))
    assert planned.node("r").attr("weight_layout") == "IO"  # spikes, one step per call: the accumulate kernel
    assert planned.plan.buffer_of("d.last").size == 5  # one byte per spike
    x = _input(planned)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(_typed(text, with_spikes=False), x))


def test_the_verifier_checks_spike_types() -> None:
    graph = _typed(CONVNET)
    conv_spikes = replace(graph.node("c"), type=TensorType((4, 6, 6), "spike"))
    with pytest.raises(VerifyError, match=r"declared type spike\[4,6,6\] but operands give f32\[4,6,6\]"):
        verify(graph.with_nodes([conv_spikes if n.name == "c" else n for n in graph.nodes]))
    with pytest.raises(VerifyError, match=r"graph output %z2 is spike\[16\]: the loader reads float32"):
        verify(replace(graph, output="z2"))
    untyped = _typed(CONVNET, with_spikes=False)
    io = untyped.node("fc1").with_attrs(weight_layout="IO")
    with pytest.raises(VerifyError, match='weight_layout "IO" is for the accumulate-only kernel of a spike operand'):
        verify(untyped.with_nodes([io if n.name == "fc1" else n for n in untyped.nodes]))
    oi = graph.node("fc1").with_attrs(weight_layout="OI")
    with pytest.raises(VerifyError, match="dense weight_layout must be \"IO\" when given, got 'OI'"):
        verify(graph.with_nodes([oi if n.name == "fc1" else n for n in graph.nodes]))


def test_the_planner_sees_one_byte_per_spike() -> None:
    graph = parse(CONVNET, _weights(CONVNET))
    with_spikes, without = _planned(graph), _planned(graph, "spike-dtype")
    assert with_spikes.plan.buffer_of("z1").size == 4 * 6 * 6  # bytes, not 4 * 144
    assert without.plan.buffer_of("z1").size == 4 * 4 * 6 * 6
    assert with_spikes.plan.buffer_of("f").size == 36  # the flattened max pool's bytes
    assert with_spikes.plan.buffer_of("z2").size == 4  # read only by an accumulating dense layer: one word of bits
    assert with_spikes.plan.buffer_of("z1.v").size == 4 * 4 * 6 * 6  # neuron state stays float32
    # Resident weights dominate this small model's unbounded plan; the smallest budget it compiles under (weights
    # streamed, the leading stage in row patches) is where the smaller activations show.
    smallest = [minimum_budget(folded, 16) for folded in (_typed(CONVNET), _typed(CONVNET, with_spikes=False))]
    assert smallest[0] < smallest[1]


def test_a_padded_convolution_of_spikes_pads_float32() -> None:
    """Its scratch (the padded input) holds the spikes converted to float32, as the kernel writes it: once per
    input, not once per block of outputs and tap."""
    conv = "%c2 = conv2d(%p) {weight=@c2.w, out_channels=2, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : ?"
    text = CONVNET.replace("  %f = flatten(%p) : ?", f"  {conv}\n  %f = flatten(%c2) : ?").replace(
        "  param @fc1.w : f32[16,36]", "  param @c2.w : f32[2,4,3,3]\n  param @fc1.w : f32[16,18]"
    )
    planned = _planned(parse(text.replace("in_features=36", "in_features=18"), _weights(text)))
    assert planned.node("p").type.dtype == "spike"
    assert planned.plan.buffer("c2.scratch").size == 4 * 5 * 5 * 4


def test_neurons_write_in_place_only_over_operands_of_their_size() -> None:
    """A one-byte spike output over a float32 operand could clobber another thread's inputs; spikes over spikes
    (a neuron reading a max pool of spikes) can share the buffer."""
    text = CONVNET.replace("%f = flatten(%p) : ?", f"%z3 = lif(%p) {{{LIF}}} : ?\n  %f = flatten(%z3) : ?")
    values = dict(analyse(_typed(text)).values)
    assert values["z1"] == "z1" and values["z3"] == "p"
    assert dict(analyse(_typed(text, with_spikes=False)).values)["z1"] == "c"


def test_spikes_are_bytes_in_the_interpreter_and_the_simulator() -> None:
    graph = _typed(CONVNET, with_spikes=False)
    planned = _planned(graph)
    x = _input(graph)
    expected = run(graph, x)
    np.testing.assert_array_equal(run(planned, x), expected)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), expected)
    spikes = _typed(CONVNET)
    probe = replace(spikes, output="z2", nodes=spikes.nodes)  # the interpreter itself does not verify
    z2 = run(probe, x)
    assert z2.dtype == np.uint8 and set(np.unique(z2)) <= {0, 1} and 0 < z2.mean() < 1


@settings(max_examples=40, deadline=None)
@given(graphs())
def test_typing_spikes_changes_no_result(graph) -> None:
    """On random graphs (neurons, pools, views, delays, element-wise ops): the pass verifies and every output,
    interpreted and simulated in the plan, is bit-for-bit what the float32 graph computes."""
    planned = _planned(graph)
    assert planned.node(graph.output).type.dtype == "f32"
    x = _input(graph, graph.timesteps if transient_states(planned) else 4)  # transient state lasts one block
    # fold-pooling, before spike-dtype, may round differently (it sums weights at compile time)
    expected = run(PassManager(DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("spike-dtype")]).run(graph), x)
    np.testing.assert_array_equal(run(planned, x), expected)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), expected)


def test_slices_and_patches_keep_the_types() -> None:
    graph = _typed(CONVNET)
    sliced = slice_to(graph, 16 * 36)  # fc1 in pieces of 4 rows
    verify(sliced)
    parts = [n for n in sliced.nodes if n.name.startswith("fc1.part")]
    assert len(parts) == 4 and all(p.type.dtype == "f32" for p in parts)
    patched = patch_rows(graph, 3, 2)  # conv, lif, maxpool in two row patches
    assert patched is not None
    verify(patched)
    assert patched.node("z1.patch0").type.dtype == patched.node("p").type.dtype == "spike"
    x = _input(graph)
    for changed in (sliced, patched):
        np.testing.assert_array_equal(run(_planned(changed), x, simulate_plan=True), run(graph, x))


def test_weights_of_accumulate_dense_layers_are_stored_transposed(tmp_path: Path) -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert stored_weight(w, None) is w
    np.testing.assert_array_equal(stored_weight(w, "IO"), w.T)
    with pytest.raises(ValueError, match="unknown weight layout 'blocked'"):
        stored_weight(w, "blocked")
    planned = _planned(parse(CONVNET, _weights(CONVNET)))
    layout = write_weights(planned, tmp_path / "weights.bin")
    data = (tmp_path / "weights.bin").read_bytes()
    stored = {
        s.name: np.frombuffer(data[s.file_offset : s.file_offset + s.nbytes], np.float32) for s in layout.resident
    }
    np.testing.assert_array_equal(stored["fc1.w"], planned.weights["fc1.w"].T.ravel())
    conv_layout = planned.node("c").attr("weight_layout")  # the layout pass's choice for the conv
    np.testing.assert_array_equal(stored["c.w"], stored_weight(planned.weights["c.w"], conv_layout).ravel())
    assert planned.weights["fc1.w"].shape == (16, 36)  # the IR keeps the logical layout
