"""bench/budget.py without compiling: its arguments, planning figures, table, checks and plot on a tiny model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "budget.py"


@pytest.fixture(scope="module")
def budget():
    spec = importlib.util.spec_from_file_location("bench_budget", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_budget_list_puts_the_reference_first(budget) -> None:
    assert budget.parse_budgets(budget.DEFAULT_BUDGETS) == ["none", "128MB", "64MB", "32MB", "16MB", "min"]
    assert budget.parse_budgets("64MB, min") == ["none", "64MB", "min"]
    resolved = budget.resolve_budgets(["none", "64MB", "min"], 1234)
    assert [(b.label, b.bytes, b.minimum) for b in resolved] == [
        ("none", None, False),
        ("64MB", 64_000_000, False),
        ("min 1.2KB", 1234, True),
    ]


def test_bad_arguments_are_one_line_errors(budget, capsys) -> None:
    for argv in (["--budgets", "64XB"], ["--budgets", ","], ["--repeats", "0"], ["--input-shape", "3,x"]):
        with pytest.raises(SystemExit) as exit_:
            budget.build_parser().parse_args(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("budget.py: error: ") and err.count("\n") == 1, err


def test_table_and_checks_on_a_tiny_model(budget, tmp_path: Path) -> None:
    graph = budget.import_graph("tests.norse_models:dense_model", (20,), 4)
    weights = sum(p.type.nbytes for p in graph.params)
    minimum = budget.smallest_budget(graph, 64)
    rows = []
    for b in budget.resolve_budgets(["none", "min"], minimum):
        _, planned = budget.plan(graph, b.bytes)
        assert planned.arena <= (b.bytes or planned.arena) and planned.planning_s > 0
        row = budget.Row(b, planned)
        resident = weights - planned.streamed_bytes
        for wall in (0.002, 0.001, 0.003):  # what the loader's JSON line would say
            stats = {"wall_s": wall, "peak_rss_bytes": planned.arena + (1 << 20), "arena_bytes": planned.arena}
            stats |= {"block": planned.block, "weight_bytes_read": resident + planned.bytes_read, "load_wait_s": 0.0}
            row.runs.append(stats)
        row.max_diff = None if b.bytes is None else 0.0
        rows.append(row)
    assert rows[1].plan.streamed > 0  # at the minimum every weight streams
    assert rows[0].stats["wall_s"] == 0.001 and rows[0].median_s == 0.002
    lines = budget.format_table(rows, weights).splitlines()
    assert lines[0].split()[:3] == ["budget", "arena", "MB"] and len(lines) == 3
    assert lines[1].startswith("none") and lines[2].startswith("min ") and lines[2].split()[-2:] == ["yes", "0.0e+00"]
    found = budget.findings(rows, weights)
    assert "latency 1.00x none" in found[0] and "measured read = resident + planned streamed" in found[0]
    assert found[-1].endswith("identical")
    budget.draw(rows, weights, tmp_path / "budget.png", "tiny")
    assert (tmp_path / "budget.png").stat().st_size > 0
