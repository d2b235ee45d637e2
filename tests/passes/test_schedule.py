"""schedule{budget}, alone, on graphs prepared by the passes before it: which weights stream, how many timesteps run
per block and how far ahead slots are filled, derived from the budget and the target's cost model; a budget no
schedule meets is refused with the smallest that works for the graph. That blocks and streaming compute what the
graph computes is the pipeline's property (tests/test_pipeline.py); the text: tests/filecheck/schedule/."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from masic.targets.machine import Machine

from masic.ir.graph import Graph, Schedule
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.passes.assign_offsets import arena_bytes
from masic.passes.check_budget import BudgetError
from masic.passes.schedule import MAX_PREFETCH, bytes_read, fits
from masic.passes.slice_layers import resident_bytes, smallest_plan_bytes
from masic.planning.minimum_budget import folded, minimum_budget
from tests.norse_models import MODELS, wide_dense_model
from tests.pipelines import prepared
from tests.strategies import graphs

ALIGN = 16


def _scheduled(graph: Graph, options: PassOptions) -> tuple[Graph, Graph]:
    """(the graph as the schedule pass receives it under these options, the graph after it)."""
    before = prepared(graph, "schedule", options)
    return before, run_passes(before, ["schedule"], options)


@settings(max_examples=25, deadline=None)
@given(graphs(max_layers=4), st.floats(0.0, 1.0))
def test_the_schedule_fits_the_budget_and_fills_slots_as_early_as_it_allows(graph: Graph, where: float) -> None:
    """Any budget from the minimum up to the resident plan: the plan under the chosen schedule fits; nothing streams
    once every weight fits resident; a delay keeps blocks to one step; the prefetch is the deepest (up to
    MAX_PREFETCH) with which the plan still fits."""
    smallest = minimum_budget(folded(graph), ALIGN)
    resident = resident_bytes(prepared(graph, "schedule"), ALIGN)
    budget = smallest + int(where * max(0, resident - smallest))
    before, after = _scheduled(graph, PassOptions(budget=budget, alignment=ALIGN))
    assert after.nodes == before.nodes  # only the schedule changes
    schedule, capacity = after.schedule, budget - budget % ALIGN
    # the all-resident plan is placed as thoroughly as assign-offsets places it (`resident_bytes`); the fewer fit
    # heuristics of the schedule's search may need more than a budget equal to that arena
    assert arena_bytes(after, ALIGN, capacity, thorough=not schedule.streamed) <= capacity
    assert set(schedule.streamed) <= {p.name for p in after.params}
    if resident_bytes(before, ALIGN, capacity) <= capacity:
        assert not schedule.streamed
    if any(n.op == "delay" for n in after.nodes):
        assert schedule.block == 1
    assert 1 <= schedule.prefetch <= MAX_PREFETCH
    if schedule.streamed and schedule.prefetch < MAX_PREFETCH:
        assert not fits(after, replace(schedule, prefetch=schedule.prefetch + 1), ALIGN, capacity)


@settings(max_examples=25, deadline=None)
@given(graphs(max_layers=4))
def test_a_budget_below_the_smallest_plan_is_refused_with_that_plan(graph: Graph) -> None:
    """On the graph as it stands (here unsliced): the smallest plan, every weight streamed, fits; a byte less does
    not, and the refusal names that smallest budget."""
    before = prepared(graph, "schedule")
    smallest = smallest_plan_bytes(before, ALIGN)
    if resident_bytes(before, ALIGN) > smallest:  # else every budget that fits keeps all weights resident
        run_passes(before, ["schedule"], PassOptions(budget=smallest, alignment=ALIGN))
        with pytest.raises(BudgetError, match=rf"^schedule: .* \({smallest} bytes\); use --budget {smallest}$"):
            run_passes(before, ["schedule"], PassOptions(budget=smallest - 1, alignment=ALIGN))


def _norse(name: str, timesteps: int) -> Graph:
    from masic.frontends.norse import import_norse

    factory, shape = MODELS[name]
    return prepared(import_norse(factory(), shape, timesteps=timesteps), "schedule")


def test_a_tight_budget_streams_weights_in_blocks_that_read_less() -> None:
    graph = _norse("dense", timesteps=6)
    budget = resident_bytes(graph, ALIGN) - 900
    schedule = run_passes(graph, ["schedule"], PassOptions(budget=budget, alignment=ALIGN)).schedule
    assert schedule.streamed and schedule.block > 1
    assert bytes_read(graph, schedule) < graph.timesteps * sum(graph.param(p).type.nbytes for p in schedule.streamed)


def test_schedule_prefers_fewer_bytes_read_when_compute_hides_reads() -> None:
    graph = _norse("dense", timesteps=6)
    budget = resident_bytes(graph, ALIGN) - 900
    options = PassOptions(budget=budget, alignment=ALIGN, machine=Machine(1e9, 1e12, 1e15))  # reads are free
    schedule = run_passes(graph, ["schedule"], options).schedule
    assert schedule.block > 1
    assert bytes_read(graph, schedule) < graph.timesteps * sum(graph.param(p).type.nbytes for p in schedule.streamed)


def test_without_a_budget_weights_beyond_the_cache_run_in_batched_blocks() -> None:
    """The cost model reads the 2 MB layer once per block when the block is batched, so the resident plan takes
    blocks of T steps, with state carried so that the plan runs inputs longer than a block."""
    from masic.frontends.norse import import_norse

    graph = prepared(import_norse(wide_dense_model(), timesteps=4), "schedule")
    scheduled = run_passes(graph, ["schedule"])
    assert scheduled.schedule == Schedule(4, carry_state=True)
    assert [n.name for n in scheduled.nodes if scheduled.batched(n)] == ["0", "2"]


def test_small_weights_keep_timestep_major_blocks() -> None:
    """Weights that stay in the cache gain nothing from blocks, which would cost early-exit granularity."""
    assert run_passes(_norse("conv", timesteps=8), ["schedule"]).schedule == Schedule()


@settings(max_examples=25, deadline=None)
@given(graphs(max_layers=4))
def test_without_a_cache_dense_layers_are_batched(graph: Graph) -> None:
    """On a machine with no cache a batched dense layer reads its weights once per block instead of once per step,
    which pays: blocks of more than one step, unless a delay carries values across steps."""
    options = PassOptions(alignment=ALIGN, machine=Machine(1e9, 1e9, 1e9, cache_bytes=0))
    before = prepared(graph, "schedule", options)
    schedule = run_passes(before, ["schedule"], options).schedule
    assert not schedule.streamed
    if any(n.op == "delay" for n in before.nodes):
        assert schedule.block == 1
    elif any(n.op == "dense" for n in before.nodes):
        assert schedule.block > 1 or graph.timesteps == 1
