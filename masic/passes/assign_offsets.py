"""assign-offsets: give every buffer a fixed, aligned arena offset (the memory plan).

Buffers and lifetimes come from `masic.analysis.liveness`; placement is `masic.memplan.solve`: a portfolio of
best-fit heuristics that stops at the lower bound, and, when a budget is given and the heuristics overshoot it, an
exact search over canonical placements. When no placement fits the budget, the smallest placement found is kept and
check-budget refuses it with the bytes it needs. The arena is the highest end of any buffer, rounded up to the
alignment; `lower_bound` is the peak live bytes, which no placement can beat.

Requires: typed graph, no batchnorm2d (fold first).
Ensures: `graph.plan` is set and passes `verify_plan` (aligned, in bounds, no two live buffers overlapping).
"""

from __future__ import annotations

from dataclasses import replace

from masic.analysis.liveness import Liveness, align_up, analyse
from masic.ir.graph import Graph, Plan
from masic.memplan.problem import Interval, MemplanError, Problem
from masic.memplan.solver import solve
from masic.passes.base import PassError, PassOptions

NAME = "assign-offsets"
SEARCH_SECONDS = 10.0  # the exact search's limit when heuristics miss the budget


def _problem(graph: Graph, alignment: int) -> tuple[Liveness, Problem]:
    liveness = analyse(graph, alignment)
    return liveness, Problem(tuple(Interval(b.name, b.start, b.end, b.size) for b in liveness.buffers))


def arena_bytes(graph: Graph, alignment: int, budget: int | None = None) -> int:
    """The arena the heuristic placement reaches for this graph and schedule: always achievable (the lower bound
    is not, in general), so budget decisions use it and assign-offsets then meets them. With a budget, a plan
    whose lower bound already exceeds it is not placed: its lower bound is returned, which exceeds the budget too."""
    liveness, problem = _problem(graph, alignment)
    if budget is not None and liveness.lower_bound > budget:
        return liveness.lower_bound
    return align_up(solve(problem, None, None, alignment).height, alignment)


def run(graph: Graph, options: PassOptions) -> Graph:
    untyped = [n for n in graph.nodes if n.type is None]
    if untyped:
        raise PassError(NAME, "node has no type; run infer-shapes first", untyped[0])
    leftover = [n for n in graph.nodes if n.op == "batchnorm2d"]
    if leftover:
        raise PassError(NAME, "batchnorm2d has no kernel; run fold-batchnorm first", leftover[0])
    liveness, problem = _problem(graph, options.alignment)
    # Without a budget the heuristics alone decide (they reach the lower bound on every model we have seen);
    # the exact search is spent only on making a budget fit.
    search_seconds = SEARCH_SECONDS if options.budget is not None else None
    try:
        solution = solve(problem, options.capacity, search_seconds, options.alignment)
    except MemplanError:  # nothing fits the budget: keep the smallest plan for check-budget to report
        solution = solve(problem, None, None, options.alignment)
    buffers = tuple(replace(b, offset=solution.offsets[b.name]) for b in liveness.buffers)
    arena = align_up(solution.height, options.alignment)
    plan = Plan(arena, options.alignment, liveness.lower_bound, buffers, liveness.values)
    return replace(graph, plan=plan)
