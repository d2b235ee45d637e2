"""A neuron update written over `masic.ir.arith`, emitted as element-wise IR ops instead of one neuron op.

Some updates cannot be one neuron family: one that adds a second runtime input (snnTorch's RLeaky and RSynaptic add
their recurrent input inside the update, and a sum of three terms rounds differently from its two-term grouping), or
one whose states read each other both ways (snnTorch's Alpha). `emit_update` runs such an update with `IRBackend`,
whose values are IR value names (runtime tensors) or float32 constants: each operation on a runtime value becomes one
element-wise node (`add`, `sub`, `mul`, `scale`, `offset`, `threshold`, `select`), which rounds as the arithmetic
does, so the emitted graph computes the update bit for bit; operations on constants fold in float32. Each state is
a `delay` of its new value (zeros at the first step), so every intermediate value is a temporary of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from masic.frontends.errors import FrontendError
from masic.frontends.graph_builder import GraphBuilder

from masic.ir.arith import Backend, Num
from masic.ir.graph import TensorType


class IRBackend(Backend):
    """Values are IR value names (str) or float32 constants (numpy scalars or per-element arrays); conditions are
    IR values holding 1.0 / 0.0."""

    def __init__(self, b: GraphBuilder, name: str, loc: str, shape: tuple[int, ...]) -> None:
        self.b, self.name, self.loc, self.shape = b, name, loc, shape

    def const(self, value: np.float32) -> np.float32:
        return np.float32(value)

    def node(self, op: str, inputs: tuple[str, ...], attrs: dict[str, Any] | None = None) -> str:
        return self.b.add(f"{self.name}.{op}", op, inputs, attrs or {}, self.loc)

    def param(self, key: str, value: Any) -> Any:
        return self.b.element_param(self.name, key, value, self.shape, self.loc)

    def _fold_or_emit(self, op: str, a: Any, b: Any, fold: Callable[[Any, Any], Any]) -> Any:
        if not isinstance(a, str) and not isinstance(b, str):
            with np.errstate(all="ignore"):  # a non-finite result is refused where a node uses it
                return np.asarray(fold(np.float32(a), np.float32(b)), dtype=np.float32)
        if isinstance(a, str) and isinstance(b, str):
            return self.node(op, (a, b))
        return None

    def add(self, a: Any, b: Any) -> Any:
        done = self._fold_or_emit("add", a, b, np.add)
        if done is not None:
            return done
        x, c = (a, b) if isinstance(a, str) else (b, a)  # x + c == c + x exactly
        return self.node("offset", (x,), {"value": self.param("value", c)})

    def sub(self, a: Any, b: Any) -> Any:
        done = self._fold_or_emit("sub", a, b, np.subtract)
        if done is not None:
            return done
        if isinstance(a, str):  # x - c == x + (-c) exactly
            return self.node("offset", (a,), {"value": self.param("value", -np.float32(b))})
        return self.add(self.neg(b), a)  # c - x == (-x) + c exactly

    def mul(self, a: Any, b: Any) -> Any:
        done = self._fold_or_emit("mul", a, b, np.multiply)
        if done is not None:
            return done
        x, c = (a, b) if isinstance(a, str) else (b, a)  # x * c == c * x exactly
        return self.node("scale", (x,), {"factor": self.param("factor", c)})

    def neg(self, a: Any) -> Any:
        return -np.float32(a) if not isinstance(a, str) else self.node("scale", (a,), {"factor": -1.0})

    def compare(self, op: str, a: Any, b: Any) -> Any:
        """`a > c`: a threshold node (1.0 / 0.0); the updates emitted here compare a value with a constant."""
        if op != ">" or not isinstance(a, str) or isinstance(b, str):
            raise FrontendError(f"{self.loc}: comparison {op} of these operands has no element-wise IR op")
        return self.node("threshold", (a,), {"threshold": self.param("threshold", b)})

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        if not isinstance(a, str) and not isinstance(b, str) and np.all(a == 1.0) and np.all(b == 0.0):
            return cond  # a threshold's output is already 1.0 / 0.0
        raise FrontendError(f"{self.loc}: a selection between values has no element-wise IR op here")

    def _none(self, *operands: Any) -> Any:
        raise FrontendError(f"{self.loc}: this operation has no element-wise IR op")

    minimum = maximum = exp = floor = fma = pow2 = both = either = negate = div = _none


def emit_update(
    b: GraphBuilder,
    name: str,
    loc: str,
    shape: tuple[int, ...],
    states: tuple[str, ...],
    params: dict[str, Any],
    update: Callable[[IRBackend, SimpleNamespace, SimpleNamespace], dict[str, Num]],
) -> dict[str, str]:
    """Emits `update(backend, s, p)` (states as delays named `<name>.<state>`, parameters as constants) and connects
    each delay to its state's new value; returns the IR value of every name the update returned."""
    backend = IRBackend(b, name, loc, shape)
    delays = {state: b.delay(f"{name}.{state}", TensorType(shape), loc) for state in states}
    s = SimpleNamespace(**{state: Num(backend, delay) for state, delay in delays.items()})
    p = SimpleNamespace(**{key: Num(backend, np.asarray(value, dtype=np.float32)) for key, value in params.items()})
    values = {key: _materialise(backend, value.value) for key, value in update(backend, s, p).items()}
    for state, delay in delays.items():
        b.connect_delay(delay, values[state])
    return values


def _materialise(backend: IRBackend, value: Any) -> str:
    """A runtime value for a result that folded to a constant."""
    if isinstance(value, str):
        return value
    attr = backend.param("value", value)
    return backend.b.add(
        f"{backend.name}.constant", "constant", (), {"value": attr}, backend.loc, TensorType(backend.shape)
    )
