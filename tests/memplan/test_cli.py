"""`masic plan-memory` as a user runs it: the printed figures, the solution file, one-line errors with status 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from masic.memplan import check, read_csv
from tests.memplan.cases import DATA, challenging

INPUT_12 = DATA / "minimalloc" / "input.12.csv"


def plan_memory(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "masic.cli", "plan-memory", *map(str, args)], capture_output=True, text=True
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masic: error: "), result.stderr
    assert fragment in lines[0], lines[0]


def test_prints_figures_and_writes_the_solution(tmp_path: Path) -> None:
    out = tmp_path / "solution.csv"
    result = plan_memory(INPUT_12, "--capacity", "12", "-o", out)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.split()[0] != "lower")
    assert figures["height"].startswith("12 bytes")
    assert "lower bound  12 bytes" in result.stdout
    assert figures["ratio"] == "1.0000"
    assert figures["method"].startswith("heuristic ")
    assert figures["time"].endswith(" s")
    solved = read_csv(out)
    offsets = {b.id: b.offset for b in solved.buffers}
    assert check(read_csv(INPUT_12), offsets, capacity=12) == 12


def test_capacity_with_units_and_exact_search(tmp_path: Path) -> None:
    result = plan_memory(challenging("C"), "--capacity", "1MiB", "--timeout", "60", "--alignment", "1024")
    assert result.returncode == 0, result.stderr
    assert "method       exact search" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--capacity", "11"], "no placement within capacity 11: the lower bound is 12"),
        (["--capacity", "12 parsecs"], "malformed byte count '12 parsecs'"),
        (["--timeout", "-1"], "expected a positive number of seconds"),
        (["--alignment", "0"], "expected a positive integer"),
    ],
)
def test_bad_options_and_impossible_capacities(args: list[str], fragment: str) -> None:
    assert_one_line_error(plan_memory(INPUT_12, *args), fragment)


def test_capacity_not_reached_in_time() -> None:
    result = plan_memory(challenging("A"), "--capacity", "1048576", "--timeout", "0.1")
    assert_one_line_error(result, "no placement within capacity 1048576 found in 0.1 s (lower bound 1048576)")


def test_malformed_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,lower,upper,size\nb1,0,3,4\nb2,5,2,4\n")
    assert_one_line_error(plan_memory(bad), f"{bad}:3: buffer 'b2': upper 2 <= lower 5")
    assert_one_line_error(plan_memory(tmp_path / "none.csv"), "cannot read")


def test_a_file_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("id,lower,upper,size\ncaf\xe9,0,3,4\n".encode("latin-1"))
    assert_one_line_error(plan_memory(latin1), f"cannot read {latin1}: it is not UTF-8 text (byte 23 is 0xe9)")


def _random_rows(path: Path, rows: int) -> None:
    rng = np.random.default_rng(14)
    lower = rng.integers(0, rows // 2, rows)
    upper = lower + rng.integers(1, 1000, rows)
    size = rng.integers(1, 4096, rows)
    lines = (f"b{k},{lo},{up},{s}" for k, (lo, up, s) in enumerate(zip(lower, upper, size, strict=True)))
    path.write_text("id,lower,upper,size\n" + "\n".join(lines) + "\n")


def test_the_timeout_bounds_the_whole_run(tmp_path: Path) -> None:
    """--timeout 5 took 10.3 s on 200k rows: the first heuristic ran to its end. Every stage now reads the clock
    (reading, each heuristic every 256 buffers, the exact search at every node) and the best placement found by the
    deadline is printed, saying so; only its check and the output follow. A bound with a wide margin (for a busy
    machine and the interpreter's start): the heuristics alone take several times the limit on these rows."""
    problem = tmp_path / "big.csv"
    _random_rows(problem, 120_000)
    started = time.perf_counter()
    result = plan_memory(problem, "--timeout", "4", "-o", tmp_path / "solution.csv")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "the time limit of 4 s passed: the best placement found by then" in result.stdout
    assert elapsed < 4 + 8, elapsed
    solved = read_csv(tmp_path / "solution.csv")
    assert check(read_csv(problem), {b.id: b.offset for b in solved.buffers}) > 0


def test_reading_counts_against_the_timeout(tmp_path: Path) -> None:
    problem = tmp_path / "big.csv"
    _random_rows(problem, 60_000)
    assert_one_line_error(plan_memory(problem, "--timeout", "0.001"), "the time limit passed while reading line")
