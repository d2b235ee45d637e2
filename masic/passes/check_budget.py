"""check-budget: refuse a plan whose arena does not fit the memory budget.

Requires: a planned graph (assign-offsets).
Ensures: `plan.arena_bytes <= budget`; otherwise raises BudgetError, stating the bytes the plan needs (of which
weights) and the budget to ask for. Slicing, row patches and weight streaming, which make a model fit, run before
it: this is the last guard that what assign-offsets placed meets the budget.
"""

from __future__ import annotations

from masic.ir.graph import Graph
from masic.passes.base import PassError, PassOptions
from masic.units import format_bytes

NAME = "check-budget"


class BudgetError(PassError):
    """The plan needs more bytes than the budget allows."""


def run(graph: Graph, options: PassOptions) -> Graph:
    if graph.plan is None:
        raise PassError(NAME, "the graph has no memory plan; run assign-offsets first")
    if options.budget is not None and graph.plan.arena_bytes > options.budget:
        plan = graph.plan
        weights = sum(b.size for b in plan.buffers if b.kind == "weight")
        raise BudgetError(
            NAME,
            f"the plan needs {format_bytes(plan.arena_bytes)} ({plan.arena_bytes} bytes, of which "
            f"{format_bytes(weights)} weights) but the budget is {format_bytes(options.budget)}; "
            f"use --budget {format_bytes(plan.arena_bytes, exact=False)} or more",
        )
    return graph
