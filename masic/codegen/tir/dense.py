"""Dense kernels: the matrix-vector product (one step per call, or several steps sharing one pass over the weights)
and the accumulate-only dense layer of spikes (over bytes or bit-packed words)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from tvm import ir, s_tir, te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from masic.codegen.kernels import BITS, FLOAT, SPIKE, AccumulateDenseKernel, DenseKernel
from masic.codegen.tir.common import (
    ACC_BLOCK,
    MAX_ACC_VECTORS,
    MAX_TILE_FLOATS,
    NARROW,
    NEON_LANES,
    PARALLEL_MIN_WORK,
    built,
    in_chunks,
    layer_output,
    narrow_product,
    narrow_sums,
    placeholder,
    product,
    summand,
    tile,
    to_c_abi,
    vector_tile,
    zero,
)
from masic.codegen.tir.neuron import neuron_values, old_block, output_stage
from masic.ir.graph import WORD_BITS, words

PART_BLOCK = "part"  # a dense layer's interleaved partial sums
STEP_GROUP = 4  # timesteps a batched dense kernel computes together (see `dense_steps`)


def dense(k: DenseKernel, lanes: int) -> tirx.PrimFunc:
    """Matrix-vector product with w rows contiguous.

    The reduction is split into `lanes` interleaved partial sums (`part`), so the inner loop is a vector
    multiply-add over contiguous weights; a tile of rows shares each vector load of x. The few partial sums are
    then added up per row.
    """
    if k.steps > 1 or (_narrow_lanes(k, lanes) and k.neuron is None):  # `dense_steps` has no neuron epilogue
        return dense_steps(k, lanes)
    n_in, n_out = k.in_features, k.out_features
    step = math.gcd(n_in, lanes)
    x, w = placeholder(k, "x"), placeholder(k, "w")
    params = {name: te.placeholder((n_out,), FLOAT, name=name) for name in ("scale", "b") if name in k.arg_shapes()}
    ko = te.reduce_axis((0, n_in // step), "ko")
    part = te.compute(
        (n_out, step),
        lambda j, lane: te.sum(product(k, x[ko * step + lane], w[j, ko * step + lane]), axis=ko),
        name=PART_BLOCK,
    )
    lane = te.reduce_axis((0, step), "lane")
    acc = te.compute((n_out,), lambda j: te.sum(part[j, lane], axis=lane), name=ACC_BLOCK)
    stage = output_stage(k, (n_out,), lambda j: layer_output(k, acc[j], params, j), k.neuron)
    inputs = [x, w, *params.values()]
    sch = s_tir.Schedule(te.create_prim_func([*inputs, *stage.tensors]))
    jo, _ = sch.split(sch.get_loops(stage.scheduled_block(sch))[0], [None, tile(n_out, 4)])
    if n_in * n_out >= PARALLEL_MIN_WORK:
        sch.parallel(jo)
    part_block = sch.get_sblock(PART_BLOCK)
    sch.compute_at(sch.get_sblock(ACC_BLOCK), jo, preserve_unit_loops=True)
    sch.compute_at(part_block, jo, preserve_unit_loops=True)
    ji, lane_loop, ko_loop = sch.get_loops(part_block)[-3:]
    sch.reorder(ko_loop, ji, lane_loop)
    sch.vectorize(lane_loop)
    sch.unroll(ji)
    sch.decompose_reduction(part_block, ko_loop)
    stage.place_copies(sch)
    args = [*(t.op.name for t in inputs), *stage.names]
    return to_c_abi(sch.mod["main"], k.symbol, args, noalias=k.neuron is None)


def dense_steps(k: DenseKernel, lanes: int) -> tirx.PrimFunc:
    """Matrix-vector products of several timesteps sharing one pass over the weights.

    Like `dense`: each output row accumulates `lanes` interleaved partial sums over contiguous weights, a tile of
    rows at a time, but every weight vector loaded feeds one accumulator per step, so a weight matrix larger than
    the caches is read from memory once per call rather than once per step. Steps go in groups of `STEP_GROUP` with
    tiles of rows that make `MAX_ACC_VECTORS` accumulators (each step's its own small buffer, kept in registers):
    each weight vector then feeds 4 steps and each input vector 4 rows, and a row tile is read again from L1 for
    the next group (much faster than groups of 16 steps of single rows, whose 16 inputs overflow L1). The steps'
    inputs and outputs are separate arguments, so the kernel has one statement per step (IR builder).

    int8 weights over spikes on NEON (`_narrow_lanes`) interleave 16 partial sums, a whole vector of int8 weights,
    in int16 (`narrow_product`: `smlal`/`smlal2`, 8 MACs an instruction where float32 `fmla` does 4), each added to
    its int32 sum after at most `NARROW_ROWS` terms (`in_chunks`).
    """
    n_in, n_out, n_steps = k.in_features, k.out_features, k.steps
    narrow = _narrow_lanes(k, lanes)
    step = narrow or math.gcd(n_in, lanes)
    group = min(n_steps, STEP_GROUP)
    vectors = 2 if narrow else 1  # float32 vectors' worth of registers per partial-sum vector
    rows = tile(n_out, max(1, MAX_ACC_VECTORS // (group * vectors)))
    loop = T.parallel if n_in * n_out * n_steps >= PARALLEL_MIN_WORK else T.serial

    def body(a: dict[str, tirx.Buffer]) -> None:
        xs, ys, w = k.step_names("x"), k.step_names("y"), a["w"]

        def clear(sums: dict[int, tirx.Buffer]) -> None:
            with T.unroll(rows) as ji, T.vectorized(step) as lane:
                IRBuilder.name_many(["ji", "lane"], [ji, lane])
                for sum_ in sums.values():
                    T.buffer_store(sum_, zero(sum_.dtype), [ji, lane])

        def accumulate(sums: dict[int, tirx.Buffer], first: int | ir.Expr, count: int) -> None:
            """sums[t] += x_t * w over the input vectors [first, first + count)."""
            with T.serial(count) as ko, T.unroll(rows) as ji, T.vectorized(step) as lane:
                IRBuilder.name_many(["ko", "ji", "lane"], [ko, ji, lane])
                column = (first + ko) * step + lane
                weight = w[jo * rows + ji, column]
                for t, sum_ in sums.items():  # spikes are bytes, read as 0.0 / 1.0 (or 0 / 1 into integer sums)
                    x = a[xs[t]][column]
                    term = narrow_product(x, weight) if narrow else product(k, x, weight)
                    T.buffer_store(sum_, sum_[ji, lane] + term, [ji, lane])

        def add_chunk(acc: dict[int, tirx.Buffer], part: dict[int, tirx.Buffer], first: ir.Expr, count: int) -> None:
            clear(part)
            accumulate(part, first, count)
            with T.unroll(rows) as ji, T.vectorized(step) as lane:
                IRBuilder.name_many(["ji", "lane"], [ji, lane])
                for t, sum_ in acc.items():
                    T.buffer_store(sum_, sum_[ji, lane] + tirx.Cast(k.sum_dtype, part[t][ji, lane]), [ji, lane])

        def fold_halves(acc: dict[int, tirx.Buffer]) -> int:
            """Adds the upper half of each row's integer sums onto the lower, as vectors, down to `NEON_LANES`
            lanes (exact in any order; LLVM leaves a chain of lane-by-lane adds scalar): the lanes left to add."""
            width = step
            while width > NEON_LANES and width % 2 == 0:
                width //= 2
                with T.unroll(rows) as ji, T.vectorized(width) as lane:
                    IRBuilder.name_many(["ji", "lane"], [ji, lane])
                    for sum_ in acc.values():
                        T.buffer_store(sum_, sum_[ji, lane] + sum_[ji, lane + width], [ji, lane])
            return width

        with loop(n_out // rows) as jo:
            IRBuilder.name("jo", jo)
            for first in range(0, n_steps, group):
                steps = range(first, min(first + group, n_steps))
                acc = {t: IRBuilder.name(f"acc{t}", T.alloc_buffer((rows, step), k.sum_dtype)) for t in steps}
                clear(acc)
                if narrow:
                    part = {t: IRBuilder.name(f"part{t}", T.alloc_buffer((rows, step), NARROW)) for t in steps}
                    in_chunks(n_in // step, partial(add_chunk, acc, part))
                else:
                    accumulate(acc, 0, n_in // step)
                summed = fold_halves(acc) if k.integer_sums else step
                with T.unroll(rows) as ji:
                    IRBuilder.name("ji", ji)
                    row = jo * rows + ji
                    for t in steps:
                        total = acc[t][ji, 0]
                        for lane in range(1, summed):
                            total = total + acc[t][ji, lane]
                        T.buffer_store(a[ys[t]], layer_output(k, total, a, row), [row])

    return built(k, body, noalias=True)


def _narrow_lanes(k: DenseKernel, lanes: int) -> int:
    """Partial sums per row of an int8 dense layer over spikes summed in int16 (`narrow_sums`): a NEON vector of int8
    weights, 16, or 8 when the inputs come in multiples of 8 only; 0 (none) otherwise."""
    if not narrow_sums(k, lanes):
        return 0
    step = math.gcd(k.in_features, 4 * NEON_LANES)
    return step if step >= 2 * NEON_LANES else 0


def accumulate_dense(k: AccumulateDenseKernel, lanes: int) -> tirx.PrimFunc:
    """For each tile of outputs (in parallel when the layer is large): zero the tile's accumulators (one per step,
    small enough to stay on the stack), walk the inputs, and for an active one add its contiguous row of W^T into
    the accumulators of the steps where it is active (vectorized along the outputs); then add the bias and store,
    or run the neuron epilogue. Over bit-packed spikes the inputs are walked word by word (`_walk_words`), which
    gains most at low spike rates (docs/benchmarks.md, part 3).

    The loop over inputs branches on data, which a TE compute cannot say, so the kernel is written with the IR
    builder; it has no scalar temporaries in vectorized loops (see the TVM notes).
    """
    n_in, n_out, steps = k.in_features, k.out_features, k.steps
    # int16 partial sums hold twice the lanes of a vector of floats, and wider tiles test each input fewer times:
    # 8 float vectors' worth (on NEON 128 outputs, 16 registers of sums) took 0.40 instructions per row addition
    # against 0.79 with 2 (bench/compressed_arm.py)
    width = vector_tile(n_out, 8 * lanes if k.integer_sums else lanes, MAX_TILE_FLOATS // steps)
    loop = T.parallel if n_in * n_out >= PARALLEL_MIN_WORK else T.serial

    def body(a: dict[str, tirx.Buffer]) -> None:
        xs, w = [a[name] for name in k.step_names("x")], a["w"]

        def walk(first: int | ir.Expr, count: int, add_row: Callable[..., None]) -> None:
            """Adds the rows of the active inputs among inputs [first, first + count) (`first`: a whole word)."""
            if k.packed:
                _walk_words(xs[0], first // WORD_BITS, words(count), lambda row: add_row(0, row))
            else:
                with T.serial(count) as i:
                    IRBuilder.name("k", i)
                    _add_active_rows(xs, i if isinstance(first, int) and first == 0 else first + i, add_row)

        with loop(n_out // width) as jo:
            IRBuilder.name("jo", jo)
            acc = IRBuilder.name("acc", T.alloc_buffer((steps, width), k.sum_dtype))
            with T.grid(steps, width) as (t, ji):
                IRBuilder.name_many(["t", "ji"], [t, ji])
                T.buffer_store(acc, zero(k.sum_dtype), [t, ji])

            def add_row(t: int, row: ir.Expr) -> None:
                """acc[t] += row `row` of W^T."""
                with T.vectorized(width) as ji:
                    IRBuilder.name("ji", ji)
                    T.buffer_store(acc, acc[t, ji] + summand(k, w[row, jo * width + ji]), [t, ji])

            if k.integer_sums:
                _narrow_chunks(k, w, acc, jo, width, walk)
            else:
                walk(0, n_in, add_row)
            _store(k, a, acc, jo, width)

    return built(k, body)


def _narrow_chunks(
    k: AccumulateDenseKernel, w: tirx.Buffer, acc: tirx.Buffer, jo: tirx.Var, width: int, walk: Callable[..., None]
) -> None:
    """The input loop of an int8 accumulate-only layer: the rows of each `NARROW_ROWS` inputs are added into int16
    partial sums, and those into the int32 sums `acc`. A vector add then takes twice the weights (on NEON one
    `saddw` adds 8 int8 weights into 8 int16 sums), and the sums stay exact: `NARROW_ROWS` weights of at most 127 in
    magnitude never leave int16's range."""
    part = IRBuilder.name("part", T.alloc_buffer((k.steps, width), NARROW))

    def add_row(t: int, row: ir.Expr) -> None:
        with T.vectorized(width) as ji:
            IRBuilder.name("ji", ji)
            T.buffer_store(part, part[t, ji] + tirx.Cast(NARROW, w[row, jo * width + ji]), [t, ji])

    def chunk(first: int | ir.Expr, count: int) -> None:
        with T.grid(k.steps, width) as (t, ji):
            IRBuilder.name_many(["t", "ji"], [t, ji])
            T.buffer_store(part, tirx.const(0, NARROW), [t, ji])
        walk(first, count, add_row)
        for t in range(k.steps):
            with T.vectorized(width) as ji:
                IRBuilder.name("ji", ji)
                T.buffer_store(acc, acc[t, ji] + tirx.Cast(k.sum_dtype, part[t, ji]), [t, ji])

    in_chunks(k.in_features, chunk)


def _add_active_rows(xs: list[tirx.Buffer], i: tirx.Var, add_row: Callable[..., None]) -> None:
    """Adds row `i` into the accumulators of the steps whose input `i` is active; with several steps, the row is
    skipped at once when no step's input is active (each row then read once for every step)."""
    zero = tirx.const(0, SPIKE)

    def per_step() -> None:
        for t, x in enumerate(xs):
            with T.If(x[i] != zero), T.Then():
                add_row(t, i)

    if len(xs) == 1:
        per_step()
        return
    active = xs[0][i]
    for x in xs[1:]:
        active = active | x[i]
    with T.If(active != zero), T.Then():
        per_step()


def _walk_words(x: tirx.Buffer, first: int | ir.Expr, n_words: int, add_row: Callable[..., None]) -> None:
    """The input loop of the accumulate-only kernel over `n_words` words of bit-packed spikes `x` (one step) from
    word `first`: a zero word skips its 32 inputs at once; a non-zero one is walked from its lowest set bit up
    (count trailing zeros, then clear that bit), so rows are added in increasing input order, as over bytes, and the
    sums are the same floats. The bits of the last word past the last input must be 0, as the "bits" dtype says:
    they would index rows past W^T."""
    zero = tirx.const(0, BITS)
    left = IRBuilder.name("left", T.alloc_buffer((1,), BITS))
    with T.serial(n_words) as word:
        IRBuilder.name("word", word)
        if not (isinstance(first, int) and first == 0):
            word = first + word
        T.buffer_store(left, x[word], [0])
        with T.While(left[0] != zero):
            lowest = tirx.call_llvm_pure_intrin(BITS, "llvm.cttz", left[0], tirx.const(True, "bool"))
            add_row(word * WORD_BITS + tirx.Cast("int32", lowest))
            T.buffer_store(left, left[0] & (left[0] - tirx.const(1, BITS)), [0])


def _store(k: AccumulateDenseKernel, a: dict[str, tirx.Buffer], acc: tirx.Buffer, jo: tirx.Var, width: int) -> None:
    """Stores a tile of the accumulate-only kernel's sums plus bias: each step's `y` in a loop of its own, or through
    the neuron epilogue (`neuron_values`, from the state and per-neuron parameters loaded at each output). The
    family's temporaries (`masic.codegen.tir.neuron`) are copied for the whole tile first, a vector's worth."""

    def sums(t: int, ji: tirx.Var) -> ir.Expr:
        return layer_output(k, acc[t, ji], a, jo * width + ji)

    if k.neuron is None:
        for t, y in enumerate(k.step_names("y")):
            with T.vectorized(width) as ji:
                IRBuilder.name("ji", ji)
                T.buffer_store(a[y], sums(t, ji), [jo * width + ji])
        return
    definition = k.neuron.definition
    old = {name: IRBuilder.name(old_block(name), T.alloc_buffer((width,), FLOAT)) for name in definition.temporaries}
    if old:
        with T.vectorized(width) as ji:
            IRBuilder.name("ji", ji)
            for name, copy in old.items():
                T.buffer_store(copy, a[name][jo * width + ji], [ji])
    with T.vectorized(width) as ji:
        IRBuilder.name("ji", ji)
        out = jo * width + ji
        state = {name: old[name][ji] if name in old else a[name][out] for name in definition.state_names}
        per_neuron = {name: a[name][out] for name, value in k.neuron.params if value is None}
        for name, value in neuron_values(k, k.neuron, sums(0, ji), state, per_neuron).items():
            T.buffer_store(a[name], value, [out])
