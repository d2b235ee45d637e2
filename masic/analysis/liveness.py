"""Liveness of one timestep's buffers, over schedule positions 0..N-1 (N = number of nodes).

A buffer is live over [start, end):
- weights and neuron state are pinned: live for the whole step, every step ([0, N)); state carries over steps;
- an activation lives from the node that writes it to the last node that reads it (inclusive);
- the step's input lives from 0, the step's output until N (the loader writes and reads them outside the step);
- kernel scratch lives only inside its node ([p, p+1)).
Two kinds of values own no buffer of their own:
- views (flatten) alias their operand's buffer, extending its lifetime to their own last use;
- neuron updates run in place: a neuron whose operand dies at it (no later reader, not a view of a value that is
  read later) writes its output over that operand. Neuron kernels read x[j] before writing out[j] and are
  compiled without `noalias`, so this is safe.

`lower_bound` is the peak over positions of the bytes live at once, each buffer rounded up to the alignment:
no placement can use a smaller arena.
"""

from __future__ import annotations

from dataclasses import dataclass

from masic.ir.graph import Buffer, Graph, Node
from masic.ir.ops import neuron_op, state_names

VIEW_OPS = ("flatten", "reshape")


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def scratch_bytes(node: Node, operand_bytes: int, operand_shape: tuple[int, ...]) -> int:
    """Workspace a node's kernel needs: a padded copy of the input for padded convolutions and pools."""
    if node.op in ("conv2d", "maxpool2d", "avgpool2d", "sumpool2d"):
        ph, pw = node.attr("padding")
        if ph or pw:
            c, h, w = operand_shape
            return c * (h + 2 * ph) * (w + 2 * pw) * (operand_bytes // (c * h * w))
    return 0


@dataclass(frozen=True)
class Liveness:
    buffers: tuple[Buffer, ...]
    values: tuple[tuple[str, str], ...]  # value, state, or @parameter -> buffer name
    lower_bound: int


def _last_reads(graph: Graph) -> dict[str, int]:
    """Position of the last node reading each value (the graph output counts as read at N)."""
    last = {node.name: -1 for node in graph.nodes}
    for p, node in enumerate(graph.nodes):
        for value in node.inputs:
            last[value] = p
    last[graph.output] = len(graph.nodes)
    return last


def analyse(graph: Graph, alignment: int = 16) -> Liveness:
    n = len(graph.nodes)
    last_read = _last_reads(graph)
    root: dict[str, str] = {}  # value -> the value whose buffer holds it
    end: dict[str, int] = {}  # buffer-owning value -> end of its lifetime
    start: dict[str, int] = {}
    buffers: list[Buffer] = []
    values: list[tuple[str, str]] = []

    for param in graph.params:
        buffers.append(Buffer(f"@{param.name}", "weight", param.type.nbytes, 0, n))
        values.append((f"@{param.name}", f"@{param.name}"))
    for p, node in enumerate(graph.nodes):
        operand = node.inputs[0] if node.inputs else None
        if operand is not None and (node.op in VIEW_OPS or (neuron_op(node.op) and end[root[operand]] <= p + 1)):
            root[node.name] = root[operand]
        else:
            root[node.name] = node.name
            start[node.name] = 0 if node.op == "input" else p
        owner = root[node.name]
        end[owner] = max(end.get(owner, 0), last_read[node.name] + 1, p + 1)
        for value in node.inputs:
            end[root[value]] = max(end[root[value]], p + 1)
        values.append((node.name, owner))
        if neuron_op(node.op):
            for state in state_names(node):
                buffers.append(Buffer(state, "state", node.type.nbytes, 0, n))
                values.append((state, state))
        if operand is not None:
            operand_type = graph.node(operand).type
            scratch = scratch_bytes(node, operand_type.nbytes, operand_type.shape)
            if scratch:
                buffers.append(Buffer(f"{node.name}.scratch", "scratch", scratch, p, p + 1))
    io = {root[graph.output], *(node.name for node in graph.inputs)}
    for owner, begin in start.items():
        kind = "io" if owner in io else "activation"
        buffers.append(Buffer(owner, kind, graph.node(owner).type.nbytes, begin, min(end[owner], n)))
    return Liveness(tuple(buffers), tuple(values), peak_live_bytes(buffers, alignment))


def peak_live_bytes(buffers: list[Buffer] | tuple[Buffer, ...], alignment: int) -> int:
    """The most bytes live at any one position, each buffer rounded up to the alignment."""
    events: dict[int, int] = {}
    for buf in buffers:
        size = align_up(buf.size, alignment)
        events[buf.start] = events.get(buf.start, 0) + size
        events[buf.end] = events.get(buf.end, 0) - size
    live = peak = 0
    for _, delta in sorted(events.items()):
        live += delta
        peak = max(peak, live)
    return peak
