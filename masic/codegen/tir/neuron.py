"""Neuron updates as TIR: the output stage every layer kernel ends with (a fused neuron's update, or a plain store),
the neuron kernel, and the neuron kernel that packs its spikes into bits.

The update is the family's own (`masic.ir.neurons`), run by the TIR backend (`masic.codegen.tir.arith`): the same
float32 operations in the same order as the reference interpreter, so the kernels reproduce it bit for bit.

Each stored value is a block of its own, and the blocks share one loop nest (`merge_stores`): at each element the
output is stored, then each state in place over its old value. A family whose values read a state after it is
stored (`NeuronFamily.temporaries`) first copies that state's old value in a block `old_<state>`, and every value
reads the copy. Once the kernel's loops are scheduled, `OutputStage.place_copies` moves each copy into the stores'
loop nest, just outside their vectorised loop (one vector of old values, copied as a vector) or inside their
innermost loop (one element): the copy's buffer is then that small, registers, never an array. (Merged into the
stores' loop like them, a copy would be compacted to one element even where the loop is vectorised, and TVM's
vectoriser then stores every lane into that element.) Families without temporaries get exactly the kernels they
had before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tvm import ir, s_tir, te, tirx
from tvm.s_tir.schedule import SBlockRV

from masic.codegen.kernels import BITS, FLOAT, Kernel, NeuronKernel
from masic.codegen.tir.arith import f32, num
from masic.codegen.tir.common import (
    OUTPUT_BLOCK,
    PARALLEL_MIN_ELEMENTS,
    as_float,
    as_type,
    placeholder,
    to_c_abi,
    vectorize_flat,
)
from masic.ir.graph import WORD_BITS, words


def next_block(state: str) -> str:
    """The block storing a neuron's new value of `state`."""
    return f"next_{state}"


def old_block(state: str) -> str:
    """The block copying the old value of `state`, a temporary of its family."""
    return f"old_{state}"


def _copy(buffer: te.Tensor) -> Callable[..., ir.Expr]:
    return lambda *index: buffer[index]


def state_reads(neuron: NeuronKernel, state: dict[str, te.Tensor]) -> tuple[dict[str, te.Tensor], list[str]]:
    """What the stored values read for each state (the state's own tensor, or for a temporary of the family the
    copy of its old value), and the blocks making the copies (`place_copies` puts them in place)."""
    temporaries = neuron.definition.temporaries
    copies = {name: te.compute(state[name].shape, _copy(state[name]), name=old_block(name)) for name in temporaries}
    return {name: copies.get(name, tensor) for name, tensor in state.items()}, [old_block(n) for n in temporaries]


def neuron_values(
    k: Kernel, neuron: NeuronKernel, x: ir.Expr, state: dict[str, ir.Expr], per_neuron: dict[str, ir.Expr]
) -> dict[str, ir.Expr]:
    """What a neuron update stores for input `x`, in store order (`NeuronFamily.step`): its output (in the type of
    `k`'s output argument; packed spikes stay 1.0 / 0.0 floats for `packed_spikes`), then each new state. Storing
    in this order updates state in place safely: no stored value reads a state stored before it (the family
    checks it)."""
    definition = neuron.definition
    params = {name: num(per_neuron[name] if value is None else f32(value)) for name, value in neuron.params}
    state_values = {name: num(value) for name, value in state.items()}
    new = definition.step(num(x), state_values, params, dict(neuron.modes))
    output = new[neuron.probe or definition.output].value
    dtype = k.arg_dtype(definition.output)
    stored = output if dtype == BITS else as_type(dtype, output)
    return {definition.output: stored, **{name: new[name].value for name in definition.state_names}}


def merge_stores(sch: s_tir.Schedule, blocks: list[str]) -> SBlockRV:
    """Puts the loop nests of `blocks` (element-wise over one shape) into the first one's, level by level, so that
    one pass over the elements stores every value, and returns the first block, whose loops the kernel's schedule
    then tiles."""
    rvs = [sch.get_sblock(name) for name in blocks]
    if len(rvs) > 1:
        for depth in range(len(sch.get_loops(rvs[0]))):
            sch.merge(*(sch.get_loops(rv)[depth] for rv in rvs))
    return rvs[0]


@dataclass(frozen=True)
class OutputStage:
    """The stage that stores a kernel's results (`output_stage`): the tensors that follow the kernel's inputs
    among the PrimFunc's buffers, their argument names for `to_c_abi` (a new state shares its old state's name, and
    so its pointer: the PrimFunc must then be built without `noalias`), the blocks storing them, `OUTPUT_BLOCK`
    first, and those copying a family's temporaries (`state_reads`)."""

    tensors: list[te.Tensor]
    names: list[str]
    blocks: list[str]
    copies: list[str] = field(default_factory=list)

    def scheduled_block(self, sch: s_tir.Schedule) -> SBlockRV:
        """The output block, with every store in its loop nest (`merge_stores`)."""
        return merge_stores(sch, self.blocks)

    def place_copies(self, sch: s_tir.Schedule) -> None:
        """Once the kernel's loops are scheduled (module docstring)."""
        place_copies(sch, self.copies, self.blocks[0])


def place_copies(sch: s_tir.Schedule, copies: list[str], stores: str) -> None:
    """Moves each copy of a temporary into the loop nest of the block `stores` (module docstring): just outside its
    vectorised loop, the copy vectorised too, or else inside its innermost loop."""
    loops = sch.get_loops(sch.get_sblock(stores))
    vector = next((k for k, loop in enumerate(loops) if sch.get(loop).kind == tirx.ForKind.VECTORIZED), None)
    at = loops[-1] if vector is None else loops[vector - 1]
    for name in copies:
        block = sch.get_sblock(name)
        sch.compute_at(block, at, preserve_unit_loops=True)
        if vector is not None:
            sch.vectorize(sch.get_loops(block)[-1])


def output_stage(
    k: Kernel, shape: tuple[int, ...], value: Callable[..., ir.Expr], neuron: NeuronKernel | None
) -> OutputStage:
    """The stage that stores a kernel's results, `value(*index)` at each index: as `y`, or through `neuron`'s update
    (an epilogue, or the neuron kernel itself), one block per stored value (`neuron_values`)."""
    if neuron is None:
        y = te.compute(shape, lambda *i: as_type(k.arg_dtype("y"), value(*i)), name=OUTPUT_BLOCK)
        return OutputStage([y], ["y"], [OUTPUT_BLOCK])
    definition = neuron.definition
    state = {name: te.placeholder(shape, FLOAT, name=name) for name in definition.state_names}
    per_neuron = {name: te.placeholder(shape, FLOAT, name=name) for name, v in neuron.params if v is None}
    reads, copies = state_reads(neuron, state)

    def stored(name: str) -> Callable[..., ir.Expr]:
        def at(*index: tirx.Var) -> ir.Expr:
            read = {state_name: buf[index] for state_name, buf in reads.items()}
            params = {param: buf[index] for param, buf in per_neuron.items()}
            return neuron_values(k, neuron, value(*index), read, params)[name]

        return at

    names = [definition.output, *definition.state_names]
    blocks = [OUTPUT_BLOCK, *map(next_block, definition.state_names)]
    output, *new_state = (te.compute(shape, stored(n), name=b) for n, b in zip(names, blocks, strict=True))
    return OutputStage(
        [*state.values(), output, *per_neuron.values(), *new_state],
        [*definition.state_names, definition.output, *per_neuron, *definition.state_names],
        blocks,
        copies,
    )


def neuron(k: NeuronKernel, lanes: int) -> tirx.PrimFunc:
    """Element-wise neuron update, state updated in place (`output_stage`).

    Packed spikes are a reduction over each word's 32 neurons, which cannot share a loop with the element-wise
    state update: the words are computed first, from the old state (the same float32 operations, so the same
    spikes), and the state is updated after them.
    """
    x = placeholder(k, "x")
    if not k.packed:
        stage = output_stage(k, (k.n,), lambda j: as_float(x[j]), k)
        sch = s_tir.Schedule(te.create_prim_func([x, *stage.tensors]))
        vectorize_flat(sch, stage.scheduled_block(sch), lanes, k.n)
        stage.place_copies(sch)
        return to_c_abi(sch.mod["main"], k.symbol, ["x", *stage.names], noalias=False)
    definition = k.definition
    states = definition.state_names
    state = {name: te.placeholder((k.n,), FLOAT, name=name) for name in states}
    per_neuron = {name: te.placeholder((k.n,), FLOAT, name=name) for name, value in k.params if value is None}

    reads, copies = state_reads(k, state)

    def new_values(j: ir.Expr, read_from: dict[str, te.Tensor]) -> dict[str, ir.Expr]:
        read = {name: buf[j] for name, buf in read_from.items()}
        return neuron_values(k, k, as_float(x[j]), read, {name: buf[j] for name, buf in per_neuron.items()})

    output = packed_spikes(k, lambda j: new_values(j, state)["z"])  # its own loop, before any state is stored

    def new_state(name: str) -> Callable[[tirx.Var], ir.Expr]:
        return lambda j: new_values(j, reads)[name]

    updates = [te.compute((k.n,), new_state(name), name=next_block(name)) for name in states]
    sch = s_tir.Schedule(te.create_prim_func([x, *state.values(), output, *per_neuron.values(), *updates]))
    if k.n >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(sch.get_loops(sch.get_sblock(OUTPUT_BLOCK))[0])
    vectorize_flat(sch, merge_stores(sch, [next_block(s) for s in states]), lanes, k.n)
    place_copies(sch, copies, next_block(states[0]))
    return to_c_abi(sch.mod["main"], k.symbol, ["x", *states, "z", *per_neuron, *states], noalias=False)


def packed_spikes(k: NeuronKernel, spike: Callable[[ir.Expr], ir.Expr]) -> te.Tensor:
    """The words of a neuron kernel's packed spikes: bit b of word w is the spike (1.0 / 0.0) of neuron 32w + b,
    0 past the last neuron (whose index is clamped, so no load leaves the buffers). Bits are distinct, so their
    sum is their OR."""
    b = te.reduce_axis((0, WORD_BITS), "b")

    def word(w: tirx.Var) -> ir.Expr:
        j = w * WORD_BITS + b
        fired = tirx.all(j < k.n, spike(tirx.min(j, k.n - 1)) > f32(0.0))
        one = tirx.const(1, BITS) << tirx.Cast(BITS, b)
        return te.sum(tirx.Select(fired, one, tirx.const(0, BITS)), axis=b)

    return te.compute((words(k.n),), word, name=OUTPUT_BLOCK)
