"""assign-offsets: give every buffer a fixed, aligned arena offset (the memory plan).

Buffers and lifetimes come from `masic.analysis.liveness`. Placement is best-fit over the free gaps left by
already placed buffers whose lifetimes overlap, largest buffers first; pinned buffers (weights, state) are placed
like any other. The arena is the highest end of any buffer; `lower_bound` is the peak live bytes, which no
placement can beat.

Requires: typed graph, no batchnorm2d (fold first).
Ensures: `graph.plan` is set and passes `verify_plan` (aligned, in bounds, no two live buffers overlapping).
"""

from __future__ import annotations

from dataclasses import replace

from masic.analysis.liveness import align_up, analyse
from masic.ir.graph import Buffer, Graph, Plan
from masic.passes.base import PassError, PassOptions

NAME = "assign-offsets"


def place(buffers: tuple[Buffer, ...], alignment: int) -> tuple[Buffer, ...]:
    """Best-fit placement, largest first: each buffer goes into the smallest gap among time-overlapping ones."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.start, b.name)):
        busy = sorted((b.offset, b.offset + b.size) for b in placed if b.overlaps_in_time(buf))
        best: tuple[int, int] | None = None  # (gap size, offset)
        cursor = 0
        for lo, hi in busy:
            if lo - cursor >= buf.size and (best is None or lo - cursor < best[0]):
                best = (lo - cursor, cursor)
            cursor = max(cursor, align_up(hi, alignment))
        placed.append(replace(buf, offset=best[1] if best else cursor))
    order = {b.name: i for i, b in enumerate(buffers)}
    return tuple(sorted(placed, key=lambda b: order[b.name]))


def run(graph: Graph, options: PassOptions) -> Graph:
    untyped = [n for n in graph.nodes if n.type is None]
    if untyped:
        raise PassError(NAME, "node has no type; run infer-shapes first", untyped[0])
    leftover = [n for n in graph.nodes if n.op == "batchnorm2d"]
    if leftover:
        raise PassError(NAME, "batchnorm2d has no kernel; run fold-batchnorm first", leftover[0])
    liveness = analyse(graph, options.alignment)
    buffers = place(liveness.buffers, options.alignment)
    arena = align_up(max((b.offset + b.size for b in buffers), default=0), options.alignment)
    plan = Plan(arena, options.alignment, liveness.lower_bound, buffers, liveness.values)
    return replace(graph, plan=plan)
