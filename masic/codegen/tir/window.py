"""What sliding-window kernels (convolution, pooling) share: the padded copy of the input they read, and the
register-tiled schedule of a reduction over windows followed by its output stage."""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import ir, s_tir, te, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

from masic.codegen.kernels import FLOAT, Conv2dKernel, Pool2dKernel
from masic.codegen.tir.arith import f32
from masic.codegen.tir.common import (
    ACC_BLOCK,
    MAX_ACC_VECTORS,
    MAX_TILE_FLOATS,
    PARALLEL_MIN_WORK,
    as_type,
    tile,
    to_c_abi,
    vector_tile,
)
from masic.codegen.tir.neuron import output_stage

PAD_BLOCK = "pad"  # copies the input, padded, into the scratch argument
WEIGHT_BLOCK = "w_float"  # a conv's compressed weight converted to float32 (`masic.codegen.tir.conv`)
PART_BLOCK = "part"  # a conv's int16 partial sums of a chunk of input channels (`narrow_taps`)


def window_source(
    k: Conv2dKernel | Pool2dKernel, x: te.Tensor, fill: float, dtype: str | None = None
) -> tuple[te.Tensor, Callable[[ir.Expr, ir.Expr, ir.Expr], ir.Expr]]:
    """The tensor a sliding window reads, and its element (c, h, w): `x` itself (stored NCHW or, with `k.in_block`,
    NCHW{c}c), or when `k.pads()` pads, `x` padded with `fill` into NCHW as its own stage (written to `scratch`), in
    the scratch argument's type or `dtype`, one no wider (the copy then fills the start of the scratch buffer)."""

    def element(c: ir.Expr, h: ir.Expr, w: ir.Expr) -> ir.Expr:
        return x[c, h, w] if k.in_block == 1 else x[c // k.in_block, h, w, c % k.in_block]

    if not k.scratch_bytes():
        return x, element
    (_, h, w), (top, _, side) = k.in_shape, k.pads()
    # Spikes pad with 0, also for max pooling: every window holds an input element, and spikes are never below 0.
    dtype = dtype or k.arg_dtype("scratch")
    pad = f32(fill) if dtype == FLOAT else tirx.const(0, dtype)

    def value(ci: tirx.Var, hi: tirx.Var, wi: tirx.Var) -> ir.Expr:
        inside = tirx.all(hi >= top, hi < h + top, wi >= side, wi < w + side)
        return tirx.if_then_else(inside, as_type(dtype, element(ci, hi - top, wi - side)), pad)

    padded = te.compute(k.padded_shape(), value, name=PAD_BLOCK)
    return padded, lambda c, hi, wi: padded[c, hi, wi]


def schedule_pad(sch: s_tir.Schedule, parallel: bool) -> None:
    """Padding writes its own buffer (inlining it into the consumer would block vectorisation): one channel per
    parallel task."""
    if parallel:
        sch.parallel(sch.get_loops(sch.get_sblock(PAD_BLOCK))[0])


def schedule_tiled_reduction(
    sch: s_tir.Schedule,
    out: SBlockRV,
    lanes: int,
    parallel: bool,
    converted_weight: bool = False,
    narrow: bool = False,
) -> None:
    """Register-tiled schedule shared by conv2d and pooling.

    `out` is an element-wise stage (bias, divide, copy, a neuron update) over (C, H, W) reading the block
    `ACC_BLOCK`, a reduction over the same space. The output is tiled by `tile_c` channels x `tile_x` columns,
    sized to fill the vector registers without spilling and to divide the loops exactly. The sums are computed per
    tile into a small buffer (compacted to tile size, so LLVM keeps it in registers), with the reduction loops
    outside the tile so each input vector and weight broadcast feeds several accumulators. The (channel-tile, row)
    loops run in parallel (when `parallel`); the column loop of the tile is vectorized. With `converted_weight`,
    the weight the sums read is the block `WEIGHT_BLOCK`, computed per input channel of the reduction. With
    `narrow`, the sums add chunks' int16 partial sums (`narrow_taps`), whose vectors hold twice the lanes.
    """
    c, h, w = sch.get_loops(out)
    channels, height, width = (int(sch.get(loop).extent) for loop in (c, h, w))
    if narrow:
        tile_x = vector_tile(width, 2 * lanes)
        tile_c, tile_h = _narrow_tile(channels, height, tile_x, 2 * lanes)
    else:
        tile_x, tile_h = vector_tile(width, lanes), 1
        vectors = math.ceil(tile_x / lanes)
        tile_c = tile(channels, max(1, min(8, MAX_ACC_VECTORS // vectors, MAX_TILE_FLOATS // tile_x)))
    co, ci = sch.split(c, [None, tile_c])
    ho, hi = sch.split(h, [None, tile_h])
    wo, wi = sch.split(w, [None, tile_x])
    sch.reorder(co, ho, wo, ci, hi, wi)
    rows = sch.fuse(co, ho)
    if parallel:
        sch.parallel(rows)
    sch.vectorize(wi)
    acc = sch.get_sblock(ACC_BLOCK)
    sch.compute_at(acc, wo, preserve_unit_loops=True)
    acc_ci, acc_h, acc_wi, *reduction = sch.get_loops(acc)[2:]
    sch.reorder(*reduction, acc_ci, acc_h, acc_wi)
    sch.vectorize(acc_wi)
    sch.unroll(acc_ci)
    sch.unroll(acc_h)
    outer = _convert_weights(sch, reduction, tile_c) if converted_weight else reduction[0]
    if narrow:
        narrow_taps(sch, outer)
    sch.decompose_reduction(acc, outer)


def narrow_overhead(broadcasts: int, loads: int, products: int) -> float:
    """Instructions besides the int16 multiply-adds (`smlal`, `products` of them) per multiply-add, of a register
    tile of int8 products over spikes: a byte broadcast takes two (NEON's `ld1r` has no offset form: an address
    add), a vector load one."""
    return (2 * broadcasts + loads) / products


def _narrow_tile(channels: int, height: int, tile_x: int, lanes: int) -> tuple[int, int]:
    """(channels, rows) of the register tile of int16 sums (`lanes` to a vector) of a conv over `tile_x` columns:
    dividing the map, at most `MAX_ACC_VECTORS` vectors, and the fewest other instructions per multiply-add
    (`narrow_overhead`: per tap, a weight broadcast per channel and an input vector per row, each vector of int8
    holding two of sums; the row loop of the window stays a loop, so no row is loaded for two rows of the tile):
    2 channels x 4 rows of 16 columns took 0.186 instructions per MAC, 4 x 2 0.230, 8 x 1 0.281, 1 x 8 0.200
    (bench/compressed_arm.py)."""
    vectors = math.ceil(tile_x / lanes)
    tiles = [
        (c, h)
        for c in range(1, channels + 1)
        if channels % c == 0
        for h in range(1, height + 1)
        if height % h == 0 and c * h * vectors <= MAX_ACC_VECTORS and c * h * tile_x <= MAX_TILE_FLOATS
    ]
    loads = math.ceil(vectors / 2)
    return min(tiles, key=lambda t: (narrow_overhead(t[0], t[1] * loads, t[0] * t[1] * vectors), -t[0] * t[1]))


def narrow_taps(sch: s_tir.Schedule, chunks: LoopRV) -> None:
    """Computes the int16 partial sums of a chunk (`PART_BLOCK`, indexed by chunk first) inside the chunk loop of the
    int32 sums, with the same register tile: taps outside, the tile's last axis vectorised inside, the rest
    unrolled."""
    part = sch.get_sblock(PART_BLOCK)
    sch.compute_at(part, chunks, preserve_unit_loops=True)
    loops = sch.get_loops(part)
    spatial, reduction = loops[-len(sch.get(part).iter_vars) : -3], loops[-3:]
    sch.reorder(*reduction, *spatial)
    sch.vectorize(spatial[-1])
    for loop in spatial[:-1]:
        sch.unroll(loop)
    sch.decompose_reduction(part, reduction[0])


def _convert_weights(sch: s_tir.Schedule, reduction: list[LoopRV], tile_c: int) -> LoopRV:
    """Converts the compressed weights of a conv tile (`WEIGHT_BLOCK`) a few input channels at a time, into a small
    buffer (at most `MAX_TILE_FLOATS`) the multiply-adds then broadcast from, as from a float32 weight: each output
    channel's weights of those input channels are contiguous, so they convert as vectors."""
    rc, rh, rw = (int(sch.get(loop).extent) for loop in reduction)
    channels = tile(rc, max(1, MAX_TILE_FLOATS // (tile_c * rh * rw)))
    rco, _ = sch.split(reduction[0], [None, channels])
    weights = sch.get_sblock(WEIGHT_BLOCK)
    sch.compute_at(weights, rco, preserve_unit_loops=True)
    sch.vectorize(sch.fuse(*sch.get_loops(weights)[-3:]))
    return rco


def windowed(
    k: Conv2dKernel | Pool2dKernel,
    lanes: int,
    inputs: list[te.Tensor],
    src: te.Tensor,
    acc: te.Tensor,
    epilogue: Callable[[ir.Expr, tirx.Var], ir.Expr],
    window: int,
    converted_weight: bool = False,
    narrow: bool = False,
) -> tirx.PrimFunc:
    """Finish a sliding-window kernel (conv, pooling): `y = epilogue(acc, channel)`, scheduled with
    `schedule_tiled_reduction`; `src` is the padded input (the `scratch` argument) unless it is `x`; `window` is the
    number of terms each output sums; `converted_weight` and `narrow` as `schedule_tiled_reduction` takes them."""
    neuron = k.neuron if isinstance(k, Conv2dKernel) else None
    stage = output_stage(k, k.out_shape(), lambda c, h, w: epilogue(acc[c, h, w], c), neuron)
    padded = src is not inputs[0]
    sch = s_tir.Schedule(te.create_prim_func([*inputs, *([src] if padded else []), *stage.tensors]))
    parallel = math.prod(k.out_shape()) * window >= PARALLEL_MIN_WORK
    if padded:
        schedule_pad(sch, parallel)
    schedule_tiled_reduction(sch, stage.scheduled_block(sch), lanes, parallel, converted_weight, narrow)
    stage.place_copies(sch)
    args = [*(t.op.name for t in inputs), *(["scratch"] if padded else []), *stage.names]
    return to_c_abi(sch.mod["main"], k.symbol, args, noalias=neuron is None)
