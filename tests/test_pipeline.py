"""The default pipeline as a whole, as `masic compile` runs it: a planned graph computes, inside its one byte array,
exactly what the imported graph computes; every budget from the smallest the compiler reports up compiles, and one
byte less is refused. Each pass's own contract is tested in tests/passes/test_<pass>.py and tests/filecheck/."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from masic.targets.machine import Machine

from masic.ir.graph import Graph, transient_states
from masic.ir.interpret import run
from masic.ir.text import parse, print_graph
from masic.ir.verify import verify
from masic.passes import PassOptions
from masic.passes.check_budget import BudgetError
from masic.passes.schedule import bytes_read
from masic.planning.minimum_budget import folded, minimum_budget
from tests.filecheck import filecheck
from tests.norse_models import MODELS, random_input, wide_dense_model
from tests.pipelines import planned, prepared
from tests.strategies import conv_stages, graphs

ALIGN = 16
RANDOM_GRAPHS = st.one_of(graphs(max_layers=4), conv_stages(max_layers=5))


def _plan(graph: Graph, budget: int | None) -> Graph:
    return planned(graph, PassOptions(budget=budget, alignment=ALIGN))


def _inputs(graph: Graph, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 2, (steps, *graph.inputs[0].type.shape)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(graphs())
def test_the_planned_graph_computes_exactly_what_the_folded_graph_does(graph: Graph) -> None:
    """Bit for bit, interpreted and simulated in the plan; the folds before spike-dtype may round differently (they
    sum weights at compile time), so the reference is the graph they return."""
    plan = _plan(graph, None)
    x = _inputs(graph, graph.timesteps if transient_states(plan) else 4)  # transient state lasts one block
    expected = run(prepared(graph, "spike-dtype"), x)
    np.testing.assert_array_equal(run(plan, x), expected)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), expected)


@settings(max_examples=30, deadline=None)
@given(RANDOM_GRAPHS, st.floats(0.0, 1.0))
def test_any_budget_from_the_minimum_fits_and_simulates_exactly(graph: Graph, where: float) -> None:
    resident = _plan(graph, None)
    smallest = minimum_budget(folded(graph), ALIGN)
    assert smallest <= resident.plan.arena_bytes
    budget = smallest + int(where * (resident.plan.arena_bytes - smallest))
    plan = _plan(graph, budget)
    verify(plan)  # the independent checker
    assert plan.plan.arena_bytes <= budget
    steps = graph.timesteps if transient_states(plan) else 5  # transient state does not carry past one block
    x = _inputs(graph, steps, 1)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(graph, x))


@settings(max_examples=30, deadline=None)
@given(RANDOM_GRAPHS)
def test_the_minimum_compiles_and_one_byte_less_is_refused(graph: Graph) -> None:
    smallest = minimum_budget(folded(graph), ALIGN)
    assert _plan(graph, smallest).plan.arena_bytes <= smallest
    with pytest.raises(BudgetError):
        _plan(graph, smallest - 1)


@settings(max_examples=15, deadline=None)
@given(graphs(max_layers=4))
def test_blocks_of_resident_weights_simulate_exactly_for_any_length(graph: Graph) -> None:
    """On a machine with no cache dense layers gain from blocks; whatever block the schedule picks, the plan
    computes what the step-by-step interpreter does, for runs longer than a block."""
    options = PassOptions(alignment=ALIGN, machine=Machine(1e9, 1e9, 1e9, cache_bytes=0))
    plan = planned(graph, options)
    verify(plan)
    x = _inputs(graph, 2 * plan.schedule.block + 1)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(graph, x))


def test_batched_blocks_of_a_layer_beyond_the_cache_run_inputs_of_any_length() -> None:
    from masic.frontends.norse import import_norse

    graph = import_norse(wide_dense_model(), timesteps=4)
    plan = _plan(graph, None)
    assert plan.schedule.block == 4 and not transient_states(plan)
    text = print_graph(plan)
    filecheck(text, "CHECK: schedule block=4 prefetch=1 streamed=() carry_state")
    assert parse(text, plan.weights) == plan
    x = np.random.default_rng(2).uniform(0, 1, (9, 1024)).astype(np.float32)  # two blocks and a partial one
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(graph, x))


def test_a_tight_budget_streams_weights_in_blocks() -> None:
    from masic.frontends.norse import import_norse

    factory, shape = MODELS["dense"]
    graph = import_norse(factory(), timesteps=6)
    resident = _plan(graph, None)
    plan = _plan(graph, resident.plan.arena_bytes - 900)
    schedule = plan.schedule
    assert schedule.streamed and schedule.block > 1
    streamed_bytes = sum(plan.param(p).type.nbytes for p in schedule.streamed)
    assert bytes_read(plan, schedule) < graph.timesteps * streamed_bytes
    text = print_graph(plan)
    filecheck(text, f"CHECK: schedule block={schedule.block} prefetch={schedule.prefetch} streamed=(@")
    assert parse(text, plan.weights) == plan
    x = random_input(shape, 6)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(graph, x))


def test_layers_too_large_for_a_slot_are_sliced_and_compute_the_same() -> None:
    """Weights dominate this model, so at its minimum budget both layers are cut into pieces that stream."""
    import torch
    from masic.frontends.norse import import_norse
    from norse.torch import LICell, LIFCell, SequentialState

    torch.manual_seed(0)
    model = SequentialState(torch.nn.Linear(64, 256), LIFCell(), torch.nn.Linear(256, 10), LICell())
    graph = import_norse(model, timesteps=3)
    budget = minimum_budget(folded(graph), ALIGN)
    plan = _plan(graph, budget)
    parts = [n for n in plan.nodes if ".part" in n.name]
    assert {n.name.split(".")[0] for n in parts} == {"0", "2"}
    assert sum(n.op == "concat" for n in plan.nodes) == 2
    for node in parts:  # each piece's weight fits the budget, unlike the whole layer's
        whole = graph.param(node.attr("weight").name.split(".part")[0]).type.nbytes
        assert plan.param(node.attr("weight").name).type.nbytes < min(whole, budget)
    x = np.random.default_rng(1).uniform(0, 1, (3, 64)).astype(np.float32)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(graph, x))
