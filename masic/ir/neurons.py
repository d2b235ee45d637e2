"""Neuron families: each one's equations, parameters, state and update, written once.

A family is one `NeuronFamily`, made by decorating its update function with `@family(...)`, in the style of NIR's
node definitions: the function's docstring states the discrete-time equations, the decorator lists the parameters
(attributes of the IR node: a float, or a `ParamRef` to one value per neuron) and the states with the parameter
giving each one's initial value (None: zero), and the body is the update, written over `masic.ir.arith` values: one
float32 operation per operator, rounded once, in exactly the order written (the source framework's order, so that
the results match it bit for bit). Coefficients are folded at import time in float32, as Norse computes them:
`dt_tau_mem = dt * tau_mem_inv`, `neg_dt_tau_syn = -dt * tau_syn_inv`.

Everything else reads the family from here: the op table (`masic.ir.ops` makes one `NeuronOp` per family: its
attributes, states, output type and documentation), the reference interpreter (the update run by numpy), the
kernel descriptions (argument names) and the kernels (the update run as TIR, in the neuron kernel, the kernel that
packs spikes into bits and the neuron epilogues of conv and dense kernels). The interpreter and the kernels thus
agree bit for bit by construction.

An update takes (x, s, p, mode): the input `x` (the synaptic input of this step), the old states `s` and the
parameters `p` (namespaces of `Num`s: `s.v`, `p.v_th`), and the family's modes (`mode.reset`: strings choosing a
variant, such as the reset by value or by subtraction, each an IR attribute with a fixed set of values). It returns
the new values as a dict: first the output, then every state in the order listed. A spiking family's output is its
spikes `z`, 1.0 or 0.0 (`arith.spike`), which the passes store as bytes or bits and the accumulate-only dense kernel
reads as 0 / 1; a non-spiking family outputs a float32 value `out`. So a multi-spike family, whose output is a count
(a float32 holding an integer, e.g. `arith.floor(v / v_th)`), is declared `spiking=False` until the IR has a type
for counts. A spiking neuron's `probe` attribute names a state to output instead of the spikes.

The kernels store the new values in that order, each state in place over the old, computing each value from the
old states. Where a value reads a state stored before it (LSNN's membrane and adaptive threshold read each other,
so no order works), the kernels first copy that state's old value into a temporary, a register: the family's
`temporaries`, found by tracing the update when the family is defined. Families that need none compile as before.

How to add a neuron family: write its update below with `@family(op, params=..., states=..., modes=...)` and the
equations in its docstring (one float32 operation per operator, in the source framework's order; `arith` has exp,
floor, minimum / maximum / clamp, division and comparisons), then map the framework's module or NIR node to the op
in its frontend, folding the parameters as the framework does. The op table, interpreter, lowering and kernels need
no change. Test the family against the framework's own step (tests/frontends) and the kernels against the
interpreter (tests/codegen/test_kernels.py lists cases by family).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from itertools import product
from types import MappingProxyType, SimpleNamespace
from typing import Any

import numpy as np

from masic.ir.arith import Backend, Num, exp, maximum, select, spike

Update = Callable[[Num, SimpleNamespace, SimpleNamespace, SimpleNamespace], dict[str, Num]]


@dataclass(frozen=True)
class NeuronFamily:
    """One neuron family (module docstring): the IR op `op`, its `params`, its `states` as (name, parameter giving
    the initial value or None for zero), its `modes` as (attribute, allowed values), and its `update`. `doc` holds
    the equations."""

    op: str
    params: tuple[str, ...]
    states: tuple[tuple[str, str | None], ...]
    update: Update
    doc: str
    spiking: bool = True
    modes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    temporaries: tuple[str, ...] = ()  # states whose old value a value stored after them reads (`_temporaries`)

    @property
    def output(self) -> str:
        """The output's name (a kernel argument): "z" for spikes, "out" for a value."""
        return "z" if self.spiking else "out"

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.states)

    @property
    def mode_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.modes)

    def step(
        self, x: Num, state: Mapping[str, Num], params: Mapping[str, Num], modes: Mapping[str, str]
    ) -> dict[str, Num]:
        """One update: the output, then each new state, in the order the kernels store them."""
        for name, allowed in self.modes:
            if modes[name] not in allowed:
                raise ValueError(f"{self.op}: {name} must be one of {allowed}, got {modes[name]!r}")
        new = self.update(x, SimpleNamespace(**state), SimpleNamespace(**params), SimpleNamespace(**modes))
        if tuple(new) != (self.output, *self.state_names):
            raise ValueError(f"{self.op}: the update returned {tuple(new)}, not {(self.output, *self.state_names)}")
        return new

    def mode_choices(self) -> list[dict[str, str]]:
        """Every combination of mode values."""
        return [dict(zip(self.mode_names, values, strict=True)) for values in product(*(v for _, v in self.modes))]


class _Reads(Backend):
    """The states a value reads, as a frozenset of names: the update traced to check the order of the stores."""

    def const(self, value: np.float32) -> frozenset[str]:
        return frozenset()

    def _union(self, *operands: frozenset[str]) -> frozenset[str]:
        return frozenset().union(*operands)

    def add(self, a: Any, b: Any) -> Any:
        return self._union(a, b)

    sub = mul = div = minimum = maximum = both = either = add

    def neg(self, a: Any) -> Any:
        return a

    floor = pow2 = opaque = negate = neg

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        return self._union(a, b, c)

    def compare(self, op: str, a: Any, b: Any) -> Any:
        return self._union(a, b)

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        return self._union(cond, a, b)


def _temporaries(definition: NeuronFamily) -> tuple[str, ...]:
    """The states (in the order listed) that some value reads after they are stored, in any mode: the kernels
    store the output, then each state in place, in order, so these must be read into temporaries first."""
    reads = _Reads()
    clobbered: set[str] = set()
    for modes in definition.mode_choices():
        state = {name: Num(reads, frozenset({name})) for name in definition.state_names}
        params = {name: Num(reads, frozenset()) for name in definition.params}
        stored: set[str] = set()
        for name, value in definition.step(Num(reads, frozenset()), state, params, modes).items():
            clobbered |= (value.value & stored) - {name}
            stored.add(name)
    return tuple(name for name in definition.state_names if name in clobbered)


# The arguments of the conv and dense kernels a neuron runs in as an epilogue, besides the neuron's own (its
# states and per-neuron parameters, by name): a family's names must differ from them.
KERNEL_ARGUMENTS = ("x", "w", "b", "y", "z", "out", "scratch")

_FAMILIES: dict[str, NeuronFamily] = {}
FAMILIES: Mapping[str, NeuronFamily] = MappingProxyType(_FAMILIES)  # op -> family, in definition order


def family(
    op: str,
    params: tuple[str, ...],
    states: tuple[tuple[str, str | None], ...],
    spiking: bool = True,
    modes: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> Callable[[Update], NeuronFamily]:
    """Defines the neuron family `op` with the decorated update (module docstring)."""

    def define(update: Update) -> NeuronFamily:
        if op in _FAMILIES:
            raise ValueError(f"neuron family {op!r} defined twice")
        unknown = {init for _, init in states if init is not None} - set(params)
        if unknown:
            raise ValueError(f"{op}: initial values from unknown parameters {sorted(unknown)}")
        if taken := {name for name, _ in states}.union(params) & set(KERNEL_ARGUMENTS):
            raise ValueError(f"{op}: {sorted(taken)} would name a kernel argument of the layer a neuron fuses into")
        definition = NeuronFamily(op, params, states, update, update.__doc__ or "", spiking, modes)
        definition = replace(definition, temporaries=_temporaries(definition))
        _FAMILIES[op] = definition
        return definition

    return define


def _fire(v1: Num, p: SimpleNamespace, reset: str = "value") -> tuple[Num, Num]:
    """Heaviside spikes of the membrane `v1` at threshold, z = (v1 - v_th) > 0 as 1.0 / 0.0 (Norse's order), and
    the membrane after the reset: to v_reset ("value") or lowered by v_th ("subtract") where z fires."""
    fired = (v1 - p.v_th) > 0.0
    after = p.v_reset if reset == "value" else v1 - p.v_th
    return spike(fired), select(fired, after, v1)


@family(
    "lif",
    params=("dt_tau_mem", "neg_dt_tau_syn", "v_leak", "v_th", "v_reset"),
    states=(("v", "v_leak"), ("i", None)),
)
def LIF(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Leaky integrate-and-fire with a current synapse (Norse LIFCell).
    i1 = i + x;  v1 = v + dt_tau_mem*((v_leak - v) + i1);  i' = i1 + neg_dt_tau_syn*i1
    z = (v1 - v_th) > 0;  v' = z ? v_reset : v1;  output z"""
    i1 = s.i + x
    z, v = _fire(s.v + p.dt_tau_mem * ((p.v_leak - s.v) + i1), p)
    return {"z": z, "v": v, "i": i1 + p.neg_dt_tau_syn * i1}


@family(
    "lif_box",
    params=("dt_tau_mem", "v_leak", "v_th", "v_reset"),
    states=(("v", "v_leak"),),
    modes=(("reset", ("value", "subtract")),),
)
def LIF_BOX(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Leaky integrate-and-fire without synapse (Norse LIFBoxCell).
    v1 = v + dt_tau_mem*((x + v_leak) - v);  z = (v1 - v_th) > 0
    v' = z ? v_reset : v1  (reset="value")   or   v' = z ? v1 - v_th : v1  (reset="subtract")"""
    z, v = _fire(s.v + p.dt_tau_mem * ((x + p.v_leak) - s.v), p, mode.reset)
    return {"z": z, "v": v}


@family(
    "li",
    params=("dt_tau_mem", "neg_dt_tau_syn", "v_leak"),
    states=(("v", "v_leak"), ("i", None)),
    spiking=False,
)
def LI(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Leaky integrator with a current synapse (Norse LICell).
    i1 = i + x;  v' = v + dt_tau_mem*((v_leak - v) + i1);  i' = i1 + neg_dt_tau_syn*i1;  output v'"""
    i1 = s.i + x
    v = s.v + p.dt_tau_mem * ((p.v_leak - s.v) + i1)
    return {"out": v, "v": v, "i": i1 + p.neg_dt_tau_syn * i1}


@family("li_box", params=("dt_tau_mem", "v_leak"), states=(("v", "v_leak"),), spiking=False)
def LI_BOX(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Leaky integrator without synapse (Norse LIBoxCell).
    v' = v + dt_tau_mem*((v_leak - v) + x);  output v'"""
    v = s.v + p.dt_tau_mem * ((p.v_leak - s.v) + x)
    return {"out": v, "v": v}


@family("iaf", params=("v_th", "v_reset"), states=(("v", "v_reset"),))
def IAF(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Integrate-and-fire (Norse IAFCell).
    v1 = v + x;  z = (v1 - v_th) > 0;  v' = z ? v_reset : v1;  output z"""
    z, v = _fire(s.v + x, p)
    return {"z": z, "v": v}


# Norse's other cells. Each update follows its Norse step function's float32 operations in order (the functional
# code in norse/torch/functional); Norse's `(1 - z) * a + z * b` is `z ? b : a` (equal for finite values).


@family(
    "lsnn",
    params=("dt_tau_mem", "neg_dt_tau_syn", "dt_tau_adapt", "v_leak", "v_th", "v_reset", "beta"),
    states=(("v", "v_leak"), ("i", None), ("theta", "v_th")),
)
def LSNN(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Leaky integrate-and-fire with an adaptive threshold theta (Norse's b: LSNNCell, LSNNRecurrentCell).
    v1 = v + dt_tau_mem*((v_leak - v) + i);  i1 = i + neg_dt_tau_syn*i;  theta1 = theta + dt_tau_adapt*(v_th - theta)
    z = (v1 - theta1) > 0;  v' = z ? v_reset : v1;  theta' = theta1 + z*beta;  i' = i1 + x;  output z
    (the current jumps after the membrane has integrated it: the input reaches v one step later)"""
    v1 = s.v + p.dt_tau_mem * ((p.v_leak - s.v) + s.i)
    theta1 = s.theta + p.dt_tau_adapt * (p.v_th - s.theta)
    fired = (v1 - theta1) > 0.0
    z = spike(fired)
    i = (s.i + p.neg_dt_tau_syn * s.i) + x
    return {"z": z, "v": select(fired, p.v_reset, v1), "i": i, "theta": theta1 + z * p.beta}


def _exp_drive(s: SimpleNamespace, p: SimpleNamespace) -> Num:
    """(v_leak - v) + delta_T*exp((v - v_th)/delta_T), the leak and exponential terms of LIFEx and LIFAdEx."""
    return (p.v_leak - s.v) + p.delta_T * exp((s.v - p.v_th) / p.delta_T)


@family(
    "lif_ex",
    params=("dt_tau_mem", "neg_dt_tau_syn", "delta_T", "v_leak", "v_th", "v_reset"),
    states=(("v", "v_leak"), ("i", None)),
)
def LIF_EX(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Exponential integrate-and-fire with a current synapse (Norse LIFExCell, LIFExRecurrentCell).
    i1 = i + x;  v1 = v + dt_tau_mem*(((v_leak - v) + delta_T*exp((v - v_th)/delta_T)) + i1)
    i' = i1 + neg_dt_tau_syn*i1;  z = (v1 - v_th) > 0;  v' = z ? v_reset : v1;  output z
    (exp: `masic.ir.arith.exp`, within 1 ulp of torch.exp)"""
    i1 = s.i + x
    z, v = _fire(s.v + p.dt_tau_mem * (_exp_drive(s, p) + i1), p)
    return {"z": z, "v": v, "i": i1 + p.neg_dt_tau_syn * i1}


@family(
    "lif_adex",
    params=(
        "dt_tau_mem",
        "neg_dt_tau_syn",
        "dt_tau_ada",
        "delta_T",
        "v_leak",
        "v_th",
        "v_reset",
        "adaptation_current",
        "adaptation_spike",
    ),
    states=(("v", "v_leak"), ("i", None), ("a", None)),
)
def LIF_ADEX(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Adaptive exponential integrate-and-fire (Norse LIFAdExCell, LIFAdExRecurrentCell).
    i1 = i + x;  v1 = v + dt_tau_mem*((((v_leak - v) + delta_T*exp((v - v_th)/delta_T)) + i1) - a)
    i' = i1 + neg_dt_tau_syn*i1;  a1 = a + dt_tau_ada*(adaptation_current*(v - v_leak) - a)
    z = (v1 - v_th) > 0;  v' = z ? v_reset : v1;  a' = a1 + z*adaptation_spike;  output z"""
    i1 = s.i + x
    z, v = _fire(s.v + p.dt_tau_mem * ((_exp_drive(s, p) + i1) - s.a), p)
    a1 = s.a + p.dt_tau_ada * (p.adaptation_current * (s.v - p.v_leak) - s.a)
    return {"z": z, "v": v, "i": i1 + p.neg_dt_tau_syn * i1, "a": a1 + z * p.adaptation_spike}


@family(
    "lif_refrac",
    params=("dt_tau_mem", "neg_dt_tau_syn", "v_leak", "v_th", "v_reset", "rho_reset"),
    states=(("v", "v_leak"), ("i", None), ("rho", None)),
)
def LIF_REFRAC(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """LIF with a refractory period of rho_reset steps (Norse LIFRefracCell, LIFRefracRecurrentCell): the LIF
    update (z_lif, v_lif, i' as "lif"), then, while the refractory count rho is positive, no spike and v held:
    r = rho > 0;  v' = r ? v : v_lif;  z = r ? 0 : z_lif;  rho' = z ? rho_reset : max(rho - r, 0);  output z"""
    lif = LIF.update(x, s, p, mode)
    refractory = s.rho > 0.0
    z = select(refractory, 0.0, lif["z"])
    rho = select(z > 0.0, p.rho_reset, maximum(s.rho - spike(refractory), 0.0))
    return {"z": z, "v": select(refractory, s.v, lif["v"]), "i": lif["i"], "rho": rho}


@family(
    "izhikevich",
    params=("dt_tau", "sq", "mn", "bias", "dt_tau_a", "u_gain", "v_th", "v_reset", "u_jump", "v_rest", "u_rest"),
    states=(("v", "v_rest"), ("u", "u_rest")),
)
def IZHIKEVICH(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Izhikevich's model (Norse IzhikevichCell, IzhikevichRecurrentCell; Norse's b, c, d are u_gain, v_reset,
    u_jump), dt_tau = tau_inv*dt and dt_tau_a = tau_inv*dt*a folded as Norse's Python floats are (in double, then
    rounded once).
    v1 = v + dt_tau*((((sq*(v*v) + mn*v) + bias) - u) + x);  u1 = u + dt_tau_a*(u_gain*v - u)
    z = (v1 - v_th) > 0;  v' = z ? v_reset : v1;  u' = z ? u1 + u_jump : u1;  output z"""
    v1 = s.v + p.dt_tau * ((((p.sq * (s.v * s.v) + p.mn * s.v) + p.bias) - s.u) + x)
    u1 = s.u + p.dt_tau_a * (p.u_gain * s.v - s.u)
    fired = (v1 - p.v_th) > 0.0
    return {"z": spike(fired), "v": select(fired, p.v_reset, v1), "u": select(fired, u1 + p.u_jump, u1)}


# The families of snnTorch, SpikingJelly and Sinabs live in their own module (this one stays the home of the rules
# and Norse's families); importing it here registers them wherever the op table is built.
import masic.ir.framework_neurons  # noqa: E402, F401
