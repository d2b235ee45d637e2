"""The speed benchmark's own logic (bench/speed), without TVM: the neuron families run in torch exactly as the numpy
backend runs them, and part 3 finds a model's spikes and the plan's bytes from the library's interpreter and
liveness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.speed.spikes import plan_bytes, record_values, spike_values
from bench.speed.torch_arith import compile_update
from masic.analysis.liveness import peak_live
from masic.ir import arith
from masic.ir.neurons import FAMILIES
from masic.ir.text import parse
from masic.passes import PassOptions
from tests.pipelines import planned

CASES = [(family, modes) for family in FAMILIES.values() for modes in family.mode_choices()]


@pytest.mark.parametrize(("family", "modes"), CASES, ids=[f"{f.op}-{'-'.join(m.values())}" for f, m in CASES])
def test_a_family_runs_in_torch_bit_for_bit_as_in_numpy(family, modes) -> None:
    rng = np.random.default_rng(0)

    def draw() -> np.ndarray:  # values near 0 and 1, so that thresholds at 1.0 are crossed both ways
        return rng.normal(0.5, 0.7, 512).astype(np.float32)

    x, states, params = draw(), {s: draw() for s in family.state_names}, {p: draw() for p in family.params}
    expected = family.step(
        arith.numpy(x),
        {k: arith.numpy(v) for k, v in states.items()},
        {k: arith.numpy(v) for k, v in params.items()},
        modes,
    )
    tensors = {k: torch.from_numpy(v) for k, v in (states | params).items()}
    got = compile_update(family, modes)(torch.from_numpy(x), tensors, tensors)
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert np.array_equal(got[name].numpy().view(np.uint32), np.asarray(value.value).view(np.uint32)), name


# A spiking layer whose spikes a relu passes on (0/1 values the spike-dtype pass does not type as spikes), read by a
# dense layer
RELU_OF_SPIKES = """graph @r timesteps=4 {
  param @d0.w : f32[8,6]
  param @d1.w : f32[3,8]
  %in = input() : f32[6]
  %d0 = dense(%in) {weight=@d0.w, in_features=6, out_features=8} : ?
  %z = iaf(%d0) {v_th=0.5, v_reset=0.0} : ?
  %r = relu(%z) : ?
  %d1 = dense(%r) {weight=@d1.w, in_features=8, out_features=3} : ?
  output %d1
}"""


def test_spikes_are_the_typed_ones_and_the_zero_one_values_of_element_wise_ops() -> None:
    graph = planned(parse(RELU_OF_SPIKES), PassOptions(alignment=16))
    values = record_values(graph, np.full(6, 2.0, dtype=np.float32))
    assert {name: array.shape[0] for name, array in values.items()} == dict.fromkeys(("in", "d0", "z", "r", "d1"), 4)
    assert spike_values(graph, values) == {"z", "r"}
    assert graph.node("r").type.dtype == "f32"  # found by its values, not its type


def test_the_peak_is_the_plans_own_activation_buffers() -> None:
    graph = planned(parse(RELU_OF_SPIKES), PassOptions(alignment=16))
    activations = [b for b in graph.plan.buffers if b.kind == "activation"]
    figures = plan_bytes(graph)
    assert figures["peak_live"] == peak_live(activations, 1)[0] > 0
    assert figures["activation"] == sum(b.size for b in activations)
