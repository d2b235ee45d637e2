"""The exact search: finds a placement whenever one exists (zero-slack constructions), proves infeasibility, and
solves MiniMalloc's challenging problems at capacity 1048576."""

from __future__ import annotations

import math
import random
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masic.memplan import Interval, Problem, Status, check, exact_search, read_csv
from masic.memplan.exact import CFLAGS, SOURCE, _library_path, compiler
from tests.memplan.cases import CHALLENGE_CAPACITY, CHALLENGING, DATA, challenging, guillotine, problems


def test_core_compiles_warning_free(tmp_path) -> None:
    build = subprocess.run(
        [compiler(), *CFLAGS, "-Werror", str(SOURCE), "-o", str(tmp_path / "core.so")], capture_output=True, text=True
    )
    assert build.returncode == 0 and not build.stderr, build.stderr


def test_core_is_built_on_first_use_into_the_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASIC_CACHE_DIR", str(tmp_path))
    path = _library_path()
    assert path.parent == tmp_path and path.name.startswith("memplan-") and path.exists()
    assert _library_path() == path  # a second use finds it
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_readme_example_at_capacity_12() -> None:
    problem = read_csv(DATA / "minimalloc" / "input.12.csv")
    result = exact_search(problem, 12)
    assert result.status is Status.FOUND and result.offsets is not None
    assert check(problem, result.offsets, capacity=12) == 12
    assert exact_search(problem, 11).status is Status.INFEASIBLE


def test_proves_infeasibility_behind_a_fixed_buffer() -> None:
    # The lower bound (3) fits, but the fixed byte in the middle leaves no 2 contiguous bytes for k.
    problem = Problem((Interval("f", 0, 2, 1, offset=1), Interval("k", 1, 3, 2)))
    assert problem.lower_bound() == 3
    assert exact_search(problem, 3).status is Status.INFEASIBLE
    assert exact_search(problem, 4).status is Status.FOUND


def _feasible(problem: Problem, capacity: int, alignment: int) -> bool:
    """Brute force: tries every aligned offset of every buffer, with backtracking."""
    bufs = problem.buffers
    offsets: list[int] = []

    def extend(i: int) -> bool:
        if i == len(bufs):
            return True
        b = bufs[i]
        step = math.lcm(b.alignment, alignment)
        choices = [b.offset] if b.offset is not None else range(0, capacity - b.size + 1, step)
        for o in choices:
            if o % step or o + b.size > capacity:
                continue
            clash = any(
                a.lower < b.upper and b.lower < a.upper and max(oa, o) < min(oa + a.size, o + b.size)
                for a, oa in zip(bufs, offsets, strict=False)
            )
            if not clash:
                offsets.append(o)
                if extend(i + 1):
                    return True
                offsets.pop()
        return False

    return extend(0)


@given(problems(max_buffers=6), st.integers(0, 2), st.sampled_from((1, 2)))
def test_agrees_with_brute_force(problem: Problem, slack: int, alignment: int) -> None:
    """Found placements are valid and infeasibility verdicts are right (fixed offsets and alignments make tiny
    problems infeasible above their lower bound)."""
    capacity = min(problem.lower_bound(alignment) + slack, 40)
    result = exact_search(problem, capacity, timeout=20, alignment=alignment)
    assert result.status is not Status.TIMEOUT
    if result.offsets is not None:
        check(problem, result.offsets, capacity, alignment)
    assert (result.status is Status.FOUND) == _feasible(problem, capacity, alignment)


@given(st.randoms(use_true_random=False), st.integers(2, 28))
def test_finds_zero_slack_constructions(rng: random.Random, pieces: int) -> None:
    problem, _ = guillotine(rng, pieces, span=rng.randint(2, 40), height=rng.randint(2, 200))
    capacity = problem.lower_bound()
    result = exact_search(problem, capacity, timeout=20)
    assert result.status is Status.FOUND and result.offsets is not None
    assert check(problem, result.offsets, capacity=capacity) == capacity


@given(st.randoms(use_true_random=False), st.integers(2, 20), st.sampled_from((2, 8)))
def test_respects_fixed_offsets_and_alignment(rng: random.Random, pieces: int, alignment: int) -> None:
    """A construction scaled by the alignment, with some pieces fixed where the construction put them."""
    base, construction = guillotine(rng, pieces, span=rng.randint(2, 30), height=rng.randint(2, 60))
    fixed = {b.id for b in base.buffers if rng.random() < 0.3}
    problem = Problem(
        tuple(
            Interval(
                b.id,
                b.lower,
                b.upper,
                b.size * alignment,
                offset=construction[b.id] * alignment if b.id in fixed else None,
            )
            for b in base.buffers
        )
    )
    capacity = problem.lower_bound()
    result = exact_search(problem, capacity, timeout=20, alignment=alignment)
    assert result.status is Status.FOUND and result.offsets is not None
    check(problem, result.offsets, capacity=capacity, default_alignment=alignment)


def test_empty_buffers_and_empty_problems() -> None:
    assert exact_search(Problem(()), 0).status is Status.FOUND
    problem = Problem((Interval("e", 0, 5, 0), Interval("a", 0, 5, 4)))
    result = exact_search(problem, 4)
    assert result.offsets == {"e": 0, "a": 0}


def test_times_out() -> None:
    result = exact_search(read_csv(challenging("A")), CHALLENGE_CAPACITY, timeout=0.05)
    assert result.status is Status.TIMEOUT and result.offsets is None
    assert result.seconds < 1


@pytest.mark.slow
@pytest.mark.parametrize("name", CHALLENGING)
def test_challenging_problems(name: str) -> None:
    problem = read_csv(challenging(name))
    result = exact_search(problem, CHALLENGE_CAPACITY, timeout=60)
    assert result.status is Status.FOUND and result.offsets is not None
    assert check(problem, result.offsets, capacity=CHALLENGE_CAPACITY) <= CHALLENGE_CAPACITY
