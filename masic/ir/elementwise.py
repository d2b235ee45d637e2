"""Element-wise functions, written once over `masic.ir.arith`; an op that computes one names it in the op table
(`OpDef.function`, `masic.ir.ops`).

Each function computes one output element from its operands' elements (and a parameter `p`, a float or one value
per element) with PyTorch's float32 rounding, one rounding per operation. The reference interpreter runs them with
numpy, the element-wise kernels (`masic.codegen.tir.elementwise`) as TIR, so the two agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from masic.ir.arith import Num, maximum, not_equal, select, spike


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
    }
)
