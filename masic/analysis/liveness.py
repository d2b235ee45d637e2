"""Liveness of the buffers of one block of timesteps, over its positions.

A position is one kernel call: (node, step of the block). With `schedule.block == 1` the positions are the nodes in
order; with a block of B steps they run layer-major: every node for steps 0..B-1 before the next node. Every value
then exists once per step (`Graph.value_copy`: shown `name@t`, with no suffix when B == 1).

A buffer is live over [start, end):
- resident weights are pinned: live over every position of every block ([0, P));
- neuron state is pinned too, as it carries over steps and blocks, unless states are transient
  (`masic.ir.graph.transient_states`): when one block covers the whole run (block >= timesteps) and no delay
  carries a value across steps, each node's state is needed only while that node runs its steps, so it lives
  like a streamed weight's slot, from `prefetch` positions before the node's first position to its last, and the
  loading thread fills it with its initial value once per block (which is once per sample: such a plan runs one
  block only);
- a streamed weight has a slot, live from `prefetch` positions before its first reader (the loading thread fills
  it meanwhile) to its last reader;
- an activation lives from the position that writes it to the last position that reads it (inclusive); a batched
  node (`Graph.batched`) reads and writes every step's copy at its first position;
- the steps' inputs live from 0, their outputs until P (the loader writes and reads them outside the block);
- kernel scratch (`OpDef.scratch`, by `masic.ir.ops.scratch_type`, the size the kernel's own description takes
  too) lives only inside its position ([p, p+1)).
Three kinds of values own no buffer of their own:
- the output of a conv or dense layer with a fused neuron (`Graph.elided`) exists only in the fused kernel's
  registers; the neuron's calls, its output's writes and its state's use are at the layer's positions
  (`Graph.call_position`);
- views (`OpDef.view`: flatten, reshape) alias their operand's buffer, extending its lifetime to their own last use;
- neuron updates run in place: a neuron whose operand dies at it (no later reader, not a view of a value that is
  read later) and has the output's size in bytes writes its output over that operand. Neuron kernels read x[j]
  before writing out[j] and are compiled without `noalias`, so this is safe; it would not be for a one-byte
  spike output over a float32 operand: a parallel task's output bytes would overwrite another task's inputs
  (nor for bits: a word holds 32 neurons' spikes), so operand and output must also be of one type. Nor does a
  family with temporaries (`NeuronFamily.temporaries`, whose kernels copy old states into registers first) run in
  place: built in one module with other kernels, its LLVM code (TVM 0.27) has been seen with `noalias` pointer
  arguments, loading x again after the output's store (the states stored after it read x: i' = i + x).
  Such families are all spiking, so this only concerns a probe of one (an output of one byte or bit per neuron
  never lies over a float32 operand anyway).

`lower_bound` is the peak over positions of the bytes live at once, each buffer rounded up to the alignment:
no placement can use a smaller arena.
"""

from __future__ import annotations

from dataclasses import dataclass

from masic.ir import names
from masic.ir.graph import Buffer, Graph, Node, transient_states
from masic.ir.names import BufferId
from masic.ir.neurons import FAMILIES
from masic.ir.ops import OPS, neuron_op, state_names, state_type


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


@dataclass(frozen=True)
class Liveness:
    buffers: tuple[Buffer, ...]
    values: tuple[tuple[BufferId, BufferId], ...]  # value copy, state, or parameter -> the buffer holding it
    lower_bound: int


def analyse(graph: Graph, alignment: int = 16) -> Liveness:
    order = graph.positions()
    n = len(order)
    streamed = set(graph.schedule.streamed)
    last_read: dict[BufferId, int] = {}
    param_uses: dict[str, list[int]] = {}
    for p, (node, t) in enumerate(order):
        call = graph.call_position(p, node, t)
        last_read.setdefault(graph.value_copy(node.name, t), -1)
        for value in node.inputs:
            last_read[graph.value_copy(value, t)] = call
        for _, ref in node.param_refs():
            param_uses.setdefault(ref.name, []).append(call)
    for t in range(graph.schedule.block):
        last_read[graph.value_copy(graph.output, t)] = n
    transient = transient_states(graph)

    buffers: list[Buffer] = []
    values: list[tuple[BufferId, BufferId]] = []
    for param in graph.params:
        uses = param_uses.get(param.name, [0])
        start, end = (max(0, min(uses) - graph.schedule.prefetch), max(uses) + 1) if param.name in streamed else (0, n)
        ident = names.param(param.name)
        buffers.append(Buffer(ident, "weight", param.type.nbytes, start, end))
        values.append((ident, ident))

    root: dict[BufferId, BufferId] = {}  # value copy -> the value copy whose buffer holds it
    end: dict[BufferId, int] = {}  # buffer-owning copy -> end of its lifetime
    start: dict[BufferId, tuple[int, Node]] = {}
    for p, (node, t) in enumerate(order):
        name, call = graph.value_copy(node.name, t), graph.call_position(p, node, t)
        definition = OPS[node.op]
        if t == 0:  # the same for every step
            scratch = definition.scratch(node, tuple(graph.node(v).type for v in node.inputs))
        if scratch:
            buffers.append(Buffer(graph.copy(names.scratch(node.name), t), "scratch", scratch.nbytes, p, p + 1))
        if graph.elided(node.name):
            continue
        operand = graph.value_copy(node.inputs[0], t) if node.inputs else None
        if operand is not None and (
            definition.view or (neuron_op(node.op) and _in_place(graph, node, end, root, operand, p))
        ):
            root[name] = root[operand]
        else:
            root[name] = name
            start[name] = (0 if definition.graph_input else call, node)
        owner = root[name]
        # last_read covers every reader of every copy, so each buffer's end is known once its owner is placed.
        end[owner] = max(end.get(owner, 0), last_read[name] + 1, call + 1)
        values.append((name, owner))
        if neuron_op(node.op) and t == 0:
            # A node's calls are at call..call+block-1 (layer-major), and only they read or write its state.
            lifetime = (max(0, call - graph.schedule.prefetch), call + graph.schedule.block) if transient else (0, n)
            for state in state_names(node):
                buffers.append(Buffer(state, "state", state_type(node).nbytes, *lifetime))
                values.append((state, state))
    io = {root[graph.value_copy(graph.output, t)] for t in range(graph.schedule.block)}
    io |= {owner for owner, (_, node) in start.items() if OPS[node.op].graph_input}
    for owner, (begin, node) in start.items():
        kind = "io" if owner in io else "activation"
        buffers.append(Buffer(owner, kind, node.type.nbytes, begin, min(end[owner], n)))
    return Liveness(tuple(buffers), tuple(values), peak_live_bytes(buffers, alignment))


def _in_place(
    graph: Graph, node: Node, end: dict[BufferId, int], root: dict[BufferId, BufferId], operand: BufferId, p: int
) -> bool:
    """Whether a neuron at position p may write its output over its operand (see the module's docstring)."""
    if graph.elided(node.inputs[0]) or FAMILIES[node.op].temporaries:  # never stored; see the module docstring
        return False
    operand_type = graph.node(node.inputs[0]).type
    # of one type: a word of bits packs 32 neurons, whose operands lie beyond the word (a float32 operand of 1
    # neuron is as large as its bits, but sizes alone would not say so for more)
    same = operand_type.nbytes == node.type.nbytes and operand_type.dtype == node.type.dtype
    return same and end[root[operand]] <= p + 1


def peak_live_bytes(buffers: list[Buffer] | tuple[Buffer, ...], alignment: int) -> int:
    """The most bytes live at any one position, each buffer rounded up to the alignment."""
    return peak_live(buffers, alignment)[0]


def peak_live(buffers: list[Buffer] | tuple[Buffer, ...], alignment: int) -> tuple[int, int]:
    """(the most bytes live at any one position, the first position where they are), sizes aligned up."""
    events: dict[int, int] = {}
    for buf in buffers:
        size = align_up(buf.size, alignment)
        events[buf.start] = events.get(buf.start, 0) + size
        events[buf.end] = events.get(buf.end, 0) - size
    live = peak = at = 0
    for position, delta in sorted(events.items()):
        live += delta
        if live > peak:
            peak, at = live, position
    return peak, at
