"""patch-rows{budget}: run the leading conv stage in row patches with halos when the smallest plan does not fit.

Patch-based inference as in MCUNetV2, for a graph whose smallest plan does not fit the budget.
The stage is a prefix of the graph, from the input, of ops on (C,H,W) values whose output rows depend on a bounded
window of input rows (`OpDef.row_local`: conv2d, pooling, neuron ops, element-wise ops, channel concat), that the rest
of the graph reads only through its last node, the stage end. The stage end's rows are split into P patches. For each
patch a backward walk finds the rows every stage node must compute (the receptive field, united over the node's users
and clipped to the image), and a copy of the node computes exactly those rows: it reads the input through `crop_rows`
(and an operand computed on more rows than it needs likewise), a convolution or pool pads its rows only at the image's
true border (`row_padding`), and per-element parameters (neuron parameters, thresholds, ...) are cut to its rows. A
`concat` along the rows joins the stage end's patches under its name, so its users are unchanged. Every row is computed
from all the rows it depends on, so halo rows, which two patches compute, hold the same values in both, neuron state
included.

The patches run one after the other, so only one patch's values (and, in a plan whose neuron state is transient,
its state) are live at a time; the concat holds the stage end twice. Candidates go from the coarsest (P = 2 and the
shortest stage) to the finest (P = MAX_PATCHES and the longest stage), among the stages that reach the node where the
smallest plan peaks (see `peak_node`); the first whose smallest plan (as slice-layers measures it) fits the budget
is kept. When none fits, the graph is left as it is and the schedule pass refuses the
budget; `masic.planning.minimum_budget` includes these candidates, so the minimum it reports stays exact.

Requires: typed graph without batchnorm2d.
Ensures: with a budget whose smallest plan the graph does not fit, either the graph is unchanged or its smallest
plan fits the budget; the graph computes the same values as before, each by the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import pairwise
from math import inf

import numpy as np

from masic.analysis.liveness import analyse, peak_live
from masic.ir.graph import AttrValue, Graph, Node, ParamRef, Schedule, TensorType
from masic.ir.ops import OPS, float_or_param
from masic.ir.shapes import row_padding
from masic.passes.base import PassOptions, require_types
from masic.passes.slice_layers import block_sizes, resident_bytes, smallest_plan_bytes

NAME = "patch-rows"
MAX_PATCHES = 16  # finer patches recompute ever more halo rows, each a kernel call per stage node
Rows = tuple[int, int]  # [lo, hi)


def _row_local(node: Node) -> bool:
    """Whether each output row of the node depends on a bounded window of its operands' rows only."""
    if node.type is None or len(node.type.shape) != 3:
        return False
    return OPS[node.op].row_local(node)


def stage_ends(graph: Graph) -> list[int]:
    """Positions of the nodes that can end a stage (the input is at 0), nearest the input first."""
    if not graph.nodes or not OPS[graph.nodes[0].op].graph_input:
        return []
    last_read: dict[str, int] = {}
    for position, node in enumerate(graph.nodes):
        for value in node.inputs:
            last_read[value] = position
    ends, reach = [], 0  # reach: the last position reading a stage value before the candidate end
    for position, node in enumerate(graph.nodes[1:], start=1):
        if not _row_local(node):
            break
        if reach <= position:
            ends.append(position)
        # the output is read after the step, and a value nobody reads would have no rows to compute
        reach = max(reach, inf if node.name == graph.output else last_read.get(node.name, inf))
    return ends


def _reads(node: Node, rows: Rows, height: int) -> tuple[Rows, Rows]:
    """The rows of an operand (of `height` rows) a node reads to compute its output rows, and the padding rows
    (top, bottom) its window then needs: none but for windows (convolutions and pools)."""
    if not OPS[node.op].window:
        return rows, (0, 0)
    kernel, stride, dilation = node.attr("kernel")[0], node.attr("stride")[0], node.attr("dilation", (1, 1))[0]
    start = rows[0] * stride - row_padding(node)[0]
    end = start + (rows[1] - 1 - rows[0]) * stride + dilation * (kernel - 1) + 1
    lo, hi = max(start, 0), min(end, height)
    return (lo, hi), (lo - start, end - hi)


def _needs(graph: Graph, stage: Sequence[Node], rows: Rows) -> dict[str, Rows] | None:
    """The rows each stage value (and the input) must hold for the stage end to compute `rows`, or None when some
    node would read only padding."""
    need = {stage[-1].name: rows}
    for node in reversed(stage):
        for operand in node.inputs:
            (lo, hi), _ = _reads(node, need[node.name], graph.node(operand).type.shape[1])
            if lo >= hi:
                return None
            known = need.get(operand, (lo, hi))
            need[operand] = (min(lo, known[0]), max(hi, known[1]))
    return need


def _patch(
    graph: Graph, stage: Sequence[Node], need: dict[str, Rows], k: int, weights: dict[str, np.ndarray]
) -> list[Node]:
    """Patch k of the stage: a copy of each node computing its needed rows, and the crops its operands need."""
    copies: dict[str, str] = {}  # stage value -> its copy in this patch
    types = {graph.nodes[0].name: graph.nodes[0].type}
    nodes: list[Node] = []

    def operand(value: str, wanted: Rows) -> str:
        source, have = copies.get(value, value), need[value] if value in copies else (0, types[value].shape[1])
        if wanted == have:
            return source
        name = f"{value}.patch{k}.rows{wanted[0]}_{wanted[1]}"
        if name not in types:
            crop = Node(name, "crop_rows", (source,), (("rows", (wanted[0] - have[0], wanted[1] - have[0])),))
            types[name] = OPS["crop_rows"].infer(crop, (types[source],))
            nodes.append(replace(crop, type=types[name], loc=f"rows of %{value} for patch {k}"))
        return name

    for node in stage:
        (lo, hi), (c, _, w) = need[node.name], node.type.shape
        reads = [_reads(node, (lo, hi), graph.node(value).type.shape[1]) for value in node.inputs]
        inputs = [operand(value, wanted) for value, (wanted, _) in zip(node.inputs, reads, strict=True)]
        changes: dict[str, AttrValue | None] = {}
        if OPS[node.op].window:  # no attribute when the rows are padded as `padding` says
            pads = reads[0][1]
            changes["row_padding"] = None if pads == (node.attr("padding")[0],) * 2 else pads
        for key, ref in node.param_refs():
            if key in float_or_param(OPS[node.op]):  # one value per element: cut to the rows
                changes[key] = ParamRef(f"{ref.name}.rows{lo}_{hi}")
                weights[changes[key].name] = graph.weights[ref.name][:, lo:hi]
        name = f"{node.name}.patch{k}"
        copy = replace(
            node.with_attrs(**changes),
            name=name,
            inputs=tuple(inputs),
            type=TensorType((c, hi - lo, w), node.type.dtype),
        )
        types[name] = OPS[node.op].infer(copy, tuple(types[v] for v in inputs))
        assert types[name] == copy.type, f"{name}: {types[name]} computed for rows [{lo},{hi})"
        nodes.append(replace(copy, loc=f"{node.loc} patch {k} rows {lo}:{hi}".strip()))
        copies[node.name] = name
    return nodes


def patch_rows(graph: Graph, end: int, pieces: int) -> Graph | None:
    """The graph with its stage up to position `end` (one of `stage_ends`) run in `pieces` row patches, or None when
    some patch would be empty or read only padding."""
    stage = graph.nodes[1 : end + 1]
    height = stage[-1].type.shape[1]
    if pieces > height:
        return None
    weights: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    for k, rows in enumerate(pairwise(np.linspace(0, height, pieces + 1).astype(int).tolist())):
        need = _needs(graph, stage, rows)
        if need is None:
            return None
        nodes += _patch(graph, stage, need, k, weights)
    last = stage[-1]
    joined = Node(last.name, "concat", tuple(f"{last.name}.patch{k}" for k in range(pieces)), (("axis", 1),))
    nodes = [graph.nodes[0], *nodes, replace(joined, type=last.type, loc=last.loc), *graph.nodes[end + 1 :]]
    return graph.with_params(weights).with_nodes(nodes)


def peak_node(graph: Graph, alignment: int) -> int:
    """The earliest node at which one of the graph's smallest plans (see `smallest_plan_bytes`) peaks in live bytes.

    Patching a stage that ends before it cannot lower that peak: the buffers live after the stage are the same with
    patches or without (the weights, the rest's values, pinned states, which patches only make larger), so such
    stages are not candidates."""
    streamed = tuple(p.name for p in graph.params)
    nodes = []
    for block in block_sizes(graph):
        liveness = analyse(replace(graph, schedule=Schedule(block, streamed)), alignment)
        nodes.append(peak_live(liveness.buffers, alignment)[1] // block)  # positions run layer-major
    return min(nodes)


def candidates(graph: Graph, alignment: int) -> Iterator[Graph]:
    """Every patching of the graph whose stage reaches its `peak_node`, coarsest first: fewest patches, then
    shortest stage."""
    first = peak_node(graph, alignment)
    ends = [end for end in stage_ends(graph) if end >= first]
    pieces = 2
    while pieces <= MAX_PATCHES:
        yield from (g for end in ends if (g := patch_rows(graph, end, pieces)) is not None)
        pieces *= 2


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    if options.budget is None:
        return graph
    capacity, alignment = options.capacity, options.alignment
    if (
        resident_bytes(graph, alignment, capacity) <= capacity
        or smallest_plan_bytes(graph, alignment, capacity) <= capacity
    ):
        return graph
    fitting = (g for g in candidates(graph, alignment) if smallest_plan_bytes(g, alignment, capacity) <= capacity)
    return next(fitting, graph)
