"""The TIR backend of `masic.ir.arith`: neuron updates and element-wise functions as TVM expressions.

Each operation becomes one float32 TIR operation, so the kernels compute what the numpy backend computes, bit for
bit. A product that an add or subtract takes as an operand is fenced (`no_contract`), so that LLVM never fuses the
two into one multiply-add; LLVM contracts nothing else (a product stored, compared or selected as it is), so no
other product needs a fence, which would only hinder vectorising (odd vector widths).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import ir, tirx

from masic.ir.arith import Backend, Num

FLOAT = "float32"


def f32(value: float) -> ir.Expr:
    """A float32 constant holding exactly `np.float32(value)` (rounded here, so that any constant folding TVM does
    in double precision starts from the float32 value)."""
    return tirx.const(float(np.float32(value)), FLOAT)


def no_contract(product: ir.Expr) -> ir.Expr:
    """Stop LLVM from fusing `product` into a following add (FMA).

    TVM's LLVM code generator turns `a + b * c` into `llvm.fmuladd` and LLVM lowers that (and contracts plain
    fmul/fadd pairs) to `vfmadd`/`fmla`, which rounds once instead of twice; no target option turns it off. Neuron
    updates must round after the multiply to match numpy (and PyTorch/Norse) bit for bit, since one ulp can flip a
    spike at threshold. `llvm.arithmetic.fence` is an identity that optimisations may not look through, so the
    multiply stays a separately rounded operation; it vectorises and costs nothing at run time.
    NB: in TVM 0.27 `call_llvm_pure_intrin` takes no `num_signature` argument any more.
    """
    return tirx.call_llvm_pure_intrin(FLOAT, "llvm.arithmetic.fence", product)


def _rounded(operand: ir.Expr) -> ir.Expr:
    """An operand of an add or subtract: a product (also a negated one, which TVM writes as a product by -1)
    fenced, so that it stays rounded on its own."""
    return no_contract(operand) if isinstance(operand, tirx.Mul) else operand


class _Tir(Backend):
    """Values are float32 TIR expressions, conditions boolean ones."""

    def const(self, value: np.float32) -> ir.Expr:
        return f32(value)

    def add(self, a: Any, b: Any) -> Any:
        return _rounded(a) + _rounded(b)

    def sub(self, a: Any, b: Any) -> Any:
        return _rounded(a) - _rounded(b)

    def minimum(self, a: Any, b: Any) -> Any:
        return tirx.min(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return tirx.max(a, b)

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        """LLVM's fma rounds once on every target (an instruction where the CPU has one, else libm's fmaf)."""
        return tirx.call_llvm_pure_intrin(FLOAT, "llvm.fma", a, b, c)

    def opaque(self, a: Any) -> Any:
        """A fence: TVM's simplifier cannot see through the call, nor LLVM through the intrinsic."""
        return no_contract(a)

    def pow2(self, k: Any) -> Any:
        """The float32 whose exponent field is k + 127 and mantissa zero."""
        return tirx.reinterpret(FLOAT, tirx.shift_left(tirx.Cast("int32", k) + 127, 23))

    def floor(self, a: Any) -> Any:
        return tirx.floor(a)

    def both(self, a: Any, b: Any) -> Any:
        return tirx.And(a, b)

    def either(self, a: Any, b: Any) -> Any:
        return tirx.Or(a, b)

    def negate(self, a: Any) -> Any:
        return tirx.Not(a)

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        return tirx.Select(cond, a, b)


TIR = _Tir()


def num(value: ir.Expr) -> Num:
    """A float32 TIR expression as a `Num`."""
    return Num(TIR, value)
