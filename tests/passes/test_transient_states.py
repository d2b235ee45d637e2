"""Neuron state that lives only while its layer runs, in plans whose one block covers the whole run
(`masic.ir.graph.transient_states`): lifetimes, the lower bound and minimum budget they allow, and the plan
simulator, which fills each state with its initial value where its lifetime starts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from masic.analysis import liveness
from masic.analysis.liveness import analyse
from masic.ir.graph import Graph, Schedule, transient_states
from masic.ir.interpret import run
from masic.ir.names import BufferId, state
from masic.ir.ops import neuron_op, state_names
from masic.ir.text import parse
from masic.ir.verify import verify
from masic.passes import PassOptions, assign_offsets, infer_shapes
from masic.passes.assign_offsets import arena_bytes
from masic.planning.minimum_budget import folded, minimum_budget
from tests.pipelines import planned as compile_plan
from tests.strategies import graphs

ALIGN = 16
WIDTH = 64
LIF = "dt_tau_mem=0.25, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.3, v_reset=0.0"
# Four neuron layers of 64 neurons after one small dense layer: their state (pinned, 512 bytes per lif layer) far
# outweighs one step's activations (256 bytes), as in deep spiking networks run for a few timesteps.
DEEP = f"""graph @deep timesteps=3 {{
  param @w : f32[{WIDTH},4]
  %in = input() : f32[4]
  %d = dense(%in) {{weight=@w, in_features=4, out_features={WIDTH}}} : ?
  %a = lif(%d) {{{LIF}}} : ?
  %b = lif(%a) {{{LIF}}} : ?
  %c = lif(%b) {{{LIF}}} : ?
  %o = li(%c) {{dt_tau_mem=0.25, neg_dt_tau_syn=-0.25, v_leak=0.0}} : ?
  output %o
}}"""
RECURRENT = """graph @recurrent timesteps=2 {
  %in = input() : f32[4]
  %prev = delay() {source="sum"} : f32[4]
  %sum = add(%in, %prev) : ?
  %o = lif(%sum) {dt_tau_mem=0.25, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.3, v_reset=0.0} : ?
  output %o
}"""


def typed(text: str) -> Graph:
    weights = {"w": np.random.default_rng(0).uniform(0, 1, (WIDTH, 4)).astype(np.float32)} if "@w" in text else {}
    return infer_shapes.run(parse(text, weights), PassOptions())


def planned(graph: Graph, schedule: Schedule) -> Graph:
    return assign_offsets.run(replace(graph, schedule=schedule), PassOptions(alignment=ALIGN))


def state_lifetimes(graph: Graph) -> dict[BufferId, tuple[int, int]]:
    return {b.name: (b.start, b.end) for b in analyse(graph, ALIGN).buffers if b.kind == "state"}


def inputs(graph: Graph, steps: int, seed: int = 0) -> np.ndarray:
    shape = graph.inputs[0].type.shape
    return np.random.default_rng(seed).uniform(0, 2, (steps, *shape)).astype(np.float32)


@pytest.mark.parametrize("prefetch", [1, 2])
def test_with_one_block_state_lives_over_its_nodes_positions_only(prefetch: int) -> None:
    graph = typed(DEEP)
    block = graph.timesteps
    layer_major = replace(graph, schedule=Schedule(block, ("w",), prefetch))
    assert transient_states(layer_major)
    expected = {
        state: (max(0, index * block - prefetch), index * block + block)
        for index, node in enumerate(graph.nodes)
        for state in state_names(node)
    }
    assert len(expected) == 8  # v and i of each of the four neuron layers
    assert state_lifetimes(layer_major) == expected


def test_state_stays_pinned_unless_one_block_covers_the_run() -> None:
    graph = typed(DEEP)
    positions = len(graph.nodes)
    for block in (1, 2):  # blocks of fewer steps than the run: state carries over from block to block
        shorter = replace(graph, schedule=Schedule(block, ("w",)))
        assert not transient_states(shorter)
        assert set(state_lifetimes(shorter).values()) == {(0, positions * block)}
    recurrent = typed(RECURRENT)  # a delay carries a value across steps, so across the node order
    one_block = replace(recurrent, schedule=Schedule(recurrent.timesteps))
    assert not transient_states(one_block)
    assert set(state_lifetimes(one_block).values()) == {(0, len(recurrent.nodes) * recurrent.timesteps)}


def test_transient_states_lower_the_lower_bound_and_the_minimum_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = typed(DEEP)
    block_1 = replace(graph, schedule=Schedule(1, ("w",)))
    layer_major = replace(graph, schedule=Schedule(graph.timesteps, ("w",)))
    transient = analyse(layer_major, ALIGN).lower_bound
    smallest = minimum_budget(folded(graph), ALIGN)
    with monkeypatch.context() as patched:  # the same plans with every state pinned, as before
        patched.setattr(liveness, "transient_states", lambda graph: False)
        pinned = analyse(layer_major, ALIGN).lower_bound
    assert transient < pinned
    assert transient < analyse(block_1, ALIGN).lower_bound  # the smallest plan with state pinned

    assert smallest < arena_bytes(block_1, ALIGN)
    compiled = compile_plan(graph, PassOptions(budget=smallest, alignment=ALIGN))
    verify(compiled)
    assert compiled.schedule.block == graph.timesteps and transient_states(compiled)
    assert compiled.plan.arena_bytes <= smallest
    x = inputs(graph, graph.timesteps)
    np.testing.assert_array_equal(run(compiled, x, simulate_plan=True), run(graph, x))


@given(graphs(max_layers=5), st.data())
def test_layer_major_plans_with_transient_states_simulate_exactly(graph: Graph, data: st.DataObject) -> None:
    """Any weights streamed, any prefetch distance: the simulator fills each state where its lifetime starts."""
    streamed = [p.name for p in graph.params if data.draw(st.booleans(), label=f"stream @{p.name}")]
    schedule = Schedule(graph.timesteps, tuple(sorted(streamed)), data.draw(st.integers(1, 3)))
    assume(transient_states(replace(graph, schedule=schedule)))
    plan = planned(graph, schedule)
    verify(plan)
    steps = data.draw(st.integers(1, graph.timesteps))  # a run may be shorter than its block
    x = inputs(graph, steps, data.draw(st.integers(0, 3)))
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(graph, x))


def test_simulator_exposes_a_state_loaded_after_its_first_reader() -> None:
    graph = typed(DEEP)
    plan = planned(graph, Schedule(graph.timesteps, ("w",)))
    late = tuple(replace(b, start=b.start + 2) if b.name == state("b", "v") else b for b in plan.plan.buffers)
    broken = replace(plan, plan=replace(plan.plan, buffers=late))
    x = inputs(graph, graph.timesteps)
    assert not np.array_equal(run(broken, x, simulate_plan=True), run(graph, x), equal_nan=True)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(graph, x))


def test_simulator_refuses_a_run_longer_than_the_block_of_transient_states() -> None:
    graph = typed(DEEP)
    plan = planned(graph, Schedule(graph.timesteps, ("w",)))
    assert any(neuron_op(n.op) for n in plan.nodes)
    with pytest.raises(ValueError, match="keeps neuron state within one block of 3 steps; it cannot run 4"):
        run(plan, inputs(graph, graph.timesteps + 1), simulate_plan=True)
