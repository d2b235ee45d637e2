"""Shared test data for the memory planner: the benchmark files and hypothesis strategies for problems."""

from __future__ import annotations

import math
import random
from pathlib import Path

from hypothesis import strategies as st

from masic.memplan import Interval, Problem

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "benchmarks" / "memplan"
CHALLENGING = tuple("ABCDEFGHIJK")
CHALLENGE_CAPACITY = 1048576


def challenging(name: str) -> Path:
    """One of MiniMalloc's challenging problems A..K (capacity 1048576)."""
    return DATA / "minimalloc" / f"{name}.{CHALLENGE_CAPACITY}.csv"


@st.composite
def problems(draw: st.DrawFn, max_buffers: int = 30, fixed: bool = True, default_alignment: int = 1) -> Problem:
    """Random buffers over a short time axis (so many overlap), some empty, some aligned, some fixed at offsets
    that are valid among themselves (stacked, each rounded up to its alignment and `default_alignment`)."""
    n = draw(st.integers(0, max_buffers))
    buffers = []
    stack = 0
    for i in range(n):
        lower = draw(st.integers(0, 20))
        upper = draw(st.integers(lower + 1, 24))
        size = draw(st.integers(0, 64))
        alignment = draw(st.sampled_from((1, 1, 2, 4, 8)))
        offset = None
        if fixed and draw(st.integers(0, 9)) == 0:
            step = math.lcm(alignment, default_alignment)
            offset = -(-stack // step) * step
            stack = offset + size
        buffers.append(Interval(f"b{i}", lower, upper, size, alignment, offset))
    return Problem(tuple(buffers))


def guillotine(rng: random.Random, pieces: int, span: int, height: int) -> tuple[Problem, dict[str, int]]:
    """A zero-slack problem: the rectangle time [0, span) x bytes [0, height) cut into `pieces` rectangles by
    repeated straight cuts, each rectangle a buffer. Every moment has exactly `height` live bytes, so the lower
    bound is `height` and the construction (returned too) is a placement reaching it. Buffers are shuffled."""
    rects = [(0, span, 0, height)]
    while len(rects) < pieces:
        splittable = [r for r in rects if r[1] - r[0] > 1 or r[3] - r[2] > 1]
        if not splittable:
            break
        t0, t1, b0, b1 = rect = rng.choice(splittable)
        rects.remove(rect)
        if t1 - t0 > 1 and (b1 - b0 == 1 or rng.random() < 0.5):
            cut = rng.randrange(t0 + 1, t1)
            rects += [(t0, cut, b0, b1), (cut, t1, b0, b1)]
        else:
            cut = rng.randrange(b0 + 1, b1)
            rects += [(t0, t1, b0, cut), (t0, t1, cut, b1)]
    rng.shuffle(rects)
    buffers = tuple(Interval(f"r{i}", t0, t1, b1 - b0) for i, (t0, t1, b0, b1) in enumerate(rects))
    return Problem(buffers), {f"r{i}": b0 for i, (_, _, b0, _) in enumerate(rects)}


def brute_force_faults(problem: Problem, offsets: dict[str, int], capacity: int | None, alignment: int) -> bool:
    """Whether the placement breaks any rule, found by comparing every pair (the checker's reference)."""
    bufs = problem.buffers
    for b in bufs:
        o = offsets[b.id]
        if o < 0 or o % math.lcm(b.alignment, alignment) or (b.offset is not None and o != b.offset):
            return True
        if capacity is not None and o + b.size > capacity:
            return True
    for i, a in enumerate(bufs):
        for b in bufs[i + 1 :]:
            in_time = a.lower < b.upper and b.lower < a.upper
            oa, ob = offsets[a.id], offsets[b.id]
            if in_time and max(oa, ob) < min(oa + a.size, ob + b.size):
                return True
    return False
