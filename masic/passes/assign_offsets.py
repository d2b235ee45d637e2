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

from dataclasses import dataclass, replace

from masic.analysis.liveness import Liveness, align_up, analyse
from masic.ir.graph import Buffer, Graph, Plan
from masic.ir.ops import OPS
from masic.memplan.heuristics import PORTFOLIO
from masic.memplan.problem import Interval, MemplanError, Problem
from masic.memplan.solver import heuristic_height, solve
from masic.passes.base import PassError, PassOptions, require_types

NAME = "assign-offsets"
SEARCH_SECONDS = 10.0  # the exact search's limit when heuristics miss the budget
# Fit tests run the portfolio's first strategies only: on VGG16 the first two make every decision the whole
# portfolio makes, at a fifth of the time. assign-offsets runs them first too, so it meets every decision.
FIT_STRATEGIES = 2


@dataclass(frozen=True)
class Layout:
    """A plan's buffers split for placement. Buffers live over every position (resident weights, pinned state, the
    loader's inputs and outputs) overlap every other buffer, so stacking them at the bottom of the arena loses
    nothing: in any placement each one's address range is free of all other buffers at all times, and removing
    those ranges and stacking them below leaves the height unchanged (sizes are multiples of the alignment). Only
    the rest needs the planner, which is much smaller and shared by every choice of resident weights."""

    liveness: Liveness
    pinned: tuple[Buffer, ...]
    rest: tuple[Buffer, ...]
    alignment: int

    def rest_problem(self) -> Problem:
        """The placement problem of the buffers that are not pinned (built only when a placement is needed), each
        named by its text (the solver's buffer ids are text, as in plan-memory's CSV files)."""
        return Problem(tuple(Interval(str(b.name), b.start, b.end, b.size) for b in self.rest))

    @property
    def pinned_bytes(self) -> int:
        return sum(align_up(b.size, self.alignment) for b in self.pinned)


def align_down(value: int, alignment: int) -> int:
    return value - value % alignment


def layout(graph: Graph, alignment: int) -> Layout:
    liveness = analyse(graph, alignment)
    span = max((b.end for b in liveness.buffers), default=0)
    pinned = tuple(b for b in liveness.buffers if b.start == 0 and b.end >= span)
    rest = tuple(b for b in liveness.buffers if not (b.start == 0 and b.end >= span))
    return Layout(liveness, pinned, rest, alignment)


def arena_bytes(graph: Graph, alignment: int, budget: int | None = None, thorough: bool = False) -> int:
    """The arena the heuristic placement reaches for this graph and schedule: always achievable (the lower bound
    is not, in general), so budget decisions use it and assign-offsets then meets them. With a budget this is a
    fit test: a plan whose lower bound already exceeds it is not placed (its lower bound is returned), and the
    heuristics stop at the first placement within it, so the result is exact only when it exceeds the budget.
    Resident weights and pinned buffers are stacked below the rest (see `Layout`). The search's many fit tests run
    FIT_STRATEGIES heuristics; `thorough` runs them all, as assign-offsets does without a budget, for the plan with
    every weight resident: a budget equal to the unconstrained plan's arena then keeps that plan."""
    planned = layout(graph, alignment)
    return placed_bytes(planned, budget, thorough)


def placed_bytes(planned: Layout, budget: int | None = None, thorough: bool = False) -> int:
    """`arena_bytes` of a layout already computed."""
    if budget is not None and planned.liveness.lower_bound > budget:
        return planned.liveness.lower_bound
    # Arenas are rounded up to the alignment, so a height fits the budget only if it fits its aligned part.
    target = None if budget is None else align_down(budget - planned.pinned_bytes, planned.alignment)
    strategies = len(PORTFOLIO) if thorough else FIT_STRATEGIES
    height = heuristic_height(planned.rest_problem(), planned.alignment, target, strategies)
    return planned.pinned_bytes + align_up(height, planned.alignment)


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    leftover = [n for n in graph.nodes if OPS[n.op].folded_by]
    if leftover:
        node = leftover[0]
        raise PassError(NAME, f"{node.op} has no kernel; run {OPS[node.op].folded_by} first", node)
    planned = layout(graph, options.alignment)
    offsets, base = {}, 0  # pinned buffers stacked from 0; the rest placed above them
    for buffer in planned.pinned:
        offsets[buffer.name] = base
        base += align_up(buffer.size, options.alignment)
    # Without a budget the heuristics alone decide (they reach the lower bound on every model we have seen);
    # the exact search is spent only on making a budget fit.
    search_seconds = SEARCH_SECONDS if options.budget is not None else None
    capacity = None if options.capacity is None else max(0, options.capacity - base)
    try:
        solution = solve(planned.rest_problem(), capacity, search_seconds, options.alignment)
    except MemplanError:  # nothing fits the budget: keep the smallest plan for check-budget to report
        solution = solve(planned.rest_problem(), None, None, options.alignment)
    offsets |= {b.name: base + solution.offsets[str(b.name)] for b in planned.rest}
    liveness = planned.liveness
    buffers = tuple(replace(b, offset=offsets[b.name]) for b in liveness.buffers)
    arena = base + align_up(solution.height, options.alignment)
    plan = Plan(arena, options.alignment, liveness.lower_bound, buffers, liveness.values)
    return replace(graph, plan=plan)
