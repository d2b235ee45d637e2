"""Neuron families (masic.ir.neurons): the op table reads them, the store order is checked, and a family needing
more than today's (multi-spike counts, exp, division) is written in the same few lines."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from masic.ir import arith
from masic.ir.arith import Num
from masic.ir.graph import Node, TensorType
from masic.ir.neurons import FAMILIES, NeuronFamily, _temporaries
from masic.ir.ops import OPS, neuron_op
from masic.ir.reference import Step


@pytest.mark.parametrize("op", FAMILIES)
def test_the_op_table_takes_each_neuron_op_from_its_family(op: str) -> None:
    definition, neuron = FAMILIES[op], neuron_op(op)
    assert neuron is OPS[op]
    assert neuron.required == definition.params + definition.mode_names
    assert (neuron.states, neuron.spiking, neuron.doc) == (definition.states, definition.spiking, definition.doc)
    assert "probe" in neuron.optional  # any neuron may output a state instead (a count neuron's membrane)
    assert neuron.layout_carrier and neuron.family is definition


def test_modes_choose_a_variant_and_are_checked() -> None:
    """lif_box resets by value or by subtraction; the interpreter passes the node's mode."""
    x = np.array([20.0, 0.0], np.float32)
    params = {"dt_tau_mem": np.float32(0.1), "v_leak": np.float32(0.0), "v_th": np.float32(1.0)}
    params["v_reset"] = np.float32(-0.5)
    after = {}
    for reset in ("value", "subtract"):
        node = Node("n", "lif_box", attrs=(("reset", reset),), type=TensorType((2,)))
        state = {"v": np.array([0.5, 0.5], np.float32)}
        assert list(OPS["lif_box"].interpret(node, Step([x], params.__getitem__, state, x))) == [1.0, 0.0]
        after[reset] = state["v"][0]
    v1 = np.float32(0.5) + np.float32(0.1) * ((np.float32(20.0) + np.float32(0.0)) - np.float32(0.5))
    assert (after["value"], after["subtract"]) == (np.float32(-0.5), v1 - np.float32(1.0))
    with pytest.raises(ValueError, match="reset must be one of"):
        FAMILIES["lif_box"].step(arith.numpy(x), {"v": arith.numpy(x)}, {}, {"reset": "zero"})


def test_states_read_after_they_are_stored_get_temporaries() -> None:
    """Kernels store the output, then each state in place in the order listed: a state that a later value reads
    (LSNN's v and i, which b's update reads through the spike) is copied into a temporary first; the families that
    read no state after storing it need none (their kernels are as before)."""

    def update(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
        return {"z": arith.spike(s.v > p.a), "v": s.v + x, "i": s.i + s.v}

    assert _temporaries(NeuronFamily("order", ("a",), (("v", None), ("i", None)), update, "")) == ("v",)
    assert FAMILIES["lsnn"].temporaries == ("v", "i")  # theta's update reads them, through the spike
    assert [op for op, f in FAMILIES.items() if not f.temporaries][:5] == ["lif", "lif_box", "li", "li_box", "iaf"]


def _sinabs_like(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Multi-spike integrate-and-fire (Sinabs IAF, MultiSpike): v1 = v + x;  z = min(floor(v1 / v_th), max_spikes)
    where v1 >= v_th, else 0;  v' = v1 - z * v_th;  output z (a count: not spiking, a float32 value)"""
    v1 = s.v + x
    z = arith.select(v1 >= p.v_th, arith.minimum(arith.floor(v1 / p.v_th), p.max_spikes), 0.0)
    return {"out": z, "v": v1 - z * p.v_th}


def _exp_leak(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Exponential integrate-and-fire (Norse LIFEx style): v1 = v + dt_tau_mem*((v_leak - v + delta_t*exp((v -
    v_th)/delta_t)) + x);  z = (v1 - v_th) > 0;  v' = z ? v_reset : v1"""
    drive = p.v_leak - s.v + p.delta_t * arith.exp((s.v - p.v_th) / p.delta_t)
    v1 = s.v + p.dt_tau_mem * (drive + x)
    fired = (v1 - p.v_th) > 0.0
    return {"z": arith.spike(fired), "v": arith.select(fired, p.v_reset, v1)}


def test_new_families_are_one_definition_each() -> None:
    """The interface writes a multi-spike count (floor, division, minimum) and an exponential term, run by numpy
    as a plain float32 reference computes them."""
    sinabs = NeuronFamily(
        "multi_iaf", ("v_th", "max_spikes"), (("v", None),), _sinabs_like, _sinabs_like.__doc__, spiking=False
    )
    x = np.array([0.2, 1.1, 2.5, 9.0], np.float32)
    v = np.array([0.5, 0.0, 0.4, 0.0], np.float32)
    params = {"v_th": arith.numpy(1.0), "max_spikes": arith.numpy(3.0)}
    new = sinabs.step(arith.numpy(x), {"v": arith.numpy(v)}, params, {})
    assert new["out"].value.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert new["v"].value.tolist() == (x + v - new["out"].value).tolist()

    ex = NeuronFamily(
        "ex", ("dt_tau_mem", "v_leak", "v_th", "v_reset", "delta_t"), (("v", "v_leak"),), _exp_leak, _exp_leak.__doc__
    )
    f32 = np.float32
    values = {"dt_tau_mem": f32(0.1), "v_leak": f32(0.0), "v_th": f32(1.0), "v_reset": f32(0.0), "delta_t": f32(0.5)}
    x, v = np.array([0.3, 8.0], np.float32), np.array([0.2, 0.9], np.float32)
    got = ex.step(arith.numpy(x), {"v": arith.numpy(v)}, {k: arith.numpy(a) for k, a in values.items()}, {})
    drive = f32(0.0) - v + f32(0.5) * np.exp((v - f32(1.0)) / f32(0.5))
    v1 = v + f32(0.1) * (drive + x)
    assert got["v"].value.tolist() == np.where(v1 - f32(1.0) > 0, f32(0.0), v1).tolist()
    assert got["z"].value.tolist() == [0.0, 1.0]
