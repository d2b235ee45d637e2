"""Convolution kernels: vectorised along output columns (OIHW weights), or along output channels (weights in blocks
of output channels, "OIHW{ob}o", for maps too narrow to fill a vector with columns)."""

from __future__ import annotations

import math

from tvm import ir, s_tir, te, tirx
from tvm.s_tir.schedule import LoopRV

from masic.codegen.kernels import FLOAT, INT8, SUM, Conv2dKernel
from masic.codegen.kernels.args import stored_shape
from masic.codegen.tir.common import (
    ACC_BLOCK,
    MAX_ACC_VECTORS,
    MAX_TILE_FLOATS,
    as_type,
    layer_output,
    placeholder,
    product,
    tile,
    to_c_abi,
)
from masic.codegen.tir.dense import NARROW, NARROW_ROWS
from masic.codegen.tir.neuron import output_stage
from masic.codegen.tir.window import WEIGHT_BLOCK, schedule_pad, window_source, windowed
from masic.ir.shapes import weight_block

# The conv vectorised along output channels does several times the multiply-accumulates per microsecond of the
# column kernel on the small maps it runs, so it needs more work before a second thread pays (MobileNetV2's 1x1
# convs of 2x2 maps were slower on two threads than on one on a busy machine).
BLOCKED_PARALLEL_MIN_WORK = 1 << 18
NEON_LANES = 4  # float32 lanes of the targets whose blocked int8 convs over spikes sum in int16 chunks
PART_BLOCK = "part"  # int16 partial sums of a chunk of input channels (`_narrow_taps`)


def conv2d(k: Conv2dKernel, lanes: int) -> tirx.PrimFunc:
    """Direct convolution; per-tile accumulators, vectorized along output columns (`window.windowed`)."""
    if weight_block(k.weight_layout) > 1:
        return _conv2d_blocked(k, lanes)
    o = k.out_channels
    (kh, kw), (sh, sw), (dh, dw) = k.kernel, k.stride, k.dilation
    cpg, opg = k.in_shape[0] // k.groups, o // k.groups
    x, w, params = _operands(k)
    src, element = window_source(k, x, 0.0)
    rc, rh, rw = te.reduce_axis((0, cpg), "rc"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    # A compressed weight summed in float32 is converted once per input channel of a tile (`window.WEIGHT_BLOCK`),
    # not at each of its uses
    weight = w
    if k.weight_dtype != FLOAT and k.sum_dtype == FLOAT:
        weight = te.compute(w.shape, lambda *i: tirx.Cast(FLOAT, w[i]), name=WEIGHT_BLOCK)

    def conv(oc: tirx.Var, y: tirx.Var, xx: tirx.Var) -> ir.Expr:
        channel = rc if k.groups == 1 else (oc // opg) * cpg + rc
        tap = element(channel, y * sh + rh * dh, xx * sw + rw * dw)
        return te.sum(product(k, tap, weight[oc, rc, rh, rw]), axis=[rc, rh, rw])

    acc = te.compute(k.out_shape(), conv, name=ACC_BLOCK)
    inputs = [x, w, *params.values()]
    epilogue = lambda value, oc: layer_output(k, value, params, oc)  # noqa: E731
    return windowed(k, lanes, inputs, src, acc, epilogue, cpg * kh * kw, converted_weight=weight is not w)


def _operands(k: Conv2dKernel) -> tuple[te.Tensor, te.Tensor, dict[str, te.Tensor]]:
    """The input and weight tensors, and the int8 weight's scale and the bias, those the kernel takes, in argument
    order."""
    params = {name: te.placeholder((k.out_channels,), FLOAT, name=name) for name in ("scale", "b")}
    params = {name: tensor for name, tensor in params.items() if name in k.arg_shapes()}
    return placeholder(k, "x"), placeholder(k, "w"), params


def _pixel_tile(out_hw: tuple[int, int], vectors: int, block: int) -> tuple[int, int]:
    """(rows, columns) of output pixels per register tile of the blocked conv: dividing the map, at most
    `MAX_ACC_VECTORS` accumulator vectors of `vectors` each and `MAX_TILE_FLOATS` floats; the most pixels (each
    weight vector loaded feeds one FMA per pixel), then the widest rows."""
    (oh, ow), most = out_hw, max(1, min(MAX_ACC_VECTORS // vectors, MAX_TILE_FLOATS // block))
    tiles = [(r, c) for r in range(1, oh + 1) if oh % r == 0 for c in range(1, ow + 1) if ow % c == 0 and r * c <= most]
    return max(tiles, key=lambda t: (t[0] * t[1], t[1]))


def _conv2d_blocked(k: Conv2dKernel, lanes: int) -> tirx.PrimFunc:
    """Direct convolution vectorised along output channels, for maps too narrow to fill a vector with columns.

    The weight is stored in blocks of ob output channels (`k.weight_layout` "OIHW{ob}o"). Each task computes one
    block for a tile of output pixels: per input tap, one contiguous ob-wide weight load feeds one FMA per pixel of
    the tile, with the input pixel broadcast; the (pixels x ob) accumulators stay in registers over the whole
    reduction and are written once, to an NCHW or (`k.out_block`) NCHW{ob}c output.
    """
    o, block = k.out_channels, weight_block(k.weight_layout)
    (kh, kw), (sh, sw), (dh, dw) = k.kernel, k.stride, k.dilation
    cpg, blocks_per_group = k.in_shape[0] // k.groups, o // k.groups // block
    _, oh, ow = k.out_shape()
    x, w, params = _operands(k)
    chunk = _narrow_chunk(k, lanes)
    # int16 chunks multiply int8s: spikes padded as int8 are broadcast straight from their byte (NEON's ld1r)
    src, element = window_source(k, x, 0.0, INT8 if chunk else None)
    rc, rh, rw = te.reduce_axis((0, cpg), "rc"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")

    def tap(ob: tirx.Var, c: ir.Expr, y: tirx.Var, xx: tirx.Var, oi: tirx.Var) -> tuple[ir.Expr, ir.Expr]:
        """Input and weight of input channel `c` (of the group) at (rh, rw) for output (y, xx), channel oi of block
        ob."""
        channel = c if k.groups == 1 else (ob // blocks_per_group) * cpg + c  # a block lies in one group
        return element(channel, y * sh + rh * dh, xx * sw + rw * dw), w[ob, c, rh, rw, oi]

    if chunk:
        rci, rg = te.reduce_axis((0, chunk), "rci"), te.reduce_axis((0, cpg // chunk), "rg")

        def narrow(ob: tirx.Var, g: tirx.Var, y: tirx.Var, xx: tirx.Var, oi: tirx.Var) -> ir.Expr:
            # int8 times int8 into int16 (NEON's smlal): a spike (0 or 1) as int8
            x_tap, w_tap = tap(ob, g * chunk + rci, y, xx, oi)
            return te.sum(tirx.Cast(NARROW, as_type(INT8, x_tap)) * tirx.Cast(NARROW, w_tap), axis=[rci, rh, rw])

        part = te.compute((o // block, cpg // chunk, oh, ow, block), narrow, name=PART_BLOCK)
        wide = lambda ob, y, xx, oi: te.sum(tirx.Cast(SUM, part[ob, rg, y, xx, oi]), axis=[rg])  # noqa: E731
        acc = te.compute((o // block, oh, ow, block), wide, name=ACC_BLOCK)
    else:
        full = lambda ob, y, xx, oi: te.sum(product(k, *tap(ob, rc, y, xx, oi)), axis=[rc, rh, rw])  # noqa: E731
        acc = te.compute((o // block, oh, ow, block), full, name=ACC_BLOCK)

    def epilogue(oc: ir.Expr, y: tirx.Var, xx: tirx.Var, oi: ir.Expr | None = None) -> ir.Expr:
        """Output channel `oc` (or, stored blocked, channel `oi` of block `oc`) at (y, xx)."""
        ob, oi = (oc // block, oc % block) if oi is None else (oc, oi)
        return layer_output(k, acc[ob, y, xx, oi], params, ob * block + oi)

    stage = output_stage(k, stored_shape(k.out_shape(), k.out_block), epilogue, k.neuron)
    inputs, padded = [x, w, *params.values()], src is not x
    sch = s_tir.Schedule(te.create_prim_func([*inputs, *([src] if padded else []), *stage.tensors]))
    parallel = math.prod(k.out_shape()) * cpg * kh * kw >= BLOCKED_PARALLEL_MIN_WORK
    if padded:
        schedule_pad(sch, parallel)
    # An int16 chunk's sums of a pixel fill half the vectors of float32 ones (the int32 sums, added to once a chunk,
    # may spill)
    vectors = math.ceil(block / (2 * lanes if chunk else lanes))
    tile_h, tile_w = _pixel_tile((oh, ow), vectors, block)
    out = stage.scheduled_block(sch)
    if k.out_block > 1:  # NCHW{ob}c: a pixel's block of outputs is one contiguous vector, stored whole
        co, h, wl, ci = sch.get_loops(out)
        sch.vectorize(ci)
    else:  # NCHW: a pixel's outputs lie a map apart, stored one at a time
        c, h, wl = sch.get_loops(out)
        co, ci = sch.split(c, [None, block])
    ho, hi = sch.split(h, [None, tile_h])
    wo, wi = sch.split(wl, [None, tile_w])
    sch.reorder(co, ho, wo, hi, wi, ci)
    tasks = sch.fuse(co, ho)
    if parallel:
        sch.parallel(tasks)
    # At a loop inside the parallel one, so that each task has its own accumulators (at the parallel loop itself
    # they would be allocated once, outside it, and shared by the threads)
    sch.compute_at(sch.get_sblock(ACC_BLOCK), wo, preserve_unit_loops=True)
    acc_block = sch.get_sblock(ACC_BLOCK)
    acc_h, acc_w, acc_c, *reduction = sch.get_loops(acc_block)[-4 if chunk else -6 :]  # inside the block's unit loop
    sch.reorder(*reduction, acc_h, acc_w, acc_c)
    sch.vectorize(acc_c)
    sch.unroll(acc_w)
    sch.unroll(acc_h)
    if chunk:
        _narrow_taps(sch, reduction[0])
    sch.decompose_reduction(acc_block, reduction[0])
    stage.place_copies(sch)
    args = [*(t.op.name for t in inputs), *(["scratch"] if padded else []), *stage.names]
    return to_c_abi(sch.mod["main"], k.symbol, args, noalias=k.neuron is None)


def _narrow_chunk(k: Conv2dKernel, lanes: int) -> int:
    """Input channels per chunk of int16 partial sums of a blocked int8 conv over spikes on NEON (0: none, the sums
    are `k.sum_dtype`'s): at most `NARROW_ROWS` taps of weights of at most 127 in magnitude stay in int16's range,
    and `smlal` then multiplies 8 weights by a spike per instruction, twice the lanes of a float32 `fmla`. Other
    targets keep float32 sums (x86-64 has no int8 x int8 -> int16 multiply-add of a broadcast byte; its int32
    multiply is slow)."""
    taps = k.kernel[0] * k.kernel[1]
    if lanes != NEON_LANES or k.weight_dtype != INT8 or not k.spike_inputs() or taps > NARROW_ROWS:
        return 0
    return tile(k.in_shape[0] // k.groups, NARROW_ROWS // taps)


def _narrow_taps(sch: s_tir.Schedule, chunks: LoopRV) -> None:
    """Computes the int16 partial sums of a chunk (`PART_BLOCK`) inside the chunk loop of the int32 sums, with the
    same register tile: taps outside, the block of output channels vectorised inside."""
    part = sch.get_sblock(PART_BLOCK)
    sch.compute_at(part, chunks, preserve_unit_loops=True)
    part_h, part_w, part_c, *reduction = sch.get_loops(part)[-6:]
    sch.reorder(*reduction, part_h, part_w, part_c)
    sch.vectorize(part_c)
    sch.unroll(part_w)
    sch.unroll(part_h)
    sch.decompose_reduction(part, reduction[0])
