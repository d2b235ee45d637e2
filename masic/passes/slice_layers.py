"""slice-layers{budget}: split layers whose weights are too large for the budget into pieces that stream.

A dense layer is split along its output neurons, a conv2d (groups = 1) along its output channels, into pieces of at
most L bytes of weight each (never less than one output row or channel; a multiple of ROW_QUANTUM rows where that
adds no piece beyond MAX_PIECES, the last piece the rest); each piece is a layer of its own with its own weight (and
bias, and int8 scale) slices, and a `concat` joins their outputs in order, keeping the original layer's name so its
users are unchanged. Nothing is sliced when every weight fits resident. Otherwise the piece size L follows from the
budget: a power of two, preferably at most 1/SLOT_SHARE of the budget (streamed pieces occupy slots, and slot bytes
are bytes no resident weight can have), for which the plan with every weight streamed (the smallest plan the
schedule pass can make, as placed) fits the budget; when none fits, the finest slicing is kept and the schedule pass
refuses the budget. Every candidate is tried before refusing, so every budget from the minimum up fits.

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

from masic.analysis.liveness import align_up
from masic.ir.graph import Graph, Node, ParamRef, Schedule, transient_states
from masic.ir.ops import OPS, state_names, state_type
from masic.passes.assign_offsets import arena_bytes
from masic.passes.base import PassOptions, require_types

NAME = "slice-layers"
MAX_PIECES = 64  # per layer: finer slicing costs a kernel call and a concat copy per piece for little memory
SLOT_SHARE = 16  # preferred pieces are at most this fraction of the budget
# Pieces of this many outputs (a multiple) keep the kernels fast: the layout pass stores conv weights in blocks of
# 16 output channels, and sliced convs of 51 or 103 channels fell back to a kernel 1.3-6x slower (bench/speed).
ROW_QUANTUM = 16
# The most timesteps a block may have (a power of two). A plan holds a copy of every value per step of its block and
# places nodes x block positions, so the planner's time and memory grow with the block: this bounds them whatever T
# is. Beyond it a larger block saves little: streamed weights are read T / block times, 1/64 of T already, and
# the loader can exit early only between blocks.
MAX_BLOCK = 64


def _sliceable(node: Node) -> bool:
    return node.op == "dense" or (node.op == "conv2d" and node.attr("groups") == 1)


def _split(node: Node, graph: Graph, per_piece: int, weights: dict[str, np.ndarray]) -> list[Node]:
    """The pieces of a layer, `per_piece` outputs each (the last one the rest), and the concat that joins them."""
    rows = graph.param(node.attr("weight").name).type.shape[0]
    bounds = [*range(0, rows, per_piece), rows]
    pieces = len(bounds) - 1
    count_key = "out_features" if node.op == "dense" else "out_channels"
    operand_type = graph.node(node.inputs[0]).type
    parts = []
    for index, (lo, hi) in enumerate(pairwise(bounds)):
        changes: dict[str, object] = {count_key: int(hi - lo)}
        for key in ("weight", "bias", "weight_scale"):
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
        if weight and weight.nbytes > limit:
            nodes += _split(
                node, graph, _rows_per_piece(weight.shape[0], weight.nbytes // weight.shape[0], limit), weights
            )
        else:
            nodes.append(node)
    return graph.with_params(weights).with_nodes(nodes) if weights else graph


def _rows_per_piece(rows: int, row_bytes: int, limit: int) -> int:
    """Whole output rows per piece, at most `limit` bytes, evened out over the pieces they make: multiples of
    ROW_QUANTUM when a piece holds that many and the pieces stay within MAX_PIECES."""
    most = max(1, limit // row_bytes)
    aligned = most - most % ROW_QUANTUM
    if aligned and ceil(rows / aligned) <= MAX_PIECES:
        even = ceil(rows / ceil(rows / aligned))
        return even + -even % ROW_QUANTUM  # rounded up, still at most `aligned`
    return ceil(rows / ceil(rows / most))


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


def resident_bytes(graph: Graph, alignment: int, budget: int | None = None) -> int:
    """Arena of the plan with every weight resident, placed as thoroughly as assign-offsets places it without a
    budget, so that a budget equal to that arena keeps that plan (`arena_bytes` explains `budget`)."""
    return arena_bytes(replace(graph, schedule=Schedule()), alignment, budget, thorough=True)


def smallest_plan_bytes(graph: Graph, alignment: int, budget: int | None = None) -> int:
    """Arena of the smallest plan the schedule pass starts from: every weight streamed, over the block sizes it
    tries (`block_sizes`). The pass makes weights resident only from a plan that fits, so this is the smallest
    budget under which it finds a schedule for this graph (unless every weight fits resident, `resident_bytes`).
    With a budget, as for `arena_bytes`, the result is exact only when it exceeds the budget; and a plan whose
    `block_floor` alone exceeds it is not analysed (the floor stands for it)."""
    streamed = tuple(p.name for p in graph.params)
    sizes = []
    for block in block_sizes(graph):
        plan = replace(graph, schedule=Schedule(block, streamed))
        floor = block_floor(plan, alignment)
        sizes.append(floor if budget is not None and floor > budget else arena_bytes(plan, alignment, budget))
    return min(sizes)


def block_floor(graph: Graph, alignment: int) -> int:
    """Bytes live at once in any plan of the graph under its schedule, found without analysing the plan: the
    neuron state it pins, and one copy per step of the block of the input (all live at the block's first position:
    the loader writes them before the block runs) or of the output (all live at its last: read after it). Large
    blocks that cannot fit a budget are refused by it without placing, or even listing, their nodes x block
    positions."""
    pinned_state = 0 if transient_states(graph) else _state_bytes(graph, alignment)
    inputs = sum(align_up(node.type.nbytes, alignment) for node in graph.inputs)
    output = align_up(graph.node(graph.output).type.nbytes, alignment)
    return pinned_state + graph.schedule.block * max(inputs, output)


def block_sizes(graph: Graph) -> list[int]:
    """Candidate timesteps per block, largest first: T (one block for the whole run) when T <= MAX_BLOCK, then the
    powers of two below T and at most MAX_BLOCK; only 1 when delays carry values across steps."""
    if any(OPS[node.op].delay for node in graph.nodes):
        return [1]
    largest = min(graph.timesteps, MAX_BLOCK)
    powers = [1 << k for k in range(largest.bit_length()) if 1 << k < largest]
    return [largest, *reversed(powers)]


def _state_bytes(graph: Graph, alignment: int) -> int:
    return sum(len(state_names(n)) * align_up(state_type(n).nbytes, alignment) for n in graph.nodes if state_names(n))


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    if options.budget is None:
        return graph
    capacity = options.capacity
    limits = candidate_limits(graph)
    if not limits or resident_bytes(graph, options.alignment, capacity) <= capacity:
        return graph  # every weight stays resident: nothing streams
    # Preferred first, coarsest to finest: pieces of at most 1/SLOT_SHARE of the budget, since streamed pieces pass
    # through slots (one read while another is used) and every byte of slot is a byte no resident weight can use.
    # Then the coarser ones, finest first: placement heights are not monotone in the piece size, and the minimum
    # budget may be reached only there. The finest is kept when none fits.
    preferred = [limit for limit in limits if limit <= capacity // SLOT_SHARE]
    coarser = [limit for limit in reversed(limits) if limit > capacity // SLOT_SHARE]
    for limit in preferred + coarser:
        sliced = slice_to(graph, limit)
        if smallest_plan_bytes(sliced, options.alignment, capacity) <= capacity:
            return sliced
    return slice_to(graph, limits[-1])
