"""Greedy placement heuristics: fast, usually within a few tenths of a percent of the lower bound on real traces.

A strategy is an order and a fit. The buffers are placed one at a time in the order; each goes into a gap between
the already placed buffers that overlap it in time: the lowest gap it fits ("first-fit") or the smallest
("best-fit"), at the gap's first offset that satisfies its alignment. Fixed buffers are placed first, where they
are; empty buffers go to offset 0 (or their fixed offset) and take no room. Every order is descending in its key,
ties broken by the buffer's peak (below), then by earlier start, then by position in the problem, so results are
deterministic:

- size:   bytes;
- length: lifetime, upper - lower;
- area:   size x length;
- degree: how many buffers overlap it in time;
- peak:   the most bytes alive at one moment of its lifetime (ties by size): the buffers of the busiest moments go
          first, which lets them stack without gaps where the lower bound is decided.

Finding the placed buffers that overlap a lifetime [l, u) is the costly step, done with numpy on an index built
once per problem: the buffers sorted by start, cut into blocks of 128, and for each block start t the buffers
alive across t sorted by end. The buffers overlapping [l, u) are those alive across the block start t <= l that end
after l (a prefix), those starting in [t, l) that end after l, and those starting in [l, u) (a slice). Placement
times on real traces: docs/benchmarks.md, "Memory planner".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from masic.memplan.problem import Arrays, Problem, live_profile, overlap_degrees

Order = Literal["size", "length", "area", "degree", "peak"]
Fit = Literal["first-fit", "best-fit"]
_FAR = np.iinfo(np.int64).max
_BLOCK = 128  # buffers per block of the overlap index
_CLOCK_EVERY = 256  # buffers placed between deadline checks


@dataclass(frozen=True)
class Strategy:
    """An order and a fit; str() gives e.g. "peak/best-fit"."""

    order: Order
    fit: Fit

    def __str__(self) -> str:
        return f"{self.order}/{self.fit}"


# Tried in this order: the first few win on the traces of docs/benchmarks.md (peak/best-fit reaches the lower bound
# on Y_1, G_1 and deep_speech; size/first-fit is best on pangu, degree/best-fit on S_1, length/best-fit on resnet50).
PORTFOLIO: tuple[Strategy, ...] = (
    Strategy("peak", "best-fit"),
    Strategy("size", "first-fit"),
    Strategy("degree", "best-fit"),
    Strategy("length", "best-fit"),
    Strategy("size", "best-fit"),
    Strategy("peak", "first-fit"),
    Strategy("area", "first-fit"),
    Strategy("degree", "first-fit"),
    Strategy("length", "first-fit"),
    Strategy("area", "best-fit"),
)


@dataclass(frozen=True)
class Placement:
    """Offsets in buffer order (int64), their height and the strategy that produced them. `stacked` counts the
    buffers the strategy had not placed when its deadline passed: they are stacked above all the others, each at
    its own addresses, so the placement is valid, only higher."""

    offsets: np.ndarray
    height: int
    strategy: Strategy
    stacked: int = 0

    def as_dict(self, problem: Problem) -> dict[str, int]:
        """The offsets keyed by buffer id, as Python ints."""
        return {b.id: int(o) for b, o in zip(problem.buffers, self.offsets.tolist(), strict=True)}


class _DeadlinePassed(Exception):
    """Raised inside a strategy's preparation when its deadline passes; the strategy then stacks every buffer."""


class _OverlapIndex:
    """Answers "which buffers overlap [l, u) in time" with a few numpy slices (see the module docstring). Building
    it takes a numpy step per block over the buffers started before it, so it reads the clock as it goes."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, deadline: float | None = None) -> None:
        self.upper = upper
        self.by_lower = np.argsort(lower, kind="stable")
        self.sorted_lower = lower[self.by_lower]
        self.block_time = np.unique(self.sorted_lower[::_BLOCK])
        self.block_pos = np.searchsorted(self.sorted_lower, self.block_time)
        upper_by_lower = upper[self.by_lower]
        self.across: list[np.ndarray] = []  # per block: buffers alive across its start, by descending end
        self.across_neg_upper: list[np.ndarray] = []
        for k, (t, p) in enumerate(zip(self.block_time.tolist(), self.block_pos.tolist(), strict=True)):
            if deadline is not None and k % _CLOCK_EVERY == 0 and time.perf_counter() > deadline:
                raise _DeadlinePassed
            alive = self.by_lower[:p][upper_by_lower[:p] > t]
            alive = alive[np.argsort(-upper[alive], kind="stable")]
            self.across.append(alive)
            self.across_neg_upper.append(-upper[alive])

    def overlapping(self, lower: int, upper: int) -> np.ndarray:
        """Indices of the buffers whose lifetimes overlap [lower, upper), including any buffer equal to it."""
        block = int(self.block_time.searchsorted(lower, "right")) - 1
        across = self.across[block][: int(self.across_neg_upper[block].searchsorted(-lower))]
        at_lower, at_upper = self.sorted_lower.searchsorted((lower, upper))
        before = self.by_lower[self.block_pos[block] : at_lower]
        return np.concatenate((across, before[self.upper[before] > lower], self.by_lower[at_lower:at_upper]))


class Instance:
    """One problem prepared for the heuristics: the overlap index and the order keys, computed once and shared by
    every strategy."""

    def __init__(self, arrays: Arrays) -> None:
        self.arrays = arrays
        self._index: _OverlapIndex | None = None

    def index(self, deadline: float | None = None) -> _OverlapIndex:
        """The overlap index, built by the first strategy that places a buffer (raises _DeadlinePassed, and keeps
        nothing, should `deadline` pass while it is built)."""
        if self._index is None:
            self._index = _OverlapIndex(self.arrays.lower, self.arrays.upper, deadline)
        return self._index

    @cached_property
    def peak(self) -> np.ndarray:
        """Per buffer, the most bytes alive at one moment of its lifetime (a sparse-table range maximum)."""
        a = self.arrays
        times, live = live_profile(a.lower, a.upper, a.size)
        first, last = np.searchsorted(times, a.lower), np.searchsorted(times, a.upper)  # covers live[first:last]
        levels = [live]
        while 2 ** len(levels) <= len(live):
            prev, step = levels[-1], 2 ** (len(levels) - 1)
            levels.append(np.maximum(prev[:-step], prev[step:]))
        level = np.log2(last - first).astype(np.int64)
        result = np.empty(len(a), dtype=np.int64)
        for k in np.unique(level).tolist():
            pick = level == k
            table = levels[k]
            result[pick] = np.maximum(table[first[pick]], table[last[pick] - 2**k])
        return result

    def key(self, order: Order) -> np.ndarray:
        """Each buffer's value of the order's key (placed in descending order)."""
        a = self.arrays
        if order == "size":
            return a.size
        if order == "length":
            return a.upper - a.lower
        if order == "area":  # in floating point: size x length may pass 2^63
            return a.size.astype(np.float64) * (a.upper - a.lower)
        if order == "degree":
            return overlap_degrees(a.lower, a.upper)
        return self.peak

    def order(self, order: Order) -> np.ndarray:
        """Indices of the buffers to place (free and non-empty), in placement order."""
        a = self.arrays
        tie = a.size if order == "peak" else self.peak
        ranked = np.lexsort((np.arange(len(a)), a.lower, -tie, -self.key(order)))
        return ranked[(a.fixed[ranked] < 0) & (a.size[ranked] > 0)]

    def place(self, strategy: Strategy, deadline: float | None = None) -> Placement:
        """Runs one strategy. Should `deadline` (a time.perf_counter() value) pass first (the clock is read before
        the buffers are ordered, then every _CLOCK_EVERY buffers), the buffers not yet placed are stacked above the
        others (`Placement.stacked`), in the problem's order if none was placed."""
        a = self.arrays
        fixed = a.fixed >= 0
        offsets = np.where(fixed, a.fixed, 0)
        tops = offsets + a.size
        placed = fixed & (a.size > 0)
        best_fit = strategy.fit == "best-fit"
        lower, upper, size, alignment = (x.tolist() for x in (a.lower, a.upper, a.size, a.alignment))

        def stacked(rest: list[int]) -> Placement:
            top = int(tops[placed].max(initial=0))
            for j in rest:  # each above the last: no two share an address, whatever their lifetimes
                offset = top + -top % alignment[j]
                offsets[j], top = offset, offset + size[j]
            return Placement(offsets, top, strategy, len(rest))

        def passed() -> bool:
            return deadline is not None and time.perf_counter() > deadline

        if passed():
            return stacked(np.flatnonzero(~fixed & (a.size > 0)).tolist())
        order = self.order(strategy.order).tolist()
        try:
            index = self.index(deadline)
        except _DeadlinePassed:
            return stacked(order)
        for count, i in enumerate(order):
            if count % _CLOCK_EVERY == 0 and passed():  # first right after ordering and indexing
                return stacked(order[count:])
            others = index.overlapping(lower[i], upper[i])
            others = others[placed[others]]
            starts = offsets[others]
            by_start = starts.argsort()
            # Gaps between the placed neighbours: from the highest top so far to the next start.
            gap_lo = np.concatenate(([0], np.maximum.accumulate(tops[others][by_start])))
            gap_hi = np.append(starts[by_start], _FAR)
            if alignment[i] > 1:
                gap_lo += -gap_lo % alignment[i]
            room = gap_hi - gap_lo
            fits = room >= size[i]
            j = int(np.argmin(np.where(fits, room, _FAR))) if best_fit else int(np.argmax(fits))
            offsets[i] = gap_lo[j]
            tops[i] = gap_lo[j] + size[i]
            placed[i] = True
        return Placement(offsets, int(tops.max(initial=0)), strategy)

    def portfolio(
        self, target: int, deadline: float | None = None, strategies: tuple[Strategy, ...] = PORTFOLIO
    ) -> Placement:
        """The lowest placement of the strategies (the PORTFOLIO by default), tried in order until one reaches
        `target` or the deadline passes (the strategy it interrupts stacks the buffers it has not placed)."""
        best: Placement | None = None
        for strategy in strategies:
            placement = self.place(strategy, deadline)
            if best is None or placement.height < best.height:
                best = placement
            if best.height <= target or placement.stacked:
                break
        assert best is not None
        return best


def place(problem: Problem, strategy: Strategy, alignment: int = 1) -> Placement:
    """One strategy on one problem (without a deadline)."""
    return Instance(problem.arrays(alignment)).place(strategy)


def greedy_first_fit(problem: Problem, alignment: int = 1) -> Placement:
    """The baseline: largest buffer first, each at the lowest offset where it fits (size/first-fit)."""
    return place(problem, Strategy("size", "first-fit"), alignment)
