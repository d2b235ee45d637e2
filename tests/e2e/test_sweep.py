"""`masic compile --budget-sweep LO:HI`: the planner across budgets, as a table and a plot."""

from __future__ import annotations

import re
from pathlib import Path

from masic.units import parse_bytes
from tests.artifacts import masic_cli
from tests.e2e.test_cli import FACTORY, _assert_one_line_error


def _bytes(text: str) -> int:
    return 0 if text == "0B" else parse_bytes(text)


def _rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()[2:]]


def test_sweep_prints_every_budget_refuses_below_the_minimum_and_draws_the_plot(tmp_path: Path) -> None:
    result = masic_cli("compile", FACTORY, "--budget-sweep", "1KiB:64KiB", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    minimum_text = re.search(r"minimum budget (\S+)", result.stdout.splitlines()[0]).group(1)
    minimum = parse_bytes(minimum_text)
    rows = _rows(result.stdout)
    budgets = [parse_bytes(row[0]) for row in rows]
    assert budgets == sorted(budgets) and budgets[0] == 1024 and budgets[-1] == 64 * 1024
    assert {1 << k for k in range(10, 17)} <= set(budgets)
    planned = [row for row in rows if row[1] != "refused:"]
    refused = [row for row in rows if row[1] == "refused:"]
    assert refused and all(parse_bytes(row[0]) < minimum for row in refused)
    assert planned[0][0] == minimum_text  # the minimum is a row of its own, and it plans
    for row in planned:
        assert parse_bytes(row[1]) <= parse_bytes(row[0]) * 1.001  # arena within the budget (rounded figures)
    read = [_bytes(row[5]) for row in planned]
    assert read[0] > 0 and read[-1] == 0  # everything streams at the minimum, nothing once all fits
    assert read == sorted(read, reverse=True)
    assert (tmp_path / "budget-sweep.png").stat().st_size > 10_000


def test_sweep_refuses_a_single_budget_and_a_reversed_range(tmp_path: Path) -> None:
    both = masic_cli("compile", FACTORY, "--budget-sweep", "1KiB:8KiB", "--budget", "4KiB", "-o", str(tmp_path))
    _assert_one_line_error(both, "drop --budget")
    reversed_range = masic_cli("compile", FACTORY, "--budget-sweep", "8KiB:1KiB")
    _assert_one_line_error(reversed_range, "LO <= HI")
