"""`masic plan-memory` as a user runs it: the printed figures, the solution file, one-line errors with status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
