"""The float32 arithmetic that neuron updates and element-wise functions are written in, once, for every backend.

A neuron family's update (`masic.ir.neurons`) and an element-wise function (`masic.ir.elementwise`) are Python
functions over `Num` values. Each operator on a `Num` is one IEEE-754 float32 operation, rounded once, performed in
exactly the order written: `a + b * c` is a product rounded to float32, then a sum rounded to float32, never a fused
multiply-add (which rounds once and can differ by an ulp, enough to flip a spike of a neuron at threshold). Python
numbers mixed in are rounded to float32 first (`np.float32(value)`), as the frontends fold constants.

A `Backend` carries the operations out:
- `NUMPY` (below): numpy float32 arrays or scalars; the reference interpreter (`masic.ir.interpret`) and with it the
  calibration model run it;
- the TIR backend (`masic.codegen.tir.arith`): TVM expressions that the kernels store, the products fenced so that
  LLVM cannot contract them.
Both perform the same correctly rounded operations on the same operands, so the interpreter and the kernels agree
bit for bit by construction (tests/codegen/test_arith.py checks every operation), with two exceptions a family that
uses them must know: `exp`, which neither numpy nor LLVM rounds correctly (they differ by up to 2 ulps; a family
that needs it bit-exact should compute it from the other operations, the same in both backends), and `minimum` /
`maximum` of a NaN (numpy propagates it; LLVM's need not).

The operations: `+ - * /` and unary `-` on `Num`s (and Python numbers); comparisons `< <= > >=` (and the functions
`equal`, `not_equal`) giving a `Cond`, which combines with `& | ~`; and the functions `select`, `spike`, `minimum`,
`maximum`, `clamp`, `exp`, `floor`.
Integer-valued results (a multi-spike neuron's spike count, `floor(v / v_th)`) are float32 values holding integers,
as the frameworks compute them; a kernel converts each output to its storage type as it stores it (a spike, 1.0 or
0.0, to a byte or a bit).
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

# The comparisons, by the Python operator that performs them on a backend's values
COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class Backend(ABC):
    """One implementation of the arithmetic. Its values are whatever it computes with (arrays, expressions); a
    `Num` wraps one. Every floating-point operation must round once to float32 and must not be fused with
    another. The arithmetic and comparisons default to Python's operators on the values, which both numpy arrays
    and TVM expressions implement as one such operation."""

    @abstractmethod
    def const(self, value: np.float32) -> Any:
        """A float32 constant."""

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def sub(self, a: Any, b: Any) -> Any:
        return a - b

    def mul(self, a: Any, b: Any) -> Any:
        """The product rounded to float32 on its own, never contracted with a neighbouring add into an FMA."""
        return a * b

    def div(self, a: Any, b: Any) -> Any:
        return a / b

    def neg(self, a: Any) -> Any:
        """-a exactly (the sign flipped, also of 0 and NaN)."""
        return -a

    def compare(self, op: str, a: Any, b: Any) -> Any:
        """A condition: `op` is a key of COMPARISONS."""
        return COMPARISONS[op](a, b)

    @abstractmethod
    def minimum(self, a: Any, b: Any) -> Any: ...

    @abstractmethod
    def maximum(self, a: Any, b: Any) -> Any: ...

    @abstractmethod
    def exp(self, a: Any) -> Any: ...

    @abstractmethod
    def floor(self, a: Any) -> Any: ...

    @abstractmethod
    def both(self, a: Any, b: Any) -> Any:
        """Logical and of two conditions."""

    @abstractmethod
    def either(self, a: Any, b: Any) -> Any:
        """Logical or of two conditions."""

    @abstractmethod
    def negate(self, a: Any) -> Any:
        """Logical not of a condition."""

    @abstractmethod
    def select(self, cond: Any, a: Any, b: Any) -> Any:
        """`a` where `cond` holds, else `b` (both evaluated)."""


def _lift(backend: Backend, value: Num | float) -> Num:
    """`value` as a `Num` of `backend`: a Python number becomes a float32 constant."""
    if not isinstance(value, Num):
        return Num(backend, backend.const(np.float32(value)))
    if value.backend is not backend:
        raise TypeError("operands of two backends")
    return value


@dataclass(frozen=True, eq=False)
class Num:
    """A float32 value of a backend. Operators perform one rounded float32 operation each (module docstring)."""

    backend: Backend
    value: Any

    def _binary(self, op: str, a: Num | float, b: Num | float) -> Num:
        a, b = _lift(self.backend, a), _lift(self.backend, b)
        return Num(self.backend, getattr(self.backend, op)(a.value, b.value))

    def __add__(self, other: Num | float) -> Num:
        return self._binary("add", self, other)

    def __radd__(self, other: float) -> Num:
        return self._binary("add", other, self)

    def __sub__(self, other: Num | float) -> Num:
        return self._binary("sub", self, other)

    def __rsub__(self, other: float) -> Num:
        return self._binary("sub", other, self)

    def __mul__(self, other: Num | float) -> Num:
        return self._binary("mul", self, other)

    def __rmul__(self, other: float) -> Num:
        return self._binary("mul", other, self)

    def __truediv__(self, other: Num | float) -> Num:
        return self._binary("div", self, other)

    def __rtruediv__(self, other: float) -> Num:
        return self._binary("div", other, self)

    def __neg__(self) -> Num:
        return Num(self.backend, self.backend.neg(self.value))

    def _compare(self, op: str, other: Num | float) -> Cond:
        return Cond(self.backend, self.backend.compare(op, self.value, _lift(self.backend, other).value))

    def __lt__(self, other: Num | float) -> Cond:
        return self._compare("<", other)

    def __le__(self, other: Num | float) -> Cond:
        return self._compare("<=", other)

    def __gt__(self, other: Num | float) -> Cond:
        return self._compare(">", other)

    def __ge__(self, other: Num | float) -> Cond:
        return self._compare(">=", other)


@dataclass(frozen=True, eq=False)
class Cond:
    """A condition of a backend (from a comparison of `Num`s); `&`, `|` and `~` combine conditions."""

    backend: Backend
    value: Any

    def __and__(self, other: Cond) -> Cond:
        return Cond(self.backend, self.backend.both(self.value, other.value))

    def __or__(self, other: Cond) -> Cond:
        return Cond(self.backend, self.backend.either(self.value, other.value))

    def __invert__(self) -> Cond:
        return Cond(self.backend, self.backend.negate(self.value))


def equal(a: Num, b: Num | float) -> Cond:
    """a == b (a function, not an operator, so that `Num`s keep Python's identity equality)."""
    return a._compare("==", b)


def not_equal(a: Num, b: Num | float) -> Cond:
    """a != b, true for a NaN."""
    return a._compare("!=", b)


def select(cond: Cond, a: Num | float, b: Num | float) -> Num:
    """`a` where `cond` holds, else `b`."""
    a, b = _lift(cond.backend, a), _lift(cond.backend, b)
    return Num(cond.backend, cond.backend.select(cond.value, a.value, b.value))


def spike(cond: Cond) -> Num:
    """1.0 where `cond` holds, else 0.0: a spike as a float."""
    return select(cond, 1.0, 0.0)


def minimum(a: Num, b: Num | float) -> Num:
    return a._binary("minimum", a, b)


def maximum(a: Num, b: Num | float) -> Num:
    return a._binary("maximum", a, b)


def clamp(a: Num, lo: Num | float, hi: Num | float) -> Num:
    """`a` limited to [lo, hi]: minimum(maximum(a, lo), hi)."""
    return minimum(maximum(a, lo), hi)


def exp(a: Num) -> Num:
    """e**a (not correctly rounded by every backend: see the module docstring)."""
    return Num(a.backend, a.backend.exp(a.value))


def floor(a: Num) -> Num:
    return Num(a.backend, a.backend.floor(a.value))


class _Numpy(Backend):
    """numpy float32: values are float32 arrays or scalars, conditions bool arrays. numpy rounds every operation to
    float32 on its own and never fuses them."""

    def const(self, value: np.float32) -> np.float32:
        return np.float32(value)

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    def exp(self, a: Any) -> Any:
        return np.exp(a)

    def floor(self, a: Any) -> Any:
        return np.floor(a)

    def both(self, a: Any, b: Any) -> Any:
        return np.logical_and(a, b)

    def either(self, a: Any, b: Any) -> Any:
        return np.logical_or(a, b)

    def negate(self, a: Any) -> Any:
        return np.logical_not(a)

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)


NUMPY = _Numpy()


def numpy(value: np.ndarray | np.floating | float) -> Num:
    """An array or number as a `Num` of the numpy backend, in float32 (spikes, 0 / 1 bytes, convert exactly)."""
    if isinstance(value, np.ndarray):
        return Num(NUMPY, value if value.dtype == np.float32 else value.astype(np.float32))
    return Num(NUMPY, np.float32(value))
