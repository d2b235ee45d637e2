"""schedule{budget}: streamed weights and blocks of timesteps, derived from the budget alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.analysis.liveness import transient_states
from masic.analysis.minimum_budget import folded
from masic.analysis.minimum_budget import minimum_budget as smallest_budget
from masic.ir.graph import Schedule
from masic.ir.interpret import run
from masic.ir.text import parse, print_graph
from masic.ir.verify import verify
from masic.passes import DEFAULT_PIPELINE, PassOptions
from masic.passes.check_budget import BudgetError
from masic.passes.manager import PassManager
from masic.passes.schedule import bytes_read
from tests.filecheck import filecheck
from tests.norse_models import MODELS, random_input
from tests.strategies import graphs

ALIGN = 16


def plan(graph, budget: int | None):
    return PassManager(DEFAULT_PIPELINE, PassOptions(budget=budget, alignment=ALIGN)).run(graph)


def minimum_budget(graph) -> int:
    """The smallest budget the compiler reports when it refuses one."""
    return smallest_budget(folded(graph), ALIGN)


@settings(max_examples=20)
@given(graphs(max_layers=4), st.floats(0.0, 1.0))
def test_any_budget_from_the_minimum_fits_and_simulates_exactly(graph, where) -> None:
    resident = plan(graph, None)
    smallest = minimum_budget(graph)
    assert smallest <= resident.plan.arena_bytes
    budget = smallest + int(where * (resident.plan.arena_bytes - smallest))
    planned = plan(graph, budget)
    verify(planned)  # the independent checker
    assert planned.plan.arena_bytes <= budget
    steps = graph.timesteps if transient_states(planned) else 5  # transient state does not carry past one block
    x = np.random.default_rng(0).uniform(0, 2, (steps, *graph.inputs[0].type.shape)).astype(np.float32)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(graph, x))


@settings(max_examples=20)
@given(graphs(max_layers=4))
def test_the_minimum_compiles_and_one_byte_less_is_refused(graph) -> None:
    smallest = minimum_budget(graph)
    assert plan(graph, smallest).plan.arena_bytes <= smallest
    with pytest.raises(BudgetError):
        plan(graph, smallest - 1)


def test_a_tight_budget_streams_weights_in_blocks() -> None:
    from masic.frontends.norse import import_norse

    factory, shape = MODELS["dense"]
    graph = import_norse(factory(), timesteps=6)
    resident = plan(graph, None)
    planned = plan(graph, resident.plan.arena_bytes - 900)
    schedule = planned.schedule
    assert schedule.streamed and schedule.block > 1
    streamed_bytes = sum(planned.param(p).type.nbytes for p in schedule.streamed)
    assert bytes_read(planned, schedule) < graph.timesteps * streamed_bytes
    text = print_graph(planned)
    filecheck(text, f"CHECK: schedule block={schedule.block} prefetch={schedule.prefetch} streamed=(@")
    assert parse(text, planned.weights) == planned
    x = random_input(shape, 6)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(graph, x))


def test_layers_too_large_for_a_slot_are_sliced_and_compute_the_same() -> None:
    """Weights dominate this model, so at its minimum budget both layers are cut into pieces that stream."""
    import torch
    from masic.frontends.norse import import_norse
    from norse.torch import LICell, LIFCell, SequentialState

    torch.manual_seed(0)
    model = SequentialState(torch.nn.Linear(64, 256), LIFCell(), torch.nn.Linear(256, 10), LICell())
    graph = import_norse(model, timesteps=3)
    budget = minimum_budget(graph)
    planned = plan(graph, budget)
    parts = [n for n in planned.nodes if ".part" in n.name]
    assert {n.name.split(".")[0] for n in parts} == {"0", "2"}
    assert sum(n.op == "concat" for n in planned.nodes) == 2
    for node in parts:  # each piece's weight fits the budget, unlike the whole layer's
        whole = graph.param(node.attr("weight").name.split(".part")[0]).type.nbytes
        assert planned.param(node.attr("weight").name).type.nbytes < min(whole, budget)
    x = np.random.default_rng(1).uniform(0, 1, (3, 64)).astype(np.float32)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(graph, x))


def _wide_dense_graph(timesteps: int):
    """A dense layer of 2 MB of weights, more than the default machine's 1 MB cache."""
    import torch
    from masic.frontends.norse import import_norse
    from norse.torch import LICell, LIFCell, SequentialState

    torch.manual_seed(0)
    model = SequentialState(torch.nn.Linear(1024, 512), LIFCell(), torch.nn.Linear(512, 10), LICell())
    return import_norse(model, timesteps=timesteps)


def test_without_a_budget_weights_beyond_the_cache_run_in_batched_blocks() -> None:
    """The cost model reads the 2 MB layer once per block when the block is batched, so the resident plan takes
    blocks of T steps; state stays carried, so the plan runs inputs longer than a block and computes the same."""
    graph = _wide_dense_graph(timesteps=4)
    planned = plan(graph, None)
    assert planned.schedule == Schedule(4, carry_state=True)
    assert not transient_states(planned)
    assert [n.name for n in planned.nodes if planned.batched(n)] == ["0", "2"]
    text = print_graph(planned)
    filecheck(text, "CHECK: schedule block=4 prefetch=1 streamed=() carry_state")
    assert parse(text, planned.weights) == planned
    x = np.random.default_rng(2).uniform(0, 1, (9, 1024)).astype(np.float32)  # two blocks and a partial one
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(graph, x))


def test_batched_layers_read_and_write_every_step_at_their_first_position() -> None:
    """The liveness rule a batched kernel needs: all the steps' operands live until the call, all its outputs live
    from it, so the call never overwrites an operand it has yet to read."""
    planned = plan(_wide_dense_graph(timesteps=4), None)
    dense = planned.node("2")
    first = next(p for p, (node, _) in enumerate(planned.positions()) if node is dense)
    for t in range(4):
        operand = planned.plan.buffer_of(planned.copy_name(dense.inputs[0], t))
        output = planned.plan.buffer_of(planned.copy_name("2", t))
        assert operand.start <= first < operand.end and output.start == first
        assert not (operand.offset < output.offset + output.size and output.offset < operand.offset + operand.size)


def test_small_weights_keep_timestep_major_blocks() -> None:
    """Weights that stay in the cache gain nothing from blocks, which would cost early-exit granularity."""
    from masic.frontends.norse import import_norse

    factory, _ = MODELS["conv"]
    assert plan(import_norse(factory(), MODELS["conv"][1], timesteps=8), None).schedule == Schedule()


@settings(max_examples=15, deadline=None)
@given(graphs(max_layers=4))
def test_resident_blocks_simulate_exactly_for_any_length(graph) -> None:
    """On a machine with no cache every dense layer gains from blocks; whatever block the schedule picks, the plan
    computes what the step-by-step interpreter does, for runs longer than a block."""
    from masic.analysis.cost import Machine

    options = PassOptions(alignment=ALIGN, machine=Machine(1e9, 1e9, 1e9, cache_bytes=0))
    planned = PassManager(DEFAULT_PIPELINE, options).run(graph)
    verify(planned)
    steps = 2 * planned.schedule.block + 1
    x = np.random.default_rng(0).uniform(0, 2, (steps, *graph.inputs[0].type.shape)).astype(np.float32)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(graph, x))
