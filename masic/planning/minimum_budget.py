"""The smallest budget a model compiles under: what `masic compile` states when it refuses a budget.

Slicing depends on the budget, so the minimum is a property of the pipeline, not of one sliced graph. The pipeline
compiles under a budget exactly when the plan with every weight resident fits it (`resident_bytes`), or when, for
one of the graphs slice-layers and patch-rows may hand on (each piece size, and the row patchings of the finest
slicing), the schedule pass's starting plan, every weight streamed, fits it (`smallest_plan_bytes`, over the block
sizes the pass tries). The minimum is the smallest of these arenas, each placed by the same heuristics the passes
use: at that budget the pipeline compiles; one byte less, and it refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

from masic.driver import plan
from masic.ir.graph import Graph
from masic.passes.base import PassOptions
from masic.passes.patch_rows import candidates
from masic.passes.slice_layers import candidate_limits, resident_bytes, slice_to, smallest_plan_bytes
from masic.units import format_bytes


def folded(graph: Graph, options: PassOptions | None = None) -> Graph:
    """An imported graph as slice-layers receives it (typed, batch norm and pooling folded, weights stored in the
    formats `options.weights` chooses, spikes one byte each), the graph `minimum_budget` takes."""
    return plan(graph, options, stop_after="folded").graph


def minimum_budget(graph: Graph, alignment: int) -> int:
    """The smallest budget in bytes under which the graph (as `folded` returns it) can be planned."""
    graphs = [graph, *(slice_to(graph, limit) for limit in candidate_limits(graph))]
    best = resident_bytes(graph, alignment)
    for candidate in chain(graphs, candidates(graphs[-1], alignment)):
        # A fit test is exact when it fails, and cheap when the lower bound fails it: place in full only a graph
        # that beats the best so far.
        if smallest_plan_bytes(candidate, alignment, best - 1) < best:
            best = smallest_plan_bytes(candidate, alignment)
    return best


def budget_refusal(graph: Graph, options: PassOptions, progress: Callable[[str], None]) -> str:
    """The one-line refusal of a budget no plan meets, with the smallest budget that works (weights stored as
    `options` chooses): what `masic compile` prints."""
    budget = options.budget
    progress(f"the budget {format_bytes(budget)} does not fit; finding the smallest that does")
    smallest = minimum_budget(folded(graph, options), options.alignment)
    return (
        f"the budget {format_bytes(budget)} ({budget} bytes) is below the smallest that works for this model and "
        f"target, {format_bytes(smallest)}; use --budget {smallest}"
    )
