"""What the TIR builders share: the plain C calling convention, element types, tile sizes and the thresholds
that decide when a kernel runs in parallel, and the frame of a kernel written with TVM's IR builder."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tvm import ir, s_tir, te, tirx
from tvm.s_tir.schedule import SBlockRV
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from masic.codegen.kernels import FLOAT, INT8, Kernel
from masic.codegen.kernels.args import WeightArgs
from masic.codegen.tir.arith import f32, no_contract

# Accumulator tiles above this many floats would turn into workspace allocations (TVM heap-allocates internal
# buffers of 1 KiB or more); stay below it.
MAX_TILE_FLOATS = 255
# Accumulator vectors per tile: enough independent FMAs to hide latency, few enough to stay in registers.
MAX_ACC_VECTORS = 16
# Element-wise loops shorter than this many elements run on one thread: a parallel launch costs more than the
# work it would share.
PARALLEL_MIN_ELEMENTS = 1 << 15
# Likewise reductions (conv, dense, pooling) of fewer multiply-accumulates: waking the pool for a 64x8x8 max pool
# made it far slower than on one thread (bench/speed), while a 1024x1024 dense gains from a second core.
PARALLEL_MIN_WORK = 1 << 16

# int8 weights over spikes on NEON sum in int16 (`narrow_product`), in chunks of at most NARROW_ROWS terms per lane,
# then in int32: 256 * 127 = 32512 stays in int16's range (and a chunk is whole words of bit-packed spikes)
NARROW = "int16"
NARROW_ROWS = 256
NEON_LANES = 4  # float32 lanes of the targets (aarch64) whose int8 layers over spikes sum in int16 chunks

# Block names the schedules refer to: each is the name of the TE compute (or IR-builder block) that makes it
OUTPUT_BLOCK = "y"  # stores a kernel's output: the layer's y, or its neuron's output (`neuron.output_stage`)
ACC_BLOCK = "acc"  # a layer's sums, before bias and epilogue


def to_c_abi(func: tirx.PrimFunc, symbol: str, arg_names: Sequence[str], noalias: bool = True) -> tirx.PrimFunc:
    """Give a PrimFunc whose parameters are buffers (`te.create_prim_func`, the IR builder) the plain C calling
    convention.

    Every BufferType parameter becomes a typed `float*` parameter plus a `DeclBuffer` over it (what the old
    MakeUnpackedAPI did); `calling_conv: 1` then makes MakePackedAPI leave the function alone, so LLVM emits
    `int32_t symbol(float*, ...)` with no TVM-FFI symbols. `arg_names[k]` names the pointer for the k-th buffer;
    buffers with the same name share one pointer (in-place update), and pointers appear in order of first use.
    Aliasing buffers require `noalias=False`.
    """
    if len(arg_names) != len(func.params):
        raise ValueError(f"{symbol}: {len(arg_names)} names for {len(func.params)} buffers")
    pointers: dict[str, tirx.Var] = {}
    decls = []
    for name, buf in zip(arg_names, func.params, strict=True):
        if name not in pointers:
            pointers[name] = tirx.Var(name, ir.PointerType(ir.PrimType(buf.dtype)))
        decls.append(tirx.DeclBuffer(buf, data=pointers[name]))
    attrs = func.attrs if noalias else func.without_attr("tirx.noalias").attrs
    plain = tirx.PrimFunc(list(pointers.values()), tirx.SeqStmt([*decls, func.body]), ir.PrimType("int32"), attrs)
    return plain.with_attr({"calling_conv": 1, "global_symbol": symbol})


def built(k: Kernel, body: Callable[[dict[str, tirx.Buffer]], None], noalias: bool = False) -> tirx.PrimFunc:
    """The plain-C-ABI PrimFunc of a kernel whose loops `body` writes with TVM's IR builder, for what a TE compute
    cannot say (one statement per timestep, branches on data). `body` gets the kernel's arguments as buffers of
    their shapes and types, by name, and runs inside the function's frame (naming its loop variables and buffers
    with `IRBuilder.name`); `noalias` declares that no two arguments overlap."""
    with IRBuilder() as builder, T.prim_func(is_private=True):
        T.func_name("main")
        if noalias:
            T.func_attr({"tirx.noalias": True})
        args = {name: T.arg(name, T.Buffer(shape, k.arg_dtype(name))) for name, shape in k.arg_shapes().items()}
        body(args)
    return to_c_abi(builder.get(), k.symbol, k.arg_names())


def placeholder(k: Kernel, name: str) -> te.Tensor:
    """The tensor of argument `name`, in its element type."""
    return te.placeholder(k.arg_shapes()[name], k.arg_dtype(name), name=name)


def dtype_of(value: ir.Expr) -> str:
    """The element type of an expression (a tensor element, `x[i]`, names it `dtype`; other expressions `ty`)."""
    return str(getattr(value, "dtype", None) or value.ty)


def as_type(dtype: str, value: ir.Expr) -> ir.Expr:
    """`value` stored as `dtype`: a 0.0 / 1.0 spike as a byte."""
    return value if dtype_of(value) == dtype else tirx.Cast(dtype, value)


def as_float(value: ir.Expr) -> ir.Expr:
    """A loaded element as float32: a spike's byte reads as 0.0 or 1.0."""
    return as_type(FLOAT, value)


def vector_tile(extent: int, lanes: int, limit: int | None = None) -> int:
    """The divisor of `extent` (at most 4 vectors wide, and at most `limit`) that fills vector registers best, the
    widest on ties (wider tiles share each weight broadcast across more lanes, a few percent on a 64->64 conv with 16
    lanes).

    Tiles must divide the loop: a split with a remainder leaves a predicate in the loop body, and TVM's vectorizer
    then scalarises the whole loop. A tile that is not a multiple of `lanes` (e.g. 28 columns with 16 lanes, or 13
    with 4) still vectorizes; LLVM splits it into full and partial vector operations.
    """
    divisors = [d for d in range(1, min(extent, 4 * lanes, limit or extent) + 1) if extent % d == 0]
    return max(divisors, key=lambda d: (d / (math.ceil(d / lanes) * lanes), d))


def zero(dtype: str) -> ir.Expr:
    """0 of an accumulator's type."""
    return f32(0.0) if dtype == FLOAT else tirx.const(0, dtype)


def summand(k: WeightArgs, value: ir.Expr) -> ir.Expr:
    """A loaded input or weight element in the type of the layer's sums (`WeightArgs.sum_dtype`): float32 (a
    spike's byte reads as 0.0 or 1.0, a float16 or int8 weight converts exactly), or int32 for int8 layers over
    spikes."""
    return as_type(k.sum_dtype, value)


def product(k: WeightArgs, x: ir.Expr, w: ir.Expr) -> ir.Expr:
    """One term of a layer's sum, input `x` times weight `w`, in the sums' type."""
    return summand(k, x) * summand(k, w)


def narrow_product(x: ir.Expr, w: ir.Expr) -> ir.Expr:
    """A spike `x` (0 or 1, read as int8) times an int8 weight `w`, as int16: NEON multiply-adds 8 or 16 of them
    into int16 sums per instruction (`smlal`/`smlal2`), twice the lanes of a float32 `fmla`."""
    return tirx.Cast(NARROW, as_type(INT8, x)) * tirx.Cast(NARROW, w)


def narrow_sums(k: WeightArgs, lanes: int) -> bool:
    """Whether the layer sums in int16 chunks (`NARROW_ROWS`): int8 weights over spikes on NEON. Other targets keep
    their sums (x86-64 has no int8 x int8 -> int16 multiply-add of a broadcast byte; its int32 multiply is slow)."""
    return lanes == NEON_LANES and k.weight_dtype == INT8 and k.spike_inputs()


def in_chunks(count: int, chunk: Callable[[int | ir.Expr, int], None]) -> None:
    """Calls `chunk(first, size)` for consecutive chunks of `NARROW_ROWS` of `count` terms (a serial loop over the
    whole ones, then the rest), the int16 partial sums' range."""
    full, tail = divmod(count, NARROW_ROWS)
    if full:
        with T.serial(full) as c:
            IRBuilder.name("chunk", c)
            chunk(c * NARROW_ROWS, NARROW_ROWS)
    if tail:
        chunk(full * NARROW_ROWS, tail)


def layer_output(k: WeightArgs, total: ir.Expr, params: Mapping[str, Any], channel: ir.Expr) -> ir.Expr:
    """A layer's output at output channel `channel` from its sum `total` there: int8 weights scale it first,
    float32(total) * scale, rounded on its own (fenced: the kernels must not fuse it with the bias add, as
    `masic.ir.weight_formats.int8_output` does not); then the bias. `params` holds the `scale` and `b` tensors or
    buffers, those the kernel takes."""
    value = no_contract(as_float(total) * params["scale"][channel]) if k.weight_dtype == INT8 else total
    return value + params["b"][channel] if k.bias else value


def tile(extent: int, preferred: int) -> int:
    """Largest tile <= preferred that divides `extent` (no predicated tail), or `extent` if smaller."""
    if extent <= preferred:
        return extent
    return max(t for t in range(1, preferred + 1) if extent % t == 0)


def vectorize_flat(sch: s_tir.Schedule, block: SBlockRV, lanes: int, n: int) -> None:
    """Fuse all loops of an element-wise block, vectorize by a divisor tile, parallelise big loops."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    width = vector_tile(n, lanes)
    if width == 1:
        return
    outer, inner = sch.split(fused, [None, width])
    if n >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)
    sch.vectorize(inner)
