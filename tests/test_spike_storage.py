"""Spikes as a planned graph stores them: the planner sees one byte per spike (or a bit, where the layout packs
them), a neuron writes in place only over an operand of its own size, the interpreter and the plan simulator hold
spikes as bytes, and weights.bin stores the weights of accumulating dense layers transposed. Which values are
spikes is the spike-dtype pass's business (tests/passes/test_spike_dtype.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masic.analysis.liveness import analyse
from masic.codegen.weights import stored_weight, write_weights
from masic.ir.interpret import run
from masic.ir.names import scratch, state, value
from masic.ir.text import parse
from masic.passes import PassOptions
from masic.planning.minimum_budget import minimum_budget
from tests.passes.test_spike_dtype import CONVNET, LIF, inputs, spiked, typed, weights
from tests.pipelines import planned


def _planned(text: str, *without: str):
    return planned(parse(text, weights(text)), PassOptions(alignment=16), without)


def test_a_delay_of_spikes_holds_bytes_and_a_dense_layer_of_them_accumulates() -> None:
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
    plan = _planned(text)
    assert plan.node("r").attr("weight_layout") == "IO"  # spikes, one step per call: the accumulate kernel
    assert plan.plan.buffer_of(state("d", "last")).size == 5  # one byte per spike
    x = inputs(plan)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(typed(text), x))


def test_the_planner_sees_one_byte_per_spike() -> None:
    with_spikes, without = _planned(CONVNET), _planned(CONVNET, "spike-dtype")
    assert with_spikes.plan.buffer_of(value("z1")).size == 4 * 6 * 6  # bytes, not 4 * 144
    assert without.plan.buffer_of(value("z1")).size == 4 * 4 * 6 * 6
    assert with_spikes.plan.buffer_of(value("f")).size == 36  # the flattened max pool's bytes
    assert (
        with_spikes.plan.buffer_of(value("z2")).size == 4
    )  # read only by an accumulating dense layer: one word of bits
    assert with_spikes.plan.buffer_of(state("z1", "v")).size == 4 * 4 * 6 * 6  # neuron state stays float32
    # Resident weights dominate this small model's unbounded plan; the smallest budget it compiles under (weights
    # streamed, the leading stage in row patches) is where the smaller activations show.
    assert minimum_budget(spiked(CONVNET), 16) < minimum_budget(typed(CONVNET), 16)


def test_a_padded_convolution_of_spikes_pads_float32() -> None:
    """Its scratch (the padded input) holds the spikes converted to float32, as the kernel writes it: once per
    input, not once per block of outputs and tap."""
    conv = "%c2 = conv2d(%p) {weight=@c2.w, out_channels=2, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : ?"
    text = CONVNET.replace("  %f = flatten(%p) : ?", f"  {conv}\n  %f = flatten(%c2) : ?").replace(
        "  param @fc1.w : f32[16,36]", "  param @c2.w : f32[2,4,3,3]\n  param @fc1.w : f32[16,18]"
    )
    plan = _planned(text.replace("in_features=36", "in_features=18"))
    assert plan.node("p").type.dtype == "spike"
    assert plan.plan.buffer(scratch("c2")).size == 4 * 5 * 5 * 4


def test_neurons_write_in_place_only_over_operands_of_their_size() -> None:
    """A one-byte spike output over a float32 operand could clobber another thread's inputs; spikes over spikes
    (a neuron reading a max pool of spikes) can share the buffer."""
    text = CONVNET.replace("%f = flatten(%p) : ?", f"%z3 = lif(%p) {{{LIF}}} : ?\n  %f = flatten(%z3) : ?")
    values = dict(analyse(spiked(text)).values)
    assert values[value("z1")] == value("z1") and values[value("z3")] == value("p")
    assert dict(analyse(typed(text)).values)[value("z1")] == value("c")


def test_spikes_are_bytes_in_the_interpreter_and_the_simulator() -> None:
    graph = typed(CONVNET)
    plan = planned(graph, PassOptions(alignment=16))
    x = inputs(graph)
    expected = run(graph, x)
    np.testing.assert_array_equal(run(plan, x), expected)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), expected)


def test_weights_of_accumulate_dense_layers_are_stored_transposed(tmp_path: Path) -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert stored_weight(w, None) is w
    np.testing.assert_array_equal(stored_weight(w, "IO"), w.T)
    with pytest.raises(ValueError, match="unknown weight layout 'blocked'"):
        stored_weight(w, "blocked")
    plan = _planned(CONVNET)
    layout = write_weights(plan, tmp_path / "weights.bin")
    data = (tmp_path / "weights.bin").read_bytes()
    stored = {
        s.name: np.frombuffer(data[s.file_offset : s.file_offset + s.nbytes], np.float32) for s in layout.resident
    }
    np.testing.assert_array_equal(stored["fc1.w"], plan.weights["fc1.w"].T.ravel())
    conv_layout = plan.node("c").attr("weight_layout")  # the layout pass's choice for the conv
    np.testing.assert_array_equal(stored["c.w"], stored_weight(plan.weights["c.w"], conv_layout).ravel())
    assert plan.weights["fc1.w"].shape == (16, 36)  # the IR keeps the logical layout


def test_a_probe_of_a_family_with_temporaries_is_not_written_over_its_operand() -> None:
    """A probe (a float32 output) may lie over a float32 operand, but not that of a family whose kernels copy old
    states into registers first (masic.analysis.liveness: LLVM has been seen to load x after the output's store)."""
    lsnn = "dt_tau_mem=0.1, neg_dt_tau_syn=-0.2, dt_tau_adapt=0.02, v_leak=0.0, v_th=0.5, v_reset=0.0, beta=0.3"
    text = f"""graph @probes timesteps=3 {{
  %in = input() : f32[5]
  %a = relu(%in) : ?
  %b = relu(%in) : ?
  %v1 = lif(%a) {{{LIF}, probe="v"}} : ?
  %v2 = lsnn(%b) {{{lsnn}, probe="v"}} : ?
  %o = add(%v1, %v2) : ?
  output %o
}}
"""
    values = dict(analyse(typed(text)).values)
    assert values[value("v1")] == value("a") and values[value("v2")] == value("v2")
