"""solve(): checked solutions, the capacity contract and its error messages, and the improvement step."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masic.memplan import PORTFOLIO, Interval, MemplanError, Problem, check, read_csv, solve
from tests.memplan.cases import CHALLENGE_CAPACITY, DATA, challenging, guillotine, problems


@given(st.sampled_from((1, 1, 8)).flatmap(lambda a: st.tuples(problems(40, default_alignment=a), st.just(a))))
def test_solutions_are_valid_and_never_below_the_bound(case: tuple[Problem, int]) -> None:
    problem, alignment = case
    solution = solve(problem, alignment=alignment)
    assert check(problem, solution.offsets, default_alignment=alignment) == solution.height
    assert solution.height >= solution.lower_bound == problem.lower_bound(alignment)
    assert solution.method.startswith("heuristic ")
    assert solution.ratio >= 1.0


@given(st.randoms(use_true_random=False), st.integers(2, 30))
def test_zero_slack_constructions_fit_their_rectangle(rng: random.Random, pieces: int) -> None:
    problem, _ = guillotine(rng, pieces, span=rng.randint(2, 50), height=rng.randint(2, 500))
    capacity = problem.lower_bound()
    solution = solve(problem, capacity=capacity, timeout=30)
    assert solution.height == capacity
    check(problem, solution.offsets, capacity=capacity)


def test_exact_search_improves_on_the_heuristics() -> None:
    problem, _ = guillotine(random.Random(124), 12, 10, 20)  # the heuristics reach 21 here, the bound is 20
    assert solve(problem).height == 21
    solution = solve(problem, timeout=10)
    assert solution.height == solution.lower_bound == 20
    assert solution.method.endswith("+ exact search")


def test_exact_search_when_the_heuristics_miss_the_capacity() -> None:
    problem = read_csv(challenging("C"))
    solution = solve(problem, capacity=CHALLENGE_CAPACITY, timeout=30)
    assert solution.method == "exact search"
    assert solution.height <= CHALLENGE_CAPACITY


def test_readme_example() -> None:
    solution = solve(read_csv(DATA / "minimalloc" / "input.12.csv"), capacity=12)
    assert solution.height == solution.lower_bound == 12


def test_capacity_below_the_lower_bound() -> None:
    with pytest.raises(MemplanError, match=r"^no placement within capacity 11: the lower bound is 12$"):
        solve(read_csv(DATA / "minimalloc" / "input.12.csv"), capacity=11)


def test_capacity_not_reached_in_time() -> None:
    with pytest.raises(MemplanError, match=r"^no placement within capacity 1048576 found in 0.05 s \(lower bound"):
        solve(read_csv(challenging("A")), capacity=CHALLENGE_CAPACITY, timeout=0.05)


def test_at_the_deadline_the_best_placement_so_far_is_returned_and_said_so() -> None:
    """A time limit that passes before the heuristics start (reading the problem counts against it: `started`)
    still yields a checked placement of every buffer, all stacked, and the method says what happened."""
    problem = read_csv(DATA / "idealloc" / "G_1.csv")
    solution = solve(problem, timeout=1.0, started=time.perf_counter() - 2.0)
    assert solution.method == (
        f"heuristic {PORTFOLIO[0]} (0 of {len(problem)} buffers placed by then, the rest stacked above them); "
        "the time limit of 1 s passed: the best placement found by then"
    )
    assert solution.height == check(problem, solution.offsets) == sum(b.size for b in problem.buffers)


def test_capacity_proved_impossible() -> None:
    problem = Problem((Interval("f", 0, 2, 1, offset=1), Interval("k", 1, 3, 2)))
    with pytest.raises(MemplanError, match="no placement within capacity 3 exists: the exact search proved it"):
        solve(problem, capacity=3)
    assert solve(problem).offsets == {"f": 1, "k": 2}


def test_fixed_offsets_must_agree() -> None:
    clash = Problem((Interval("a", 0, 2, 4, offset=0), Interval("b", 1, 3, 4, offset=2)))
    with pytest.raises(MemplanError, match=r"^fixed offsets: buffers 'a' .* and 'b' .* overlap"):
        solve(clash)
    with pytest.raises(MemplanError, match=r"^fixed offsets: buffer 'a' at offset 2 is not a multiple of its"):
        solve(Problem((Interval("a", 0, 2, 4, offset=2),)), alignment=4)
    with pytest.raises(MemplanError, match=r"^fixed offsets: buffer 'a' .* ends past the capacity 5"):
        solve(Problem((Interval("a", 0, 2, 4, offset=2),)), capacity=5)


@pytest.mark.parametrize(("kwargs", "message"), [({"capacity": -1}, "capacity -1"), ({"timeout": 0}, "timeout 0")])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(MemplanError, match=message):
        solve(Problem(()), **kwargs)


def test_empty_problem() -> None:
    solution = solve(Problem(()), capacity=0)
    assert (solution.offsets, solution.height, solution.lower_bound, solution.ratio) == ({}, 0, 0, 1.0)
