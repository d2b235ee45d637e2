"""An independent checker for placements: shares no code with the solvers beyond the problem's own fields.

`check` accepts a placement only if every buffer has a non-negative integer offset, each offset is a multiple of
the buffer's alignment (and of the default alignment), fixed buffers sit at their fixed offsets, no buffer ends past
the capacity, and no two buffers whose lifetimes overlap share a byte. It runs a sweep over time with the live
buffers kept sorted by offset, so each arriving buffer is compared with its two neighbours only: O(n log n) plus
list insertions, well under a second for 62k buffers.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_left, insort
from collections.abc import Mapping

from masic.memplan.problem import Interval, MemplanError, Problem


def _describe(buf: Interval, offset: int) -> str:
    return f"{buf.id!r} (live [{buf.lower}, {buf.upper}), bytes [{offset}, {offset + buf.size}))"


def check(problem: Problem, offsets: Mapping[str, int], capacity: int | None = None, default_alignment: int = 1) -> int:
    """Returns the placement's height (largest offset + size, 0 when empty) or raises MemplanError naming the first
    fault found: a missing or unknown buffer, a negative or misaligned offset, a moved fixed buffer, a buffer past
    the capacity, or two buffers overlapping in both time and memory."""
    known = {b.id for b in problem.buffers}
    unknown = [name for name in offsets if name not in known]
    if unknown:
        raise MemplanError(f"offset given for unknown buffer {unknown[0]!r}")
    height = 0
    for buf in problem.buffers:
        if buf.id not in offsets:
            raise MemplanError(f"buffer {buf.id!r} has no offset")
        offset = offsets[buf.id]
        if not isinstance(offset, numbers.Integral) or isinstance(offset, bool) or offset < 0:
            raise MemplanError(f"buffer {buf.id!r} has offset {offset!r}: not a non-negative integer")
        alignment = math.lcm(buf.alignment, default_alignment)
        if offset % alignment:
            raise MemplanError(f"buffer {buf.id!r} at offset {offset} is not a multiple of its alignment {alignment}")
        if buf.offset is not None and offset != buf.offset:
            raise MemplanError(f"buffer {buf.id!r} is fixed at offset {buf.offset} but placed at {offset}")
        if capacity is not None and offset + buf.size > capacity:
            raise MemplanError(f"buffer {_describe(buf, offset)} ends past the capacity {capacity}")
        height = max(height, offset + buf.size)
    # Sweep: ends before starts at equal times (half-open lifetimes). Empty buffers occupy no byte.
    events = sorted(
        (time, is_start, index)
        for index, buf in enumerate(problem.buffers)
        if buf.size > 0
        for time, is_start in ((buf.lower, 1), (buf.upper, 0))
    )
    live_offsets: list[int] = []  # sorted; live buffers are pairwise disjoint, so their offsets are distinct
    live_at: dict[int, Interval] = {}
    for _, is_start, index in events:
        buf = problem.buffers[index]
        offset = offsets[buf.id]
        if not is_start:
            del live_offsets[bisect_left(live_offsets, offset)]
            del live_at[offset]
            continue
        position = bisect_left(live_offsets, offset)
        neighbours = []
        if position > 0:
            neighbours.append(live_at[live_offsets[position - 1]])
        if position < len(live_offsets):
            neighbours.append(live_at[live_offsets[position]])
        for other in neighbours:
            other_offset = offsets[other.id]
            if other_offset < offset + buf.size and offset < other_offset + other.size:
                raise MemplanError(
                    f"buffers {_describe(other, other_offset)} and {_describe(buf, offset)} overlap in time and memory"
                )
        insort(live_offsets, offset)
        live_at[offset] = buf
    return height
