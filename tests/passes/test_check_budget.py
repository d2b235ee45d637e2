"""check-budget, alone, on planned graphs: a plan within the budget passes unchanged, one byte over is refused with
the bytes it needs. Its text: tests/filecheck/check-budget/."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from masic.ir.graph import Graph
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.passes.check_budget import BudgetError
from masic.units import format_bytes
from tests.pipelines import planned
from tests.strategies import graphs


@settings(max_examples=30, deadline=None)
@given(graphs(max_layers=4))
def test_the_arena_is_the_smallest_budget_that_passes(graph: Graph) -> None:
    plan = planned(graph, PassOptions(alignment=16))
    arena = plan.plan.arena_bytes
    for budget in (None, arena, arena + 1):
        assert run_passes(plan, ["check-budget"], PassOptions(budget=budget, alignment=16)) is plan
    weights = sum(b.size for b in plan.plan.buffers if b.kind == "weight")
    message = (
        rf"^check-budget: the plan needs {format_bytes(arena)} \({arena} bytes, of which {format_bytes(weights)} "
        rf"weights\) but the budget is {format_bytes(arena - 1)}; use --budget {format_bytes(arena, exact=False)} "
    )
    with pytest.raises(BudgetError, match=message):
        run_passes(plan, ["check-budget"], PassOptions(budget=arena - 1, alignment=16))
