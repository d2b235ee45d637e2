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
    """The rows of the first table (the --weights format's), which ends at a blank line."""
    table = stdout.split("\n\n")[0]
    return [line.split() for line in table.splitlines()[2:]]


def _formats(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """The side-by-side table of the weight formats (fixed width: a 10-character label, then 23 per format): its
    row labels (budgets, then "minimum" and "weights") and each format's cells."""
    header, *lines = stdout.split("\n\n")[1].splitlines()[1:]
    names = header.split()[1:]
    labels = [line[:10].strip() for line in lines]
    return labels, {
        name: [line[11 + 23 * i : 11 + 23 * (i + 1)].strip() for line in lines] for i, name in enumerate(names)
    }


def test_the_formats_side_by_side_refuse_below_each_minimum_and_int8_fits_the_least(tmp_path: Path) -> None:
    result = masic_cli("compile", FACTORY, "--budget-sweep", "1KiB:64KiB", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    labels, columns = _formats(result.stdout)
    assert list(columns) == ["float32", "float16", "int8"] and labels[-2:] == ["minimum", "weights"]
    minimum = {name: parse_bytes(cells[-2].split()[0]) for name, cells in columns.items()}
    weights = {name: parse_bytes(cells[-1].split()[0]) for name, cells in columns.items()}
    assert minimum["int8"] <= minimum["float16"] <= minimum["float32"] and minimum["int8"] < minimum["float32"]
    assert weights["int8"] < weights["float16"] < weights["float32"]
    budgets = [parse_bytes(label) for label in labels[:-2]]
    for name, cells in columns.items():
        for budget, cell in zip(budgets, cells, strict=False):
            assert (cell == "refused") == (budget < minimum[name]), (name, budget, cell)
        # every format's minimum is a budget of the table, and the first that format plans
        assert budgets.count(minimum[name]) == 1
    # the first table, the default format's, is float32's
    assert re.search(r"minimum budget (\S+)", result.stdout).group(1) == columns["float32"][-2].split()[0]


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
