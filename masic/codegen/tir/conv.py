"""Convolution kernels: vectorised along output columns (OIHW weights), or along output channels (weights in blocks
of output channels, "OIHW{ob}o", for maps too narrow to fill a vector with columns)."""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import ir, s_tir, te, tirx

from masic.codegen.kernels import FLOAT, INT8, SUM, Conv2dKernel
from masic.codegen.kernels.args import stored_shape
from masic.codegen.tir.common import (
    ACC_BLOCK,
    MAX_ACC_VECTORS,
    MAX_TILE_FLOATS,
    NARROW_ROWS,
    layer_output,
    narrow_product,
    narrow_sums,
    placeholder,
    product,
    tile,
    to_c_abi,
)
from masic.codegen.tir.neuron import output_stage
from masic.codegen.tir.window import (
    PART_BLOCK,
    WEIGHT_BLOCK,
    narrow_overhead,
    narrow_taps,
    schedule_pad,
    window_source,
    windowed,
)
from masic.ir.shapes import weight_block

# The conv vectorised along output channels does several times the multiply-accumulates per microsecond of the
# column kernel on the small maps it runs, so it needs more work before a second thread pays (MobileNetV2's 1x1
# convs of 2x2 maps were slower on two threads than on one on a busy machine).
BLOCKED_PARALLEL_MIN_WORK = 1 << 18


def conv2d(k: Conv2dKernel, lanes: int) -> tirx.PrimFunc:
    """Direct convolution; per-tile accumulators, vectorized along output columns (`window.windowed`)."""
    if weight_block(k.weight_layout) > 1:
        return _conv2d_blocked(k, lanes)
    o = k.out_channels
    (kh, kw), (sh, sw), (dh, dw) = k.kernel, k.stride, k.dilation
    cpg, opg = k.in_shape[0] // k.groups, o // k.groups
    x, w, params = _operands(k)
    chunk = _narrow_chunk(k, lanes)
    src, element = window_source(k, x, 0.0, INT8 if chunk else None)
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    # A compressed weight summed in float32 is converted once per input channel of a tile (`window.WEIGHT_BLOCK`),
    # not at each of its uses
    weight = w
    if k.weight_dtype != FLOAT and k.sum_dtype == FLOAT and not chunk:
        weight = te.compute(w.shape, lambda *i: tirx.Cast(FLOAT, w[i]), name=WEIGHT_BLOCK)

    def tap(c: ir.Expr, oc: tirx.Var, y: tirx.Var, xx: tirx.Var) -> tuple[ir.Expr, ir.Expr]:
        """Input and weight of input channel `c` (of the group) at (rh, rw) for output channel oc at (y, xx)."""
        channel = c if k.groups == 1 else (oc // opg) * cpg + c
        return element(channel, y * sh + rh * dh, xx * sw + rw * dw), weight[oc, c, rh, rw]

    acc = _sums(k, k.out_shape(), tap, (rh, rw), chunk)
    inputs = [x, w, *params.values()]
    epilogue = lambda value, oc: layer_output(k, value, params, oc)  # noqa: E731
    converted = weight is not w
    return windowed(k, lanes, inputs, src, acc, epilogue, cpg * kh * kw, converted_weight=converted, narrow=chunk > 0)


def _sums(
    k: Conv2dKernel,
    shape: tuple[int, ...],
    tap: Callable[..., tuple[ir.Expr, ir.Expr]],
    window: tuple[tirx.IterVar, tirx.IterVar],
    chunk: int,
) -> te.Tensor:
    """The layer's sums (`ACC_BLOCK`) at each index of `shape`, over the input channels of a group and the window's
    taps (`window`: its row and column reduction axes): `tap(c, *index)` is the input and weight of input channel
    `c` there. With `chunk` (`_narrow_chunk`), the int16 sums (`narrow_product`) of each `chunk` input channels
    (`PART_BLOCK`, indexed by chunk first) are added in int32."""
    channels = k.in_shape[0] // k.groups
    if not chunk:
        rc = te.reduce_axis((0, channels), "rc")
        return te.compute(shape, lambda *i: te.sum(product(k, *tap(rc, *i)), axis=[rc, *window]), name=ACC_BLOCK)
    rci, rg = te.reduce_axis((0, chunk), "rci"), te.reduce_axis((0, channels // chunk), "rg")

    def narrow(g: tirx.Var, *index: tirx.Var) -> ir.Expr:
        return te.sum(narrow_product(*tap(g * chunk + rci, *index)), axis=[rci, *window])

    part = te.compute((channels // chunk, *shape), narrow, name=PART_BLOCK)
    return te.compute(shape, lambda *i: te.sum(tirx.Cast(SUM, part[(rg, *i)]), axis=[rg]), name=ACC_BLOCK)


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
    most = max(1, min(MAX_ACC_VECTORS // vectors, MAX_TILE_FLOATS // block))
    return max(_pixel_tiles(out_hw, most), key=lambda t: (t[0] * t[1], t[1]))


def _pixel_tiles(out_hw: tuple[int, int], most: int) -> list[tuple[int, int]]:
    """Every (rows, columns) tile of output pixels that divides the map and holds at most `most` pixels."""
    oh, ow = out_hw
    return [(r, c) for r in range(1, oh + 1) if oh % r == 0 for c in range(1, ow + 1) if ow % c == 0 and r * c <= most]


def _narrow_block_tile(k: Conv2dKernel, vectors: int) -> tuple[int, int, int]:
    """(blocks, rows, columns) of the register tile of a blocked conv's int16 sums (`vectors` per pixel of a block):
    dividing the output, at most `MAX_ACC_VECTORS` vectors, and the fewest other instructions per multiply-add
    (`narrow_overhead`, per input channel: a weight vector per block and tap, and a broadcast per input pixel the
    tile's windows cover, which LLVM loads once for all the taps reading it). 2 blocks x 2 x 2 pixels of a 4x4 map
    took 0.184 instructions per MAC, 1 x 2 x 4 0.187, 2 x 1 x 4 0.188, 4 x 1 x 2 0.195 (bench/compressed_arm.py)."""
    block = weight_block(k.weight_layout)
    (kh, kw), (sh, sw), (dh, dw) = k.kernel, k.stride, k.dilation
    blocks, tiles = k.out_channels // block, []
    for b in (b for b in range(1, blocks + 1) if blocks % b == 0):
        most = min(MAX_ACC_VECTORS // (vectors * b), MAX_TILE_FLOATS // (block * b))
        tiles += [(b, r, c) for r, c in _pixel_tiles(k.out_shape()[1:], most)]

    def cost(t: tuple[int, int, int]) -> tuple[float, int]:
        b, r, c = t
        pixels = ((r - 1) * sh + (kh - 1) * dh + 1) * ((c - 1) * sw + (kw - 1) * dw + 1)
        return narrow_overhead(pixels, b * kh * kw, b * r * c * vectors * kh * kw), -b * r * c

    return min(tiles, key=cost)


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
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")

    def tap(c: ir.Expr, ob: tirx.Var, y: tirx.Var, xx: tirx.Var, oi: tirx.Var) -> tuple[ir.Expr, ir.Expr]:
        """Input and weight of input channel `c` (of the group) at (rh, rw) for output (y, xx), channel oi of block
        ob."""
        channel = c if k.groups == 1 else (ob // blocks_per_group) * cpg + c  # a block lies in one group
        return element(channel, y * sh + rh * dh, xx * sw + rw * dw), w[ob, c, rh, rw, oi]

    acc = _sums(k, (o // block, oh, ow, block), tap, (rh, rw), chunk)

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
    if chunk:
        tile_b, tile_h, tile_w = _narrow_block_tile(k, math.ceil(block / (2 * lanes)))
    else:
        tile_b, (tile_h, tile_w) = 1, _pixel_tile((oh, ow), math.ceil(block / lanes), block)
    out = stage.scheduled_block(sch)
    if k.out_block > 1:  # NCHW{ob}c: a pixel's block of outputs is one contiguous vector, stored whole
        co, h, wl, ci = sch.get_loops(out)
        sch.vectorize(ci)
    else:  # NCHW: a pixel's outputs lie a map apart, stored one at a time
        c, h, wl = sch.get_loops(out)
        co, ci = sch.split(c, [None, block])
    bo, bi = sch.split(co, [None, tile_b])
    ho, hi = sch.split(h, [None, tile_h])
    wo, wi = sch.split(wl, [None, tile_w])
    sch.reorder(bo, ho, wo, bi, hi, wi, ci)
    tasks = sch.fuse(bo, ho)
    if parallel:
        sch.parallel(tasks)
    # At a loop inside the parallel one, so that each task has its own accumulators (at the parallel loop itself
    # they would be allocated once, outside it, and shared by the threads)
    sch.compute_at(sch.get_sblock(ACC_BLOCK), wo, preserve_unit_loops=True)
    acc_block = sch.get_sblock(ACC_BLOCK)
    acc_b, acc_h, acc_w, acc_c, *reduction = sch.get_loops(acc_block)[-5 if chunk else -7 :]
    sch.reorder(*reduction, acc_b, acc_h, acc_w, acc_c)
    sch.vectorize(acc_c)
    for loop in (acc_b, acc_h, acc_w):
        sch.unroll(loop)
    if chunk:
        narrow_taps(sch, reduction[0])
    sch.decompose_reduction(acc_block, reduction[0])
    stage.place_copies(sch)
    args = [*(t.op.name for t in inputs), *(["scratch"] if padded else []), *stage.names]
    return to_c_abi(sch.mod["main"], k.symbol, args, noalias=k.neuron is None)


def _narrow_chunk(k: Conv2dKernel, lanes: int) -> int:
    """Input channels per chunk of int16 partial sums of an int8 conv over spikes on NEON (`narrow_sums`; 0: none,
    the sums are `k.sum_dtype`'s), at most `NARROW_ROWS` taps."""
    taps = k.kernel[0] * k.kernel[1]
    if not narrow_sums(k, lanes) or taps > NARROW_ROWS:
        return 0
    return tile(k.in_shape[0] // k.groups, NARROW_ROWS // taps)
