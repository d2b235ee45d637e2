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
old states: so no value may read a state listed before it (checked when a family is defined).

How to add a neuron family: write its update below with `@family(op, params=..., states=..., modes=...)` and the
equations in its docstring (one float32 operation per operator, in the source framework's order; `arith` has exp,
floor, minimum / maximum / clamp, division and comparisons), then map the framework's module or NIR node to the op
in its frontend, folding the parameters as the framework does. The op table, interpreter, lowering and kernels need
no change. Test the family against the framework's own step (tests/frontends) and the kernels against the
interpreter (tests/codegen/test_kernels.py lists cases by family).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import product
from types import MappingProxyType, SimpleNamespace
from typing import Any

import numpy as np

from masic.ir.arith import Backend, Num, select, spike

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

    exp = floor = negate = neg

    def compare(self, op: str, a: Any, b: Any) -> Any:
        return self._union(a, b)

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        return self._union(cond, a, b)


def _check_store_order(definition: NeuronFamily) -> None:
    """Raises unless every stored value reads only states stored after it (or itself): the kernels store the
    output, then each state in place, in order."""
    reads = _Reads()
    for modes in definition.mode_choices():
        state = {name: Num(reads, frozenset({name})) for name in definition.state_names}
        params = {name: Num(reads, frozenset()) for name in definition.params}
        stored: set[str] = set()
        for name, value in definition.step(Num(reads, frozenset()), state, params, modes).items():
            if clobbered := (value.value & stored) - {name}:
                raise ValueError(
                    f"{definition.op}: the update of {name} reads {sorted(clobbered)}, stored before it in place;"
                    " list the states so that none reads a state listed before it"
                )
            stored.add(name)


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
        definition = NeuronFamily(op, params, states, update, update.__doc__ or "", spiking, modes)
        _check_store_order(definition)
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


# The families of snnTorch, SpikingJelly and Sinabs live in their own module (this one stays the home of the rules
# and Norse's families); importing it here registers them wherever the op table is built.
import masic.ir.framework_neurons  # noqa: E402, F401
