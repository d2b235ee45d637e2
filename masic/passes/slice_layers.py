"""slice-layers{budget}: split layers whose weights are too large for the budget into pieces that stream.

A dense layer is split along its output neurons, a conv2d (groups = 1) along its output channels, into pieces of at
most L bytes of weight each (never less than one output row or channel); each piece is a layer of its own with its
own weight (and bias) slices, and a `concat` joins their outputs in order, keeping the original layer's name so its
users are unchanged. The piece size L follows from the budget: the largest power of two for which the plan with
every weight streamed (the smallest plan the schedule pass can make, as placed) fits the budget; when none fits,
the finest slicing is kept and the schedule pass refuses the budget. Candidates do not depend on the budget, so a
budget that fits with some slicing lets every larger budget fit too.

Requires: typed graph without batchnorm2d.
Ensures: with a budget, every weight of a dense or ungrouped conv2d is at most L bytes or one output row / channel
(at most MAX_PIECES pieces per layer);
the graph computes exactly the same values (each output by the same arithmetic as before).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from math import ceil

import numpy as np

from masic.ir.graph import Graph, Node, ParamRef, Schedule
from masic.ir.ops import OPS
from masic.passes.assign_offsets import arena_bytes
from masic.passes.base import PassOptions

NAME = "slice-layers"
MAX_PIECES = 64  # per layer: finer slicing costs a kernel call and a concat copy per piece for little memory


def _sliceable(node: Node) -> bool:
    return node.op == "dense" or (node.op == "conv2d" and node.attr("groups") == 1)


def _split(node: Node, graph: Graph, pieces: int, weights: dict[str, np.ndarray]) -> list[Node]:
    """The pieces of a layer (outputs split as evenly as possible) and the concat that joins them."""
    rows = graph.param(node.attr("weight").name).type.shape[0]
    bounds = np.linspace(0, rows, pieces + 1).astype(int)
    count_key = "out_features" if node.op == "dense" else "out_channels"
    operand_type = graph.node(node.inputs[0]).type
    parts = []
    for index, (lo, hi) in enumerate(pairwise(bounds)):
        changes: dict[str, object] = {count_key: int(hi - lo)}
        for key in ("weight", "bias"):
            ref = node.attr(key)
            if isinstance(ref, ParamRef):
                weights[f"{ref.name}.part{index}"] = graph.weights[ref.name][lo:hi]
                changes[key] = ParamRef(f"{ref.name}.part{index}")
        part = replace(node.with_attrs(**changes), name=f"{node.name}.part{index}", type=None)
        loc = f"{node.loc} part {index + 1}/{pieces}".strip()
        parts.append(replace(part, type=OPS[node.op].infer(part, (operand_type,)), loc=loc))
    concat = Node(node.name, "concat", tuple(p.name for p in parts), (), node.type, node.loc)
    return [*parts, concat]


def slice_to(graph: Graph, limit: int) -> Graph:
    """The graph with every sliceable layer cut into pieces of at most `limit` weight bytes (or one row each)."""
    weights: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        weight = graph.param(node.attr("weight").name).type if _sliceable(node) else None
        pieces = min(weight.shape[0], ceil(weight.nbytes / limit)) if weight and weight.nbytes > limit else 1
        nodes += _split(node, graph, pieces, weights) if pieces > 1 else [node]
    return graph.with_params(weights).with_nodes(nodes) if weights else graph


def candidate_limits(graph: Graph) -> list[int]:
    """Piece sizes to try, coarsest first: powers of two from the largest sliceable weight down to one row, or to
    1/MAX_PIECES of the largest weight."""
    weights = [graph.param(n.attr("weight").name).type for n in graph.nodes if _sliceable(n)]
    if not weights:
        return []
    largest = max(w.nbytes for w in weights)
    smallest_row = min(w.nbytes // w.shape[0] for w in weights)
    limits, limit = [], 1 << max(largest - 1, 1).bit_length()
    while limit >= max(smallest_row, largest // MAX_PIECES, 1):
        limits.append(limit)
        limit //= 2
    return limits


def smallest_plan_bytes(graph: Graph, alignment: int, budget: int | None = None) -> int:
    """Arena of the smallest plan the schedule pass can make of this graph: every weight streamed, one step per
    block."""
    everything = Schedule(1, tuple(p.name for p in graph.params))
    return arena_bytes(replace(graph, schedule=everything), alignment, budget)


def run(graph: Graph, options: PassOptions) -> Graph:
    if options.budget is None:
        return graph
    capacity = options.capacity
    limits = candidate_limits(graph)
    if not limits or smallest_plan_bytes(graph, options.alignment, capacity) <= capacity:
        return graph
    # Coarsest first: fewer pieces mean fewer, larger reads. Placement heights are not monotone in the piece size,
    # so candidates are tried in turn rather than bisected; the finest is kept when none fits.
    for limit in limits:
        sliced = slice_to(graph, limit)
        if smallest_plan_bytes(sliced, options.alignment, capacity) <= capacity:
            break
    return sliced
