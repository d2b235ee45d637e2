"""Liveness of one timestep's buffers, over schedule positions 0..N-1 (N = number of nodes).

A buffer is live over [start, end):
- weights and neuron state are pinned: live for the whole step, every step ([0, N)); state carries over steps;
- an activation lives from the node that writes it to the last node that reads it (inclusive);
- the step's input lives from 0, the step's output until N (the loader reads both outside the step);
- kernel scratch lives only inside its node ([p, p+1)).
Views (flatten) own no buffer: they alias their operand's buffer, extending its lifetime to their own last use.

`lower_bound` is the peak over positions of the bytes live at once, each buffer rounded up to the alignment:
no placement can use a smaller arena.
"""

from __future__ import annotations

from dataclasses import dataclass

from masic.ir.graph import Buffer, Graph, Node
from masic.ir.ops import neuron_op, state_names

VIEW_OPS = ("flatten",)


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def scratch_bytes(node: Node, operand_bytes: int, operand_shape: tuple[int, ...]) -> int:
    """Workspace a node's kernel needs: a padded copy of the input for padded convolutions and pools."""
    if node.op in ("conv2d", "maxpool2d", "avgpool2d"):
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


def analyse(graph: Graph, alignment: int = 16) -> Liveness:
    n = len(graph.nodes)
    position = {node.name: p for p, node in enumerate(graph.nodes)}
    root: dict[str, str] = {}
    end: dict[str, int] = {}
    kinds: dict[str, str] = {}
    sizes: dict[str, int] = {}
    buffers: list[Buffer] = []
    values: list[tuple[str, str]] = []

    for param in graph.params:
        buffers.append(Buffer(f"@{param.name}", "weight", param.type.nbytes, 0, n))
        values.append((f"@{param.name}", f"@{param.name}"))
    for p, node in enumerate(graph.nodes):
        for value in node.inputs:
            end[root[value]] = max(end[root[value]], p + 1)
        if node.op in VIEW_OPS:
            root[node.name] = root[node.inputs[0]]
        else:
            root[node.name] = node.name
            end[node.name] = p + 1
            sizes[node.name] = node.type.nbytes
            kinds[node.name] = "io" if node.op == "input" else "activation"
        values.append((node.name, root[node.name]))
        if neuron_op(node.op):
            for state in state_names(node):
                buffers.append(Buffer(state, "state", node.type.nbytes, 0, n))
                values.append((state, state))
        if node.inputs:
            operand = graph.node(node.inputs[0])
            scratch = scratch_bytes(node, operand.type.nbytes, operand.type.shape)
            if scratch:
                buffers.append(Buffer(f"{node.name}.scratch", "scratch", scratch, p, p + 1))
    out_root = root[graph.output]
    end[out_root] = n
    kinds[out_root] = "io"
    for name, size in sizes.items():
        start = 0 if kinds[name] == "io" and graph.node(name).op == "input" else position[name]
        buffers.append(Buffer(name, kinds[name], size, start, end[name]))
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
