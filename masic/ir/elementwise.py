"""Element-wise functions, written once over `masic.ir.arith`; an op that computes one names it in the op table
(`OpDef.function`, `masic.ir.ops`).

Each function computes one output element from its operands' elements (and a parameter `p`, a float or one value
per element) with PyTorch's float32 rounding, one rounding per operation. The reference interpreter runs them with
numpy, the element-wise kernels (`masic.codegen.tir.elementwise`) as TIR, so the two agree bit for bit (`exp`
within 2 ulps, see `masic.ir.arith`). Each repeats PyTorch's float32 operation exactly, except `exp` and `sigmoid`
(`1 / (1 + exp(-x))`), which PyTorch computes with its own vectorised exponential: within a few ulps of it.
Comparisons output 1.0 or 0.0, as a bool tensor converted to float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from masic.ir.arith import Num, equal, exp, maximum, minimum, not_equal, select, spike


@dataclass(frozen=True)
class ElementwiseFn:
    """An element-wise function: the names of its operands (its kernel's arguments), whether it takes a parameter
    `p`, and its `body`: (operands..., [p]) -> value."""

    operands: tuple[str, ...]
    param: bool
    body: Callable[..., Num]


FUNCTIONS: Mapping[str, ElementwiseFn] = MappingProxyType(
    {
        "copy": ElementwiseFn(("x",), False, lambda x: x),
        "fill": ElementwiseFn((), True, lambda p: p),
        "scale": ElementwiseFn(("x",), True, lambda x, p: x * p),
        "offset": ElementwiseFn(("x",), True, lambda x, p: x + p),
        "threshold": ElementwiseFn(("x",), True, lambda x, p: spike(x > p)),
        "relu": ElementwiseFn(("x",), False, lambda x: maximum(x, 0.0)),
        "add": ElementwiseFn(("a", "b"), False, lambda a, b: a + b),
        "sub": ElementwiseFn(("a", "b"), False, lambda a, b: a - b),
        "mul": ElementwiseFn(("a", "b"), False, lambda a, b: a * b),
        "select": ElementwiseFn(("c", "a", "b"), False, lambda c, a, b: select(not_equal(c, 0.0), a, b)),
        "div": ElementwiseFn(("a", "b"), False, lambda a, b: a / b),
        "div_by": ElementwiseFn(("x",), True, lambda x, p: x / p),
        "div_into": ElementwiseFn(("x",), True, lambda x, p: p / x),
        "maximum": ElementwiseFn(("a", "b"), False, maximum),
        "minimum": ElementwiseFn(("a", "b"), False, minimum),
        "clamp_min": ElementwiseFn(("x",), True, maximum),
        "clamp_max": ElementwiseFn(("x",), True, minimum),
        "ge": ElementwiseFn(("a", "b"), False, lambda a, b: spike(a >= b)),
        "le": ElementwiseFn(("a", "b"), False, lambda a, b: spike(a <= b)),
        "eq": ElementwiseFn(("a", "b"), False, lambda a, b: spike(equal(a, b))),
        "ge_value": ElementwiseFn(("x",), True, lambda x, p: spike(x >= p)),
        "le_value": ElementwiseFn(("x",), True, lambda x, p: spike(x <= p)),
        "eq_value": ElementwiseFn(("x",), True, lambda x, p: spike(equal(x, p))),
        "exp": ElementwiseFn(("x",), False, exp),
        "sigmoid": ElementwiseFn(("x",), False, lambda x: 1.0 / (1.0 + exp(-x))),
    }
)
