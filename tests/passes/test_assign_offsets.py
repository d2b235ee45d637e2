"""assign-offsets, alone, on graphs prepared by the passes before it: every buffer at an aligned offset, no two
buffers live at once overlapping, pinned buffers stacked first, the budget the schedule decided on met, and the plan
computing in one byte array what the graph computes. Its text and refusals: tests/filecheck/assign-offsets/."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.analysis.liveness import analyse
from masic.ir.graph import Graph, transient_states
from masic.ir.interpret import run
from masic.ir.names import state, value
from masic.ir.text import parse
from masic.ir.verify import VerifyError, verify
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.passes import assign_offsets as assign_offsets_module
from masic.planning.minimum_budget import folded, minimum_budget
from tests.norse_models import wide_dense_model
from tests.pipelines import planned, prepared
from tests.strategies import graphs

ALIGN = 16


def _assigned(graph: Graph, options: PassOptions) -> tuple[Graph, Graph]:
    """(the graph as assign-offsets receives it, the graph after it)."""
    before = prepared(graph, "assign-offsets", options)
    return before, run_passes(before, ["assign-offsets"], options)


def _inputs(graph: Graph, steps: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 2, (steps, *graph.inputs[0].type.shape)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(graphs(), st.sampled_from([16, 64]))
def test_live_buffers_never_overlap_and_offsets_are_aligned(graph: Graph, alignment: int) -> None:
    before, after = _assigned(graph, PassOptions(alignment=alignment))
    assert after.nodes == before.nodes and after.schedule == before.schedule  # only the plan is new
    plan = after.plan
    verify(after)  # includes the independent plan checker
    for k, a in enumerate(plan.buffers):  # and restated here, pair by pair
        assert a.offset % alignment == 0 and a.offset + a.size <= plan.arena_bytes
        for b in plan.buffers[k + 1 :]:
            disjoint = a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
            assert disjoint or not a.overlaps_in_time(b) or not (a.size and b.size), (a, b)
    assert plan.arena_bytes >= plan.lower_bound == analyse(after, alignment).lower_bound
    x = _inputs(graph, graph.timesteps if transient_states(after) else 4)  # transient state lasts one block
    np.testing.assert_array_equal(run(after, x, simulate_plan=True), run(before, x))


@settings(max_examples=25, deadline=None)
@given(graphs(max_layers=4), st.floats(0.0, 1.0))
def test_the_budget_the_schedule_decided_on_is_met_with_pinned_buffers_first(graph: Graph, where: float) -> None:
    """Resident weights and pinned state sit in [0, pinned bytes), every other buffer above them."""
    smallest = minimum_budget(folded(graph), ALIGN)
    budget = smallest + int(where * (planned(graph, PassOptions(alignment=ALIGN)).plan.arena_bytes - smallest))
    _, after = _assigned(graph, PassOptions(budget=budget, alignment=ALIGN))
    assert after.plan.arena_bytes <= budget
    layout = assign_offsets_module.layout(after, ALIGN)
    pinned = {b.name for b in layout.pinned}
    for buffer in after.plan.buffers:
        below = buffer.offset + buffer.size <= layout.pinned_bytes
        assert below if buffer.name in pinned else buffer.offset >= layout.pinned_bytes, buffer


def test_batched_layers_read_and_write_every_step_at_their_first_position() -> None:
    """The liveness rule a batched kernel needs: all the steps' operands live until the call, all its outputs live
    from it, so the call never overwrites an operand it has yet to read."""
    from masic.frontends.norse import import_norse

    _, after = _assigned(import_norse(wide_dense_model(), timesteps=4), PassOptions(alignment=ALIGN))
    assert after.schedule.block == 4
    dense = after.node("2")
    first = next(p for p, (node, _) in enumerate(after.positions()) if node is dense)
    for t in range(4):
        operand = after.plan.buffer_of(after.value_copy(dense.inputs[0], t))
        output = after.plan.buffer_of(after.value_copy("2", t))
        assert operand.start <= first < operand.end and output.start == first
        assert not (operand.offset < output.offset + output.size and output.offset < operand.offset + operand.size)


CONV = """graph @conv timesteps=2 {
  param @c.w : f32[2,1,3,3]
  %in = input() : f32[1,5,5]
  %c = conv2d(%in) {weight=@c.w, out_channels=2, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : f32[2,5,5]
  %z = iaf(%c) {v_th=0.5, v_reset=0.0} : f32[2,5,5]
  %f = flatten(%z) : f32[50]
  output %f
}
"""


def test_the_simulator_exposes_a_plan_that_overlaps_live_buffers() -> None:
    """An activation moved onto neuron state corrupts the state: the checker rejects the plan, and the simulator,
    run on it anyway, no longer matches the interpreter."""
    graph = parse(CONV)
    after = run_passes(graph, ["assign-offsets"], PassOptions(alignment=ALIGN))
    plan = after.plan
    moved = tuple(
        replace(b, offset=plan.buffer(state("z", "v")).offset) if b.name == value("c") else b for b in plan.buffers
    )
    broken = replace(after, plan=replace(plan, buffers=moved))
    with pytest.raises(VerifyError, match="live together and overlap"):
        verify(broken)
    x = np.random.default_rng(3).uniform(0, 1, (4, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(after, x, simulate_plan=True), run(graph, x))
    assert not np.array_equal(run(broken, x, simulate_plan=True), run(graph, x))
