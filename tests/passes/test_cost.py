"""The cost model the schedule pass ranks plans with, and how much placing the planner does (how the schedule uses
it: test_schedule.py)."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from masic.frontends.norse import import_norse
from masic.targets.machine import Machine

from masic.analysis.cost import node_traffic, node_work, planned_latency, step_seconds
from masic.ir.graph import Graph, Schedule
from masic.limits import MAX_TIMESTEPS
from masic.memplan.heuristics import Instance
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.passes import assign_offsets as assign_offsets_module
from masic.passes.check_budget import BudgetError
from masic.passes.schedule import bytes_read
from masic.passes.slice_layers import MAX_BLOCK, block_sizes
from masic.planning.minimum_budget import folded, minimum_budget
from tests.norse_models import MODELS
from tests.pipelines import planned

ALIGN = 16


def _conv_graph():
    factory, shape = MODELS["conv"]
    return run_passes(import_norse(factory(), shape, timesteps=4), ["infer-shapes", "fold-batchnorm"])


def test_work_counts_multiply_accumulates_of_conv_and_dense() -> None:
    graph = _conv_graph()
    conv = next(n for n in graph.nodes if n.op == "conv2d" and n.attr("groups") == 2)
    dense = next(n for n in graph.nodes if n.op == "dense")
    # each output sums 3 input channels (6 in 2 groups) over a 3x3 window
    assert node_work(conv, graph) == conv.type.numel * 3 * 3 * 3
    assert node_work(dense, graph) == 10 * 32


def test_a_fused_neurons_input_is_neither_written_nor_read_back() -> None:
    """The layer's output that a fused neuron takes in registers moves no bytes: the pair's traffic falls by two
    passes over it, and the planned latency does not rise."""
    machine = Machine(1e9, 1e9, 1e9)
    fused = planned(_conv_graph(), PassOptions(alignment=ALIGN))
    neurons = [n for n in fused.nodes if n.attr("fused")]
    assert neurons, "the conv model has a neuron to fuse"
    unfused = fused.with_nodes([n.with_attrs(fused=None) for n in fused.nodes])
    for neuron in neurons:
        layer = fused.node(neuron.inputs[0])
        pair = (layer, neuron)
        saved = sum(node_traffic(n, unfused, machine) - node_traffic(n, fused, machine) for n in pair)
        assert saved == 2 * layer.type.nbytes
    assert step_seconds(fused, machine) <= step_seconds(unfused, machine)


def test_reading_hides_behind_compute_until_it_outgrows_it() -> None:
    graph = _conv_graph()
    streamed = Schedule(2, tuple(p.name for p in graph.params))
    weight_bytes = sum(p.type.nbytes for p in graph.params)
    step = step_seconds(graph, Machine(1e9, 1e9, 1e9))
    slow_disk = Machine(1e9, 1e9, read_bytes_per_second=weight_bytes / (100 * step))  # a read takes 100 steps
    fast_disk = Machine(1e9, 1e9, read_bytes_per_second=weight_bytes / (0.01 * step))
    assert planned_latency(graph, streamed, fast_disk) == pytest.approx(4 * step)  # compute-bound
    assert planned_latency(graph, streamed, slow_disk) == pytest.approx(2 * 100 * step)  # two blocks, each a read
    # fewer, larger blocks read less, and the slow disk's latency falls with them
    one_block = Schedule(4, streamed.streamed)
    assert planned_latency(graph, one_block, slow_disk) == pytest.approx(100 * step)


@pytest.mark.slow
def test_vgg16_is_planned_with_few_placements(monkeypatch) -> None:
    """Planning VGG16 (about 140M parameters) at 64MB makes its decisions with a few dozen placements, not one per
    weight and block size: the count, not the time, is what a test can hold (about 0.3 s here)."""
    from masic.frontends.dispatch import ImportOptions, import_model

    graph = import_model("tests.zoo_models:vgg16", ImportOptions((3, 32, 32), 4))
    calls = []
    original = assign_offsets_module.heuristic_height
    monkeypatch.setattr(assign_offsets_module, "heuristic_height", lambda *args: calls.append(1) or original(*args))
    plan = planned(graph, PassOptions(budget=64 << 20, alignment=ALIGN))
    assert plan.plan.arena_bytes <= 64 << 20
    weights = sum(p.type.nbytes for p in plan.params)
    assert bytes_read(plan, plan.schedule) <= weights
    assert len(calls) <= 40, len(calls)


def test_blocks_stop_at_max_block() -> None:
    """A run of T <= MAX_BLOCK steps may be one block (T), larger runs are planned in blocks of at most
    MAX_BLOCK steps: the powers of two below it."""
    graph = _conv_graph()
    below = [MAX_BLOCK >> k for k in range(MAX_BLOCK.bit_length())]
    assert block_sizes(replace(graph, timesteps=12)) == [12, 8, 4, 2, 1]
    assert block_sizes(replace(graph, timesteps=MAX_BLOCK)) == below
    for timesteps in (MAX_BLOCK + 1, 10**6, MAX_TIMESTEPS):
        assert block_sizes(replace(graph, timesteps=timesteps)) == below


def test_latency_is_computed_from_T_not_step_by_step() -> None:
    """The cost model multiplies a block's latency by the blocks of the run (it used to list them: MemoryError at
    T = 2^31)."""
    graph = replace(_conv_graph(), timesteps=MAX_TIMESTEPS)
    machine = Machine(1e9, 1e9, 1e9)
    step = step_seconds(graph, machine)
    assert planned_latency(graph, Schedule(1), machine) == pytest.approx(MAX_TIMESTEPS * step)
    streamed = Schedule(MAX_BLOCK, tuple(p.name for p in graph.params))
    full, rest = divmod(MAX_TIMESTEPS, MAX_BLOCK)
    read = sum(p.type.nbytes for p in graph.params) / machine.read_bytes_per_second
    expected = full * max(MAX_BLOCK * step, read) + max(rest * step, read)
    assert planned_latency(graph, streamed, machine) == pytest.approx(expected)


def _planning_work(graph, timesteps: int, budget: int, monkeypatch) -> tuple[int, int, int]:
    """(placements, buffers placed, positions enumerated) to plan the graph run for `timesteps` steps at `budget`
    and to find its smallest budget, as a refusal does: the planner's work, counted rather than timed."""
    placements, buffers, positions = [], [], []
    place, enumerate_positions = Instance.place, Graph.positions

    def counted_place(self, *args, **kwargs):
        placements.append(1)
        buffers.append(len(self.arrays))
        return place(self, *args, **kwargs)

    def counted_positions(self):
        result = enumerate_positions(self)
        positions.append(len(result))
        return result

    monkeypatch.setattr(Instance, "place", counted_place)
    monkeypatch.setattr(Graph, "positions", counted_positions)
    run = replace(graph, timesteps=timesteps)
    with contextlib.suppress(BudgetError):  # below the minimum: refused, as the compiler then states the minimum
        planned(run, PassOptions(budget=budget, alignment=ALIGN))
    minimum_budget(folded(run), ALIGN)
    monkeypatch.undo()
    return len(placements), sum(buffers), sum(positions)


@pytest.mark.parametrize(("model", "share"), [("dense", 0.5), ("dense", 1.0), ("dense", 2.0), ("iaf", 1.0)])
def test_planning_work_does_not_grow_with_T_beyond_the_largest_block(model: str, share: float, monkeypatch) -> None:
    """Runs longer than MAX_BLOCK steps, up to the largest T accepted, are planned with exactly the same placements,
    buffers placed and positions analysed (T = 10^6 took 258 s; T = 10^5 under a tight budget over 300 s and
    3.7 GB), under a budget below the minimum (refused), at it and above it."""
    factory, shape = MODELS[model]
    graph = import_norse(factory(), shape, timesteps=2 * MAX_BLOCK)
    budget = int(share * minimum_budget(folded(graph), ALIGN))
    work = {t: _planning_work(graph, t, budget, monkeypatch) for t in (2 * MAX_BLOCK, 10**6, MAX_TIMESTEPS)}
    assert work[2 * MAX_BLOCK] == work[10**6] == work[MAX_TIMESTEPS], work
    assert work[MAX_TIMESTEPS][0] > 0
