"""The independent checker: it accepts valid placements, and names the fault of every invalid one."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masic.memplan import Interval, MemplanError, Problem, check, read_csv
from tests.memplan.cases import DATA, brute_force_faults, problems

THREE = Problem(
    (
        Interval("a", 0, 4, 8),
        Interval("b", 4, 8, 8),  # starts when a ends: may share a's bytes
        Interval("c", 2, 6, 4, alignment=4),
    )
)


def test_valid_placement_returns_height() -> None:
    assert check(THREE, {"a": 0, "b": 0, "c": 8}) == 12
    assert check(THREE, {"a": 4, "b": 0, "c": 12}, capacity=16) == 16  # touching in memory is fine
    assert check(Problem(()), {}) == 0


@pytest.mark.parametrize(
    ("offsets", "capacity", "alignment", "fragment"),
    [
        ({"a": 0, "b": 0, "c": 4}, None, 1, "buffers 'a' (live [0, 4), bytes [0, 8)) and 'c'"),
        ({"a": 0, "b": 0, "c": 10}, None, 1, "buffer 'c' at offset 10 is not a multiple of its alignment 4"),
        ({"a": 0, "b": 0, "c": 12}, None, 8, "buffer 'c' at offset 12 is not a multiple of its alignment 8"),
        ({"a": 0, "b": 0, "c": 8}, 11, 1, "buffer 'c' (live [2, 6), bytes [8, 12)) ends past the capacity 11"),
        ({"a": 0, "b": 0}, None, 1, "buffer 'c' has no offset"),
        ({"a": 0, "b": 0, "c": 8, "d": 0}, None, 1, "offset given for unknown buffer 'd'"),
        ({"a": -8, "b": 0, "c": 8}, None, 1, "buffer 'a' has offset -8: not a non-negative integer below 2^62"),
        ({"a": 0.5, "b": 0, "c": 8}, None, 1, "buffer 'a' has offset 0.5"),
    ],
)
def test_faults_are_named(offsets: dict, capacity: int | None, alignment: int, fragment: str) -> None:
    with pytest.raises(MemplanError) as info:
        check(THREE, offsets, capacity, alignment)
    assert fragment in str(info.value)


def test_moved_fixed_buffer() -> None:
    problem = Problem((Interval("a", 0, 4, 8, offset=16), Interval("b", 0, 4, 8)))
    assert check(problem, {"a": 16, "b": 0}) == 24
    with pytest.raises(MemplanError, match="buffer 'a' is fixed at offset 16 but placed at 8"):
        check(problem, {"a": 8, "b": 0})


def test_overlap_found_between_non_neighbours_in_time() -> None:
    # 'long' is placed first and stays live; 'late' arrives after two others came and went, on long's bytes.
    problem = Problem(
        (Interval("long", 0, 10, 4), Interval("x", 1, 2, 4), Interval("y", 2, 3, 4), Interval("late", 5, 6, 4))
    )
    with pytest.raises(MemplanError, match=r"'long' .* and 'late'"):
        check(problem, {"long": 8, "x": 0, "y": 0, "late": 10})


def test_empty_buffers_take_no_room() -> None:
    problem = Problem((Interval("a", 0, 4, 8), Interval("e", 0, 4, 0)))
    assert check(problem, {"a": 0, "e": 3}) == 8


@given(problems(), st.randoms(use_true_random=False), st.sampled_from((None, 200, 2000)), st.sampled_from((1, 2)))
def test_agrees_with_brute_force(problem: Problem, rng: random.Random, capacity: int | None, alignment: int) -> None:
    """Placements near valid ones (fixed buffers kept, the rest stacked, then a few moved at random)."""
    offsets, top = {}, max((b.offset + b.size for b in problem.buffers if b.offset is not None), default=0)
    for b in problem.buffers:
        step = math.lcm(b.alignment, alignment)
        offsets[b.id] = b.offset if b.offset is not None else -(-top // step) * step
        top = max(top, offsets[b.id] + b.size)
    for b in rng.sample(problem.buffers, min(len(problem.buffers), rng.choice((0, 1, 2)))):
        offsets[b.id] = rng.randrange(0, 2 * top + 2)
    faulty = brute_force_faults(problem, offsets, capacity, alignment)
    try:
        check(problem, offsets, capacity, alignment)
    except MemplanError:
        assert faulty
    else:
        assert not faulty


def test_fast_on_the_largest_trace() -> None:
    """62,185 buffers stacked one above the other (trivially valid) are checked in well under a second or two."""
    problem = read_csv(DATA / "idealloc" / "Y_1.csv")
    offsets, top = {}, 0
    for b in problem.buffers:
        offsets[b.id] = top
        top += b.size
    assert check(problem, offsets) == top
