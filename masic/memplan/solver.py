"""solve(): the memory planner's entry point, a portfolio of heuristics and an exact search.

1. The heuristics (heuristics.PORTFOLIO) run in turn until one reaches the target: the capacity when one is
   given, else the lower bound.
2. With a capacity the heuristics missed, the exact search (exact.py) runs for the time left: it finds a
   placement, or proves there is none, or runs out of time; the last two raise MemplanError.
3. Without a capacity, if the best height is above the lower bound and a timeout was given, the exact search
   tries to improve on it for the time left: a binary search on the capacity between the lower bound and the best
   height so far (a probe that times out counts as a failure). Only for problems of up to MAX_IMPROVE_BUFFERS.

Every solution returned has passed the independent checker (check.py). Without a timeout the heuristics all run
and a capacity search runs until it is decided. With one, every stage stops at the deadline (the heuristic it
interrupts stacks the buffers it has not placed above the others, heuristics.Placement.stacked), and the best
placement found so far is returned, its `method` saying so; only the check of that placement runs after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from masic.memplan.check import check
from masic.memplan.exact import Status, exact_search
from masic.memplan.heuristics import PORTFOLIO, Instance
from masic.memplan.problem import MemplanError, Problem, overlap_degrees

# The exact search keeps every overlapping pair twice (16 bytes a pair); beyond this it is not attempted.
MAX_EXACT_PAIRS = 20_000_000
# A node of the exact search scans its subproblem's buffers and sections: on pangu_2.6B (18,692 buffers) that is
# milliseconds a node, hopeless for improving a heuristic. Improvement is tried up to this many buffers only.
MAX_IMPROVE_BUFFERS = 5_000


@dataclass(frozen=True)
class Solution:
    """A checked placement: offsets by buffer id, its height, the problem's lower bound, how it was found (e.g.
    "heuristic peak/best-fit" or "exact search") and the seconds solve() took."""

    offsets: dict[str, int]
    height: int
    lower_bound: int
    method: str
    seconds: float

    @property
    def ratio(self) -> float:
        """height / lower bound (1.0 for an empty problem)."""
        return self.height / self.lower_bound if self.lower_bound else 1.0


def heuristic_height(
    problem: Problem, alignment: int = 1, target: int | None = None, strategies: int = len(PORTFOLIO)
) -> int:
    """The height of the first `strategies` heuristics' placement, stopping at the first that reaches `target`
    (default: the lower bound), without building or checking the offsets: a fast fit test for planners that try
    many problems. solve() runs the same strategies first, so it reaches any height this reports."""
    bound = problem.lower_bound(alignment)
    return Instance(problem.arrays(alignment)).portfolio(max(bound, target or 0), None, PORTFOLIO[:strategies]).height


def _height(problem: Problem, offsets: dict[str, int]) -> int:
    return max((offsets[b.id] + b.size for b in problem.buffers), default=0)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.perf_counter())


def _check_fixed(problem: Problem, capacity: int | None, alignment: int) -> None:
    """Fixed buffers must be aligned, within the capacity and disjoint among themselves."""
    fixed = Problem(tuple(b for b in problem.buffers if b.offset is not None))
    try:
        check(fixed, {b.id: b.offset for b in fixed.buffers if b.offset is not None}, capacity, alignment)
    except MemplanError as err:
        raise MemplanError(f"fixed offsets: {err}") from None


def _exact_fits(problem: Problem, alignment: int) -> bool:
    arr = problem.arrays(alignment)
    return int(overlap_degrees(arr.lower, arr.upper).sum()) // 2 <= MAX_EXACT_PAIRS


def solve(
    problem: Problem,
    capacity: int | None = None,
    timeout: float | None = None,
    alignment: int = 1,
    started: float | None = None,
) -> Solution:
    """Places every buffer: offsets multiples of `alignment` and of the buffer's own alignment, fixed buffers where
    they are, height at most `capacity` if given (else as low as the portfolio gets within `timeout` seconds,
    counted from `started`, a time.perf_counter() value: by default now; earlier, when reading the problem counts
    against the timeout too).

    Raises MemplanError for fixed offsets that conflict, and when no placement within the capacity is found:
    "no placement within capacity C found in T s (lower bound L)", or a proof that none exists.
    """
    started = time.perf_counter() if started is None else started
    if capacity is not None and capacity < 0:
        raise MemplanError(f"capacity {capacity} must not be negative")
    if timeout is not None and timeout <= 0:
        raise MemplanError(f"timeout {timeout} must be positive")
    deadline = None if timeout is None else started + timeout
    bound = problem.lower_bound(alignment)
    _check_fixed(problem, capacity, alignment)
    if capacity is not None and bound > capacity:
        raise MemplanError(f"no placement within capacity {capacity}: the lower bound is {bound}")
    best = Instance(problem.arrays(alignment)).portfolio(bound if capacity is None else capacity, deadline)
    offsets, method = best.as_dict(problem), f"heuristic {best.strategy}"
    if best.stacked:
        placed = len(problem) - best.stacked
        method += f" ({placed} of {len(problem)} buffers placed by then, the rest stacked above them)"
    if capacity is not None and best.height > capacity:
        offsets = _within_capacity(problem, capacity, deadline, alignment, bound, timeout)
        method = "exact search"
    elif (
        capacity is None
        and best.height > bound
        and deadline is not None
        and len(problem) <= MAX_IMPROVE_BUFFERS
        and _exact_fits(problem, alignment)
    ):
        improved = _improve(problem, alignment, bound, best.height, deadline)
        if improved is not None:
            offsets, method = improved, f"{method} + exact search"
    height = check(problem, offsets, capacity, alignment)
    if deadline is not None and time.perf_counter() > deadline and height > bound:
        method += f"; the time limit of {timeout:g} s passed: the best placement found by then"
    return Solution(offsets, height, bound, method, time.perf_counter() - started)


def _within_capacity(
    problem: Problem, capacity: int, deadline: float | None, alignment: int, bound: int, timeout: float | None
) -> dict[str, int]:
    if not _exact_fits(problem, alignment):
        raise MemplanError(
            f"no placement within capacity {capacity} found by the heuristics, and the problem is too large for "
            f"the exact search (lower bound {bound})"
        )
    if _remaining(deadline) == 0.0:
        raise MemplanError(f"no placement within capacity {capacity} found in {timeout:g} s (lower bound {bound})")
    result = exact_search(problem, capacity, _remaining(deadline), alignment)
    if result.status is Status.INFEASIBLE:
        raise MemplanError(
            f"no placement within capacity {capacity} exists: the exact search proved it in "
            f"{result.seconds:.1f} s (lower bound {bound})"
        )
    if result.status is Status.TIMEOUT or result.offsets is None:
        raise MemplanError(f"no placement within capacity {capacity} found in {timeout:g} s (lower bound {bound})")
    return result.offsets


def _improve(problem: Problem, alignment: int, bound: int, height: int, deadline: float) -> dict[str, int] | None:
    """Binary search on the capacity in [bound, height - 1], each probe given half the time left."""
    best: dict[str, int] | None = None
    low, high = bound, height - 1
    while low <= high:
        left = deadline - time.perf_counter()
        if left <= 0.01:
            break
        capacity = (low + high) // 2
        result = exact_search(problem, capacity, left / 2, alignment)
        if result.status is Status.FOUND and result.offsets is not None:
            best = result.offsets
            high = _height(problem, best) - 1
        else:
            low = capacity + 1
    return best
