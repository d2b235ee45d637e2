"""An update emitted as element-wise IR ops (masic.frontends.arith_ir) computes what the same update computes as a
neuron family: snnTorch's Leaky and Synaptic charges, emitted with their states as delays and run by the
interpreter, equal the snn_leaky / snn_synaptic families step by step, bit for bit, for any inputs, decays,
thresholds and reset mechanisms."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from masic.frontends.arith_ir import IRBackend, emit_update
from masic.frontends.graph_builder import GraphBuilder

from masic.ir import arith
from masic.ir.arith import Num
from masic.ir.framework_neurons import SNNTORCH_RESETS, leaky_charge, snntorch_fires, synaptic_charge
from masic.ir.graph import TensorType
from masic.ir.interpret import run
from masic.ir.neurons import FAMILIES

N, STEPS = 8, 12
values = st.floats(-4, 4, width=32)


def _emitted(family: str, reset: str, params: dict[str, np.float32], x: np.ndarray) -> np.ndarray:
    b = GraphBuilder()
    inp = b.add("input", "input", (), {}, "", TensorType((N,)))

    def update(backend: IRBackend, s: SimpleNamespace, p: SimpleNamespace) -> dict[str, Num]:
        if family == "snn_leaky":
            mem, rest = leaky_charge(Num(backend, inp), None, s, p, reset), {}
        else:
            syn, mem = synaptic_charge(Num(backend, inp), None, s, p, reset)
            rest = {"syn": syn}
        return {"z": snntorch_fires(mem, p.threshold), "mem": mem, **rest}

    states = ("mem",) if family == "snn_leaky" else ("mem", "syn")
    out = emit_update(b, "n", "", (N,), states, params, update)
    return run(b.finish("g", out["z"], STEPS), x)


def _family(family: str, reset: str, params: dict[str, np.float32], x: np.ndarray) -> np.ndarray:
    definition = FAMILIES[family]
    state = {name: arith.numpy(np.zeros(N, np.float32)) for name in definition.state_names}
    outputs = []
    for step in x:
        new = definition.step(
            arith.numpy(step), state, {k: arith.numpy(v) for k, v in params.items()}, {"reset": reset}
        )
        state = {name: new[name] for name in definition.state_names}
        outputs.append(new["z"].value)
    return np.stack(outputs)


@given(
    family=st.sampled_from(["snn_leaky", "snn_synaptic"]),
    reset=st.sampled_from(SNNTORCH_RESETS),
    alpha=st.floats(0, 1, width=32),
    beta=st.floats(0, 1, width=32),
    threshold=st.floats(0.0625, 2, width=32),
    x=arrays(np.float32, (STEPS, N), elements=values),
)
def test_an_emitted_update_equals_its_family(family, reset, alpha, beta, threshold, x) -> None:
    params = {"beta": np.float32(beta), "threshold": np.float32(threshold)}
    if family == "snn_synaptic":
        params["alpha"] = np.float32(alpha)
    np.testing.assert_array_equal(_emitted(family, reset, params, x), _family(family, reset, params, x))
