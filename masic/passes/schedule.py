"""schedule{budget}: decide how the timestep loop runs and which weights stream, from the memory budget alone.

Without a budget, or when every weight fits resident, the plan is timestep-major (blocks of one step) with all
weights resident. Otherwise, for each block size B (T, then powers of two down to 1; only B = 1 when the graph has
delays, whose values cross steps), it starts from every weight streamed and makes weights resident, largest
first, while the plan still fits the budget. Among the fitting plans it keeps the one the cost model says is fastest:

    latency(B, streamed) = T * compute + ceil(T / B) * streamed_bytes / read_bandwidth

Compute does not depend on B or on what streams, so this keeps the plan that reads the fewest bytes per inference
(ties: the smaller block, which needs fewer copies of activations). Weights are then read once per block instead of
once per timestep.

Requires: typed graph without batchnorm2d.
Ensures: `graph.schedule` is set; with a budget, the plan fits it. When no schedule fits, raises
BudgetError naming the smallest budget that works for this (sliced) graph; `masic.analysis.minimum_budget` finds
the smallest over all slicings, which is what the compiler reports.
"""

from __future__ import annotations

from dataclasses import replace
from math import ceil

from masic.ir.graph import Graph, Schedule
from masic.passes.assign_offsets import arena_bytes
from masic.passes.base import PassOptions
from masic.passes.check_budget import BudgetError, format_bytes

NAME = "schedule"


def fits(graph: Graph, schedule: Schedule, alignment: int, budget: int) -> bool:
    """Whether the placement of the graph under this schedule fits the budget."""
    return arena_bytes(replace(graph, schedule=schedule), alignment, budget) <= budget


def bytes_read(graph: Graph, schedule: Schedule) -> int:
    """Bytes read from weights.bin per inference of graph.timesteps steps, after the start."""
    streamed = sum(graph.param(name).type.nbytes for name in schedule.streamed)
    return ceil(graph.timesteps / schedule.block) * streamed


def block_sizes(graph: Graph) -> list[int]:
    """Candidate timesteps per block, largest first: only 1 when delays carry values across steps."""
    if any(node.op == "delay" for node in graph.nodes):
        return [1]
    powers = [1 << k for k in range(graph.timesteps.bit_length()) if 1 << k < graph.timesteps]
    return [graph.timesteps, *reversed(powers)]


def _fitting_schedule(graph: Graph, block: int, budget: int, alignment: int) -> Schedule | None:
    by_size = sorted(graph.params, key=lambda p: (-p.type.nbytes, p.name))
    streamed = [p.name for p in by_size]
    if not fits(graph, Schedule(block, tuple(streamed)), alignment, budget):
        return None
    for param in by_size:
        candidate = tuple(n for n in streamed if n != param.name)
        if fits(graph, Schedule(block, candidate), alignment, budget):
            streamed = list(candidate)
    return Schedule(block, tuple(sorted(streamed)))


def run(graph: Graph, options: PassOptions) -> Graph:
    resident = replace(graph, schedule=Schedule())
    if options.budget is None:
        return resident
    capacity = options.capacity
    if fits(graph, Schedule(), options.alignment, capacity):
        return resident
    blocks = block_sizes(graph)
    fitting = [s for b in blocks if (s := _fitting_schedule(graph, b, capacity, options.alignment))]
    if not fitting:
        smallest = min(
            arena_bytes(replace(graph, schedule=Schedule(b, tuple(p.name for p in graph.params))), options.alignment)
            for b in blocks
        )
        raise BudgetError(
            NAME,
            f"the budget {format_bytes(options.budget)} is below the smallest that works for this model and "
            f"target, {format_bytes(smallest)} ({smallest} bytes); use --budget {smallest}",
        )
    best = min(fitting, key=lambda s: (bytes_read(graph, s), s.block))
    return replace(graph, schedule=best)
