"""schedule{budget}: decide how the timestep loop runs and which weights stream, from the memory budget and the
target's cost model.

Without a budget, or when every weight fits resident, all weights are resident, and the block is the smallest
whose planned latency is within `BLOCK_GAIN` of the fastest block that fits (state carried from block to block, so
the artifact runs inputs of any length): blocks pay when a dense layer's weights outgrow the cache, since a
batched layer reads them once per block (`Graph.batched`), and otherwise cost activation copies and early-exit
granularity (the loader can stop only between blocks).

Otherwise, for each block size B (T, then powers of two down to 1; only B = 1 when the graph has delays, whose
values cross steps), it starts from every weight streamed and makes weights resident, largest first, while the
plan still fits the budget. Among the fitting plans it keeps the fastest by the target's cost model
(`masic.analysis.cost.planned_latency`: per block, the longer of its compute and its weight reads); ties go to the
plan that reads fewer bytes per inference, then to the smaller block (fewer copies of activations). Weights are
read once per block instead of once per timestep. Last, the slots of streamed weights are filled as far ahead of
their first reader as the budget allows (up to MAX_PREFETCH positions), so that the reads overlap more compute.

A fit test places the plan, so the search keeps their number small: a weight that provably fits is made resident
without one (see `_fitting_schedule`), a weight as large as one that did not fit is not tried, and a block size is
skipped when even its fewest possible bytes read (T / B times the weights beyond the budget) exceed the best
plan's.

Requires: typed graph without batchnorm2d.
Ensures: `graph.schedule` is set; with a budget, the plan fits it. When no schedule fits, raises
BudgetError naming the smallest budget that works for this (sliced) graph; `masic.planning.minimum_budget` finds
the smallest over all slicings, which is what the compiler reports.
"""

from __future__ import annotations

from dataclasses import replace
from math import ceil

from masic.analysis.cost import planned_latency
from masic.analysis.liveness import align_up
from masic.ir.graph import Graph, Schedule
from masic.passes.assign_offsets import arena_bytes, layout, placed_bytes
from masic.passes.base import PassOptions, require_types
from masic.passes.check_budget import BudgetError
from masic.passes.slice_layers import block_floor, block_sizes, resident_bytes, smallest_plan_bytes
from masic.units import format_bytes

NAME = "schedule"
MAX_PREFETCH = 4  # positions a streamed slot may be filled ahead of its first reader
BLOCK_GAIN = 0.02  # a larger block of resident weights must be planned this much faster than the smallest


def fits(graph: Graph, schedule: Schedule, alignment: int, budget: int) -> bool:
    """Whether the placement of the graph under this schedule fits the budget (see `arena_bytes`)."""
    return arena_bytes(replace(graph, schedule=schedule), alignment, budget) <= budget


def bytes_read(graph: Graph, schedule: Schedule) -> int:
    """Bytes read from weights.bin per inference of graph.timesteps steps, after the start."""
    streamed = sum(graph.param(name).type.nbytes for name in schedule.streamed)
    return ceil(graph.timesteps / schedule.block) * streamed


def _fitting_schedule(graph: Graph, block: int, budget: int, alignment: int, bound: bool = True) -> Schedule | None:
    """Blocks of `block` steps, streaming every weight but those made resident, largest first, while the plan fits.

    Making a weight resident moves its buffer from a slot among the placed buffers to the pinned stack, and the
    other buffers stay as they are, so the last placement less that slot still holds them: when the pinned stack
    plus that placement's height has room for the weight, it fits without placing again (`bound`). A final
    placement confirms the result; should the heuristics place the smaller problem worse, the search runs again
    placing every candidate."""
    by_size = sorted(graph.params, key=lambda p: (-p.type.nbytes, p.name))
    resident: set[str] = set()

    def streaming_all_but(names: set[str]) -> Schedule:
        return Schedule(block, tuple(sorted(p.name for p in by_size if p.name not in names)))

    def place(names: set[str]) -> tuple[int, int]:
        """(pinned bytes, height of the rest) of the plan that keeps `names` resident."""
        planned = layout(replace(graph, schedule=streaming_all_but(names)), alignment)
        return planned.pinned_bytes, placed_bytes(planned, budget) - planned.pinned_bytes

    if block_floor(replace(graph, schedule=streaming_all_but(resident)), alignment) > budget:
        return None  # without placing, or even listing, the block's positions
    pinned, rest = place(resident)
    if pinned + rest > budget:
        return None
    too_large = None  # a weight this large did not fit: as large or larger ones are not tried
    for param in by_size:
        size = align_up(param.type.nbytes, alignment)
        if too_large is not None and param.type.nbytes >= too_large:
            continue
        if bound and pinned + size + rest <= budget:
            resident.add(param.name)
            pinned += size
            continue
        placed = place(resident | {param.name})
        if sum(placed) <= budget:
            resident.add(param.name)
            pinned, rest = placed
        else:
            too_large = param.type.nbytes
    schedule = streaming_all_but(resident)
    if bound and not fits(graph, schedule, alignment, budget):
        return _fitting_schedule(graph, block, budget, alignment, bound=False)
    return schedule


def _resident_schedule(graph: Graph, options: PassOptions) -> Schedule:
    """Every weight resident, in the smallest block that fits and is within BLOCK_GAIN of the fastest that fits.
    State is carried from block to block; should no such plan fit the budget, the plain resident plan (which
    fits: the caller checked) keeps it only where the run's single block needs it (`transient_states`)."""
    capacity = options.capacity

    def schedule(block: int) -> Schedule:  # carry_state matters only when a block covers the run
        return Schedule(block, carry_state=True) if block >= graph.timesteps else Schedule(block)

    candidates = [schedule(b) for b in sorted(block_sizes(graph))]
    if capacity is not None:
        candidates = [s for s in candidates if s == Schedule() or fits(graph, s, options.alignment, capacity)]
    if not candidates:
        return Schedule()
    latency = {s: planned_latency(graph, s, options.machine) for s in candidates}
    fastest = min(latency.values())
    return next(s for s in candidates if latency[s] <= fastest * (1 + BLOCK_GAIN))


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    capacity = options.capacity
    if capacity is None or resident_bytes(graph, options.alignment, capacity) <= capacity:
        return replace(graph, schedule=_resident_schedule(graph, options))
    blocks = block_sizes(graph)
    beyond_budget = max(0, sum(p.type.nbytes for p in graph.params) - capacity)

    def rank(schedule: Schedule) -> tuple[float, int, int]:
        latency = planned_latency(graph, schedule, options.machine)
        return latency, bytes_read(graph, schedule), schedule.block

    best: Schedule | None = None
    for block in blocks:
        if best is not None and ceil(graph.timesteps / block) * beyond_budget > bytes_read(graph, best):
            continue
        schedule = _fitting_schedule(graph, block, capacity, options.alignment)
        if schedule is not None and (best is None or rank(schedule) < rank(best)):
            best = schedule
    if best is not None:
        # Deeper prefetch lets the loading thread run further ahead of the kernels, so reads overlap more of the
        # compute; it costs only slots held longer, so it is as deep as the plan still fits, up to MAX_PREFETCH.
        deeper = (replace(best, prefetch=p) for p in range(MAX_PREFETCH, best.prefetch, -1))
        best = next((s for s in deeper if fits(graph, s, options.alignment, capacity)), best)
    if best is None:
        smallest = smallest_plan_bytes(graph, options.alignment)
        raise BudgetError(
            NAME,
            f"the budget {format_bytes(options.budget)} is below the smallest that works for this model and "
            f"target, {format_bytes(smallest)} ({smallest} bytes); use --budget {smallest}",
        )
    return replace(graph, schedule=best)
