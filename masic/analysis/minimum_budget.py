"""The smallest budget a model compiles under: what `masic compile` states when it refuses a budget.

Slicing depends on the budget, so the minimum is a property of the pipeline, not of one sliced graph: the smallest,
over the piece sizes slice-layers may choose, of the placed arena of the smallest plan the schedule pass can make
(every weight streamed, one step per block). At that budget slice-layers finds a slicing that fits and schedule a
plan; one byte less, and neither exists.
"""

from __future__ import annotations

from masic.ir.graph import Graph
from masic.passes.slice_layers import candidate_limits, slice_to, smallest_plan_bytes


def minimum_budget(graph: Graph, alignment: int) -> int:
    """The smallest budget in bytes under which the graph (typed, batch norm folded) can be planned."""
    graphs = [graph, *(slice_to(graph, limit) for limit in candidate_limits(graph))]
    return min(smallest_plan_bytes(g, alignment) for g in graphs)
