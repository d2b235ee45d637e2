"""An independent checker for placements: shares no code with the solvers beyond the problem's own fields.

`check` accepts a placement only if every buffer has a non-negative integer offset, each offset is a multiple of
the buffer's alignment (and of the default alignment), fixed buffers sit at their fixed offsets, no buffer ends past
the capacity, and no two buffers whose lifetimes overlap share a byte. It runs a sweep over time with the live
buffers kept sorted by offset, so each arriving buffer is compared with its two neighbours only: O(n log n) plus
list insertions, well under a second for 62k buffers. Buffers whose bytes no other buffer's bytes overlap cannot
conflict whatever the lifetimes, so they are found first (sorted by offset, with numpy) and left out of the sweep:
a placement that keeps most buffers apart, such as one a deadline cut short (the rest stacked), is checked fast.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_left, insort
from collections.abc import Mapping

import numpy as np

from masic.memplan.problem import MAX_VALUE, Interval, MemplanError, Problem

_MISSING = object()


def _describe(buf: Interval, offset: int) -> str:
    return f"{buf.id!r} (live [{buf.lower}, {buf.upper}), bytes [{offset}, {offset + buf.size}))"


def _sharing_bytes(index: list[int], starts: list[int], ends: list[int]) -> list[int]:
    """The buffers (of `index`, non-empty, with their bytes [start, end)) whose bytes overlap another's, regardless
    of time. In offset order, a buffer overlaps an earlier one when it starts below the highest end so far, and a
    later one when it ends above the next start."""
    if len(index) < 2:
        return []
    order = np.argsort(np.array(starts, dtype=np.int64), kind="stable")
    first, last, which = (np.array(x, dtype=np.int64)[order] for x in (starts, ends, index))
    highest_before = np.concatenate(([np.iinfo(np.int64).min], np.maximum.accumulate(last)[:-1]))
    below_next = np.concatenate((last[:-1] > first[1:], [False]))
    return sorted(which[(first < highest_before) | below_next].tolist())


def check(problem: Problem, offsets: Mapping[str, int], capacity: int | None = None, default_alignment: int = 1) -> int:
    """Returns the placement's height (largest offset + size, 0 when empty) or raises MemplanError naming the first
    fault found: a missing or unknown buffer, a negative or misaligned offset (or one beyond 2^62, as every value of
    a problem), a moved fixed buffer, a buffer past the capacity, or two buffers overlapping in both time and
    memory."""
    known = {b.id for b in problem.buffers}
    unknown = [name for name in offsets if name not in known]
    if unknown:
        raise MemplanError(f"offset given for unknown buffer {unknown[0]!r}")
    height = 0
    indices, starts, ends = [], [], []  # of the non-empty buffers
    for index, buf in enumerate(problem.buffers):
        offset = offsets.get(buf.id, _MISSING)
        if offset is _MISSING:
            raise MemplanError(f"buffer {buf.id!r} has no offset")
        integral = type(offset) is int or (isinstance(offset, numbers.Integral) and not isinstance(offset, bool))
        if not integral or not 0 <= offset < MAX_VALUE:
            raise MemplanError(f"buffer {buf.id!r} has offset {offset!r}: not a non-negative integer below 2^62")
        alignment = math.lcm(buf.alignment, default_alignment)
        if offset % alignment:
            raise MemplanError(f"buffer {buf.id!r} at offset {offset} is not a multiple of its alignment {alignment}")
        if buf.offset is not None and offset != buf.offset:
            raise MemplanError(f"buffer {buf.id!r} is fixed at offset {buf.offset} but placed at {offset}")
        if capacity is not None and offset + buf.size > capacity:
            raise MemplanError(f"buffer {_describe(buf, offset)} ends past the capacity {capacity}")
        height = max(height, offset + buf.size)
        if buf.size:
            indices.append(index)
            starts.append(offset)
            ends.append(offset + buf.size)
    # Sweep: ends before starts at equal times (half-open lifetimes). Empty buffers occupy no byte.
    shared = _sharing_bytes(indices, starts, ends)
    events = sorted(
        (time, is_start, index)
        for index in shared
        for buf in (problem.buffers[index],)
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
