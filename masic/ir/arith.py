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
bit for bit by construction (tests/codegen/test_arith.py checks every operation), with one exception a family that
uses them must know: `minimum` / `maximum` of a NaN (numpy propagates it; LLVM's need not).

The operations: `+ - * /` and unary `-` on `Num`s (and Python numbers); comparisons `< <= > >=` (and the functions
`equal`, `not_equal`) giving a `Cond`, which combines with `& | ~`; and the functions `select`, `spike`, `minimum`,
`maximum`, `clamp`, `floor`, `fma` (a*b + c rounded once: an explicit fused multiply-add, for the algorithms that
want one, never a contraction of `a * b + c`) and `pow2` (2**k, exact, for a whole number k from -126 to 127).
`exp` is not an operation of the backends: neither numpy's nor LLVM's is correctly rounded, and they differ by up to
2 ulps. It is a function written over the operations above (`exp`, below), so that both backends compute it alike,
bit for bit; it is within 0.54 ulp of e**x (correctly rounded for 99.4% of float32 inputs) and differs from
torch.exp (Norse's) by at most 1 ulp, for about 1.3% of inputs (torch.exp itself misrounds about 1%).
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
    def floor(self, a: Any) -> Any: ...

    @abstractmethod
    def fma(self, a: Any, b: Any, c: Any) -> Any:
        """a*b + c, rounded once."""

    @abstractmethod
    def pow2(self, k: Any) -> Any:
        """2**k, exactly, for a float32 holding a whole number k from -126 to 127 (a normal float32)."""

    def opaque(self, a: Any) -> Any:
        """`a` as computed, which the backend must not rewrite by the algebra of real numbers: TVM's simplifier
        would reduce (1 + r) - 1 to r, and so the rounding error of a compensated sum to 0."""
        return a

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


def floor(a: Num) -> Num:
    return Num(a.backend, a.backend.floor(a.value))


def fma(a: Num | float, b: Num | float, c: Num | float) -> Num:
    """a*b + c rounded once (one of the operands must be a `Num`)."""
    backend = next(v.backend for v in (a, b, c) if isinstance(v, Num))
    a, b, c = (_lift(backend, v) for v in (a, b, c))
    return Num(backend, backend.fma(a.value, b.value, c.value))


def pow2(k: Num) -> Num:
    """2**k, exact, for a whole number k from -126 to 127."""
    return Num(k.backend, k.backend.pow2(k.value))


def opaque(a: Num) -> Num:
    """`a` itself, shielded from algebraic rewriting (`Backend.opaque`): for the sums whose rounding error an
    error-free transformation (TwoSum) then computes."""
    return Num(a.backend, a.backend.opaque(a.value))


# exp: e**x = 2**k * e**r with k = round(x / ln 2) and r = x - k ln 2 (|r| <= ln2 / 2), ln 2 split in a high part
# of 16 bits (k * _LN2_HI is exact for |k| <= 255) and a float32 low part.
_LOG2E = 1.4426950408889634  # 1 / ln 2
_LN2_HI = 0.693145751953125
_LN2_LO = 1.4286068202862268e-06  # ln 2 - _LN2_HI
# (e**r - 1 - r) / r**2 = 1/2! + r/3! + ... + r**6/8!, highest power first (Horner); the next term is below 2**-33
_EXP_SERIES = tuple(1.0 / factorial for factorial in (40320, 5040, 720, 120, 24, 6, 2))
# Inputs beyond these give inf and 0 (e**89 overflows float32, e**-104 rounds to 0); clamping keeps k in range
_EXP_MAX, _EXP_MIN = 89.0, -104.0


def exp(x: Num) -> Num:
    """e**x, within 0.54 ulp (see the module docstring), from the operations of the backends, so that every
    backend computes the same float32 value. A NaN gives a NaN.

    The reduced argument is carried as r + r_lo (r_lo the rounding errors of x - k*ln2, kept exactly with `fma`),
    and e**r = 1 + r + r**2 * P(r) is summed with the error of each rounding kept (Fast2Sum): only the last sum
    rounds in full, which is what makes the result nearly always the correctly rounded one; the scaling by 2**k is
    exact (two factors, so that a result below 2**-126 rounds once, as a subnormal)."""
    x = select(x > _EXP_MAX, _EXP_MAX, select(x < _EXP_MIN, _EXP_MIN, x))
    k = floor(x * _LOG2E + 0.5)
    r_hi = fma(-k, _LN2_HI, x)  # exact
    p_hi = -k * _LN2_LO
    p_lo = fma(-k, _LN2_LO, -p_hi)  # the product's rounding error, exactly
    r = opaque(r_hi + p_hi)
    back = opaque(r - r_hi)
    r_lo = ((r_hi - (r - back)) + (p_hi - back)) + p_lo  # the sum's rounding error (TwoSum), and the product's
    poly: Num | float = _EXP_SERIES[0]
    for coefficient in _EXP_SERIES[1:]:
        poly = fma(poly, r, coefficient)
    r2 = r * r
    r2_lo = fma(r, r, -r2)
    q = r2 * poly
    q_lo = fma(r2, poly, -q)
    one_r = opaque(1.0 + r)  # |1| >= |r|: Fast2Sum's error terms are exact
    sum_hi = opaque(one_r + q)
    tail = ((r - (one_r - 1.0)) + (q - (sum_hi - one_r))) + (q_lo + fma(r2_lo, poly, fma(r_lo, r, r_lo)))
    half = floor(k * 0.5)
    return ((sum_hi + tail) * pow2(half)) * pow2(k - half)


class _Numpy(Backend):
    """numpy float32: values are float32 arrays or scalars, conditions bool arrays. numpy rounds every operation to
    float32 on its own and never fuses them."""

    def const(self, value: np.float32) -> np.float32:
        return np.float32(value)

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    def floor(self, a: Any) -> Any:
        return np.floor(a)

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        """The product of two float32s is exact in float64; the sum, rounded to float64 by rounding to odd (the
        neighbour of odd last bit where the sum is inexact), then rounds to float32 exactly as the exact value
        would: 53 bits are more than 24 + 2."""
        a64, b64, c64 = (np.asarray(v, np.float64) for v in (a, b, c))
        product = a64 * b64
        with np.errstate(invalid="ignore", over="ignore"):
            total = product + c64
            back = total - product
            error = (product - (total - back)) + (c64 - back)  # total's rounding error, exactly (TwoSum)
            even = (np.asarray(total).view(np.int64) & 1) == 0
            odd = np.nextafter(total, np.where(error > 0, np.inf, -np.inf))
            rounded = np.where(np.isfinite(error) & (error != 0) & even, odd, total)
            return rounded.astype(np.float32)

    def pow2(self, k: Any) -> Any:
        with np.errstate(invalid="ignore"):  # a NaN k (exp of a NaN, whose result is NaN whatever this gives)
            return ((np.asarray(k).astype(np.int32) + 127) << 23).view(np.float32)

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
