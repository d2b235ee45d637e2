"""Element-wise kernels (the functions of `masic.ir.elementwise`, run by the TIR backend) and row copies (crops and
concats of row patches)."""

from __future__ import annotations

import math

import numpy as np
from tvm import ir, s_tir, te, tirx

from masic.codegen.kernels import SPIKE, ElementwiseAddKernel, ElementwiseKernel, RowsKernel
from masic.codegen.tir.arith import f32, num
from masic.codegen.tir.common import (
    OUTPUT_BLOCK,
    PARALLEL_MIN_ELEMENTS,
    as_float,
    as_type,
    placeholder,
    to_c_abi,
    vector_tile,
    vectorize_flat,
)
from masic.ir.elementwise import FUNCTIONS


def elementwise(k: ElementwiseKernel | ElementwiseAddKernel, lanes: int) -> tirx.PrimFunc:
    """One vectorized element-wise output `y` from the other arguments, n elements each: `y = a + b`, or the
    kernel's function with its parameter baked in as a constant or read per element. Spike operands read as
    floats, except for a copy of spikes into spikes, which copies bytes."""
    fn = FUNCTIONS["add" if isinstance(k, ElementwiseAddKernel) else k.fn]
    constant = getattr(k, "constant", None)
    *operands, out_name = k.arg_names()
    inputs = [placeholder(k, name) for name in operands]
    dtype = k.arg_dtype(out_name)
    read = (lambda e: e) if dtype == SPIKE else as_float

    def value(j: tirx.Var) -> ir.Expr:
        args = [num(read(t[j])) for t in inputs] + ([num(f32(constant))] if constant is not None else [])
        return as_type(dtype, fn.body(*args).value)

    out = te.compute((k.n,), value, name=OUTPUT_BLOCK)
    sch = s_tir.Schedule(te.create_prim_func([*inputs, out]))
    vectorize_flat(sch, sch.get_sblock(OUTPUT_BLOCK), lanes, k.n)
    return to_c_abi(sch.mod["main"], k.symbol, k.arg_names())


def rows(k: RowsKernel, lanes: int) -> tirx.PrimFunc:
    """Each output row read from its operand: one branch per operand on the row (loop-invariant along the
    vectorized columns). Row indices are clamped into each operand so no branch can read out of bounds."""
    xs = [placeholder(k, f"x{j}") for j in range(len(k.in_shapes))]
    ends = np.cumsum([hi - lo for lo, hi in k.rows]).tolist()
    starts = [0, *ends[:-1]]

    def value(c: tirx.Var, h: tirx.Var, w: tirx.Var) -> ir.Expr:
        expr = None
        for x, (lo, hi), start, end in reversed(list(zip(xs, k.rows, starts, ends, strict=True))):
            load = x[c, tirx.min(tirx.max(h - start + lo, lo), hi - 1), w]
            expr = load if expr is None else tirx.if_then_else(h < end, load, expr)
        return expr

    out = te.compute(k.out_shape(), lambda c, h, w: as_type(k.arg_dtype("y"), value(c, h, w)), name=OUTPUT_BLOCK)
    sch = s_tir.Schedule(te.create_prim_func([*xs, out]))
    c, h, w = sch.get_loops(sch.get_sblock(OUTPUT_BLOCK))
    if math.prod(k.out_shape()) >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(sch.fuse(c, h))
    width = vector_tile(k.out_shape()[2], lanes)
    if width > 1:
        sch.vectorize(sch.split(w, [None, width])[1])
    return to_c_abi(sch.mod["main"], k.symbol, k.arg_names())
