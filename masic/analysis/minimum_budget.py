"""The smallest budget a model compiles under: what `masic compile` states when it refuses a budget.

Slicing depends on the budget, so the minimum is a property of the pipeline, not of one sliced graph: the smallest,
over the piece sizes slice-layers may choose, of the placed arena of the smallest plan the schedule pass can make
(every weight streamed, one step per block or, when neuron states are then transient, all T steps in one block;
see `smallest_plan_bytes`). When no slicing fits, slice-layers hands its finest to patch-rows, which tries the
row patchings of its leading stage, so those count too. At that budget slice-layers or patch-rows finds a graph
that fits and schedule a plan; one byte less, and none exists.
"""

from __future__ import annotations

from masic.ir.graph import Graph
from masic.passes.patch_rows import candidates
from masic.passes.slice_layers import candidate_limits, slice_to, smallest_plan_bytes


def minimum_budget(graph: Graph, alignment: int) -> int:
    """The smallest budget in bytes under which the graph (typed, batch norm folded) can be planned."""
    graphs = [graph, *(slice_to(graph, limit) for limit in candidate_limits(graph))]
    best = min(smallest_plan_bytes(g, alignment) for g in graphs)
    for patched in candidates(graphs[-1], alignment):
        # A fit test is exact when it fails, and cheap when the lower bound fails it: place in full only a patching
        # that beats the best so far.
        if smallest_plan_bytes(patched, alignment, best - 1) < best:
            best = smallest_plan_bytes(patched, alignment)
    return best
