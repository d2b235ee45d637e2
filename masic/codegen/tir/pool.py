"""Pooling kernels: max, average and sum pooling over windows (the conv's tiled schedule), and adaptive average
pooling over uneven bins."""

from __future__ import annotations

import math

from tvm import ir, s_tir, te, tirx

from masic.codegen.kernels import FLOAT, AdaptiveAvgPool2dKernel, Pool2dKernel
from masic.codegen.tir.arith import f32
from masic.codegen.tir.common import ACC_BLOCK, OUTPUT_BLOCK, PARALLEL_MIN_WORK, as_float, placeholder, to_c_abi
from masic.codegen.tir.window import window_source, windowed
from masic.ir.shapes import adaptive_bins


def pool2d(k: Pool2dKernel, lanes: int) -> tirx.PrimFunc:
    """Max / average / sum pooling sharing the conv schedule (tiled accumulators over the window)."""
    (kh, kw), (sh, sw) = k.kernel, k.stride
    x = placeholder(k, "x")
    src, element = window_source(k, x, -math.inf if k.kind == "max" else 0.0)
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    # The max of spikes is a spike (bytes throughout); sums count them as floats.
    reducer, read = (te.max, lambda e: e) if k.kind == "max" else (te.sum, as_float)
    acc = te.compute(
        k.out_shape(),
        lambda ci, y, xx: reducer(read(element(ci, y * sh + rh, xx * sw + rw)), axis=[rh, rw]),
        name=ACC_BLOCK,
    )
    if k.kind == "avg":
        # PyTorch divides the window sum by the window size (count_include_pad=True, no ceil mode).
        return windowed(k, lanes, [x], src, acc, lambda value, ci: value / f32(kh * kw), kh * kw)
    return windowed(k, lanes, [x], src, acc, lambda value, ci: value, kh * kw)


def adaptive_avgpool2d(k: AdaptiveAvgPool2dKernel, lanes: int) -> tirx.PrimFunc:
    """Sum over the largest bin with the cells outside each bin masked, divided by the bin's size; the sum is a
    per-output scalar (`compute_at`), so no workspace is needed. These layers are small: channels run in parallel,
    nothing is vectorized."""
    _, h, w = k.in_shape
    oh, ow = k.output
    x = placeholder(k, "x")
    kh, kw = (max(hi - lo for lo, hi in adaptive_bins(size, out)) for size, out in ((h, oh), (w, ow)))
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")

    def bin_of(i: tirx.Var, n: int, o: int) -> tuple[ir.Expr, ir.Expr]:
        """`masic.ir.ops.adaptive_bins` of output cell `i` as TIR."""
        return tirx.floordiv(i * n, o), tirx.floordiv((i + 1) * n + o - 1, o)

    def total(ci: tirx.Var, i: tirx.Var, j: tirx.Var) -> ir.Expr:
        (h0, h1), (w0, w1) = bin_of(i, h, oh), bin_of(j, w, ow)
        inside = tirx.all(h0 + rh < h1, w0 + rw < w1)
        value = as_float(x[ci, tirx.min(h0 + rh, h - 1), tirx.min(w0 + rw, w - 1)])
        return te.sum(tirx.Select(inside, value, f32(0.0)), axis=[rh, rw])

    acc = te.compute(k.out_shape(), total, name=ACC_BLOCK)

    def mean(ci: tirx.Var, i: tirx.Var, j: tirx.Var) -> ir.Expr:
        (h0, h1), (w0, w1) = bin_of(i, h, oh), bin_of(j, w, ow)
        return acc[ci, i, j] / tirx.Cast(FLOAT, (h1 - h0) * (w1 - w0))

    out = te.compute(k.out_shape(), mean, name=OUTPUT_BLOCK)
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    loops = sch.get_loops(sch.get_sblock(OUTPUT_BLOCK))
    sch.compute_at(sch.get_sblock(ACC_BLOCK), loops[-1])
    if math.prod(k.out_shape()) * kh * kw >= PARALLEL_MIN_WORK:
        sch.parallel(loops[0])
    return to_c_abi(sch.mod["main"], k.symbol, k.arg_names())
