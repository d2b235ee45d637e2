"""fuse-neurons: which neurons run as the epilogue of their operand's conv or dense kernel, what liveness and the
plan then hold (no buffer for the fused layer's output), and that the plan computes the same values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings

from masic.ir.graph import Schedule
from masic.ir.interpret import run
from masic.ir.text import parse, print_graph
from masic.passes import DEFAULT_PIPELINE, PassOptions, fuse_neurons
from masic.passes.manager import PassManager
from tests.filecheck import filecheck
from tests.pipelines import UNFUSED_PIPELINE
from tests.strategies import graphs

# conv -> lif (fused: the conv is vectorised along 16 columns); a conv read by its neuron and by an add (not fused);
# a neuron of an add (not fused); a strided conv, vectorised along output channels (blocked weights), -> iaf (not
# fused: its kernel stores one output at a time); dense of spikes (accumulating) -> li, the output (fused).
GRAPH = """graph @fuse timesteps=3 {
  param @c1.w : f32[4,2,3,3]
  param @c2.w : f32[4,4,3,3]
  param @c3.w : f32[8,4,3,3]
  param @fc.w : f32[5,64]
  %in = input() : f32[2,8,16]
  %c1 = conv2d(%in) {weight=@c1.w, out_channels=4, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : ?
  %l1 = lif(%c1) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.3, v_reset=0.0} : ?
  %c2 = conv2d(%l1) {weight=@c2.w, out_channels=4, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : ?
  %l2 = iaf(%c2) {v_th=0.3, v_reset=0.0} : ?
  %r = add(%l2, %c2) : ?
  %l3 = lif_box(%r) {dt_tau_mem=0.5, v_leak=0.0, v_th=0.3, v_reset=0.0, reset="value"} : ?
  %c3 = conv2d(%l3) {weight=@c3.w, out_channels=8, kernel=(3,3), stride=(2,2), padding=(1,1), dilation=(1,1), groups=1} : ?
  %l4 = iaf(%c3) {v_th=0.3, v_reset=0.0} : ?
  %p = maxpool2d(%l4) {kernel=(2,2), stride=(2,2), padding=(0,0)} : ?
  %f = flatten(%p) : ?
  %fc = dense(%f) {weight=@fc.w, in_features=64, out_features=5} : ?
  %out = li(%fc) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0} : ?
  output %out
}
"""


def _graph():
    rng = np.random.default_rng(0)
    shapes = {"c1.w": (4, 2, 3, 3), "c2.w": (4, 4, 3, 3), "c3.w": (8, 4, 3, 3), "fc.w": (5, 64)}
    return parse(GRAPH, {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in shapes.items()})


def _input(graph, seed: int = 0) -> np.ndarray:
    shape = (graph.timesteps, *graph.inputs[0].type.shape)
    return np.random.default_rng(seed).uniform(0, 2, shape).astype(np.float32)


def test_neurons_of_a_conv_or_dense_read_by_them_alone_are_fused() -> None:
    planned = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(_graph())
    filecheck(
        print_graph(planned),
        """
        CHECK: %l1 = lif(%c1)
        CHECK-SAME: fused=true
        CHECK: %l2 = iaf(%c2)
        CHECK-NOT: fused
        CHECK: %l3 = lif_box(%r)
        CHECK-NOT: fused
        CHECK: %c3 = conv2d(%l3)
        CHECK-SAME: weight_layout="OIHW8o", layout="NCHW8c"
        CHECK: %l4 = iaf(%c3)
        CHECK-SAME: fused=true
        CHECK: %fc = dense(%f)
        CHECK-SAME: weight_layout="IO"
        CHECK: %out = li(%fc)
        CHECK-SAME: fused=true
        CHECK: plan arena=
        CHECK-NOT: buffer c1 activation
        CHECK-NOT: buffer c3 activation
        CHECK-NOT: buffer fc activation
        CHECK: value %in -> in
        """,
    )
    buffers = {b.name: b for b in planned.plan.buffers}
    names = [node.name for node in planned.nodes]
    assert buffers["l1"].start == names.index("c1")  # written by the conv's call
    assert buffers["c2"].start == names.index("c2")  # read by the add too: stored, and its neuron runs alone
    assert planned.epilogue(planned.node("c1")) == planned.node("l1") and planned.elided("fc")
    # c3's kernel vectorises along output channels: it stores a whole vector per pixel in NCHW8c, one output at a
    # time in NCHW, where an epilogue costs more than it saves
    unfused = planned.with_nodes([node.with_attrs(fused=None) for node in planned.nodes])
    assert fuse_neurons.pays(unfused, planned.node("l4"))
    nchw = unfused.with_nodes([node.with_attrs(layout=None) for node in unfused.nodes])
    assert not fuse_neurons.pays(nchw, planned.node("l4")) and fuse_neurons.pays(nchw, planned.node("l1"))


def test_fused_plan_simulates_exactly_what_the_unfused_graph_computes() -> None:
    graph = _graph()
    fused = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(graph)
    unfused = PassManager(UNFUSED_PIPELINE, PassOptions(alignment=16)).run(graph)
    assert fused.plan.arena_bytes <= unfused.plan.arena_bytes
    gone = {b.name for b in unfused.plan.buffers} - {b.name for b in fused.plan.buffers}
    assert gone == {"c1", "c3", "fc"}  # the layers' outputs (the LI's output, written over fc unfused, has its own)
    x = _input(graph)
    np.testing.assert_array_equal(run(fused, x, simulate_plan=True), run(unfused, x))


def test_bit_packed_spikes_keep_their_neuron_separate() -> None:
    """Packing spans 32 outputs of a word; an epilogue writes the outputs of its tile one by one."""
    text = """graph @packed timesteps=2 {
  param @fc1.w : f32[40,8]
  param @fc2.w : f32[3,40]
  %in = input() : f32[8]
  %fc1 = dense(%in) {weight=@fc1.w, in_features=8, out_features=40} : ?
  %z = lif(%fc1) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=0.3, v_reset=0.0} : ?
  %fc2 = dense(%z) {weight=@fc2.w, in_features=40, out_features=3} : ?
  %out = li(%fc2) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0} : ?
  output %out
}
"""
    rng = np.random.default_rng(2)
    weights = {"fc1.w": rng.normal(0, 1, (40, 8)), "fc2.w": rng.normal(0, 1, (3, 40))}
    graph = parse(text, {name: w.astype(np.float32) for name, w in weights.items()})
    planned = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(graph)
    assert planned.node("z").type.dtype == "bits" and not planned.node("z").attr("fused")
    assert planned.node("out").attr("fused")  # the accumulate-only kernel of the bits runs the LI's update
    x = np.random.default_rng(3).uniform(0, 1, (2, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), run(planned, x))


def test_batched_dense_layers_keep_their_neuron_separate() -> None:
    """A batched dense layer computes a block's steps in one call; its neuron's steps must run one after another."""
    typed = PassManager(DEFAULT_PIPELINE[:-3], PassOptions()).run(_graph())  # up to the layout pass
    blocked = fuse_neurons.run(replace(typed, schedule=Schedule(block=3)), PassOptions())
    assert not blocked.node("out").attr("fused") and blocked.node("l1").attr("fused")


def test_a_rerun_decides_afresh() -> None:
    typed = PassManager(DEFAULT_PIPELINE[:-3], PassOptions()).run(_graph())
    once = fuse_neurons.run(typed, PassOptions())
    assert fuse_neurons.run(once, PassOptions()).nodes == once.nodes
    assert not fuse_neurons.run(replace(once, schedule=Schedule(block=3)), PassOptions()).node("out").attr("fused")


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_fusing_never_grows_the_plan_and_computes_the_same(graph) -> None:
    fused = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(graph)
    unfused = PassManager(UNFUSED_PIPELINE, PassOptions(alignment=16)).run(graph)
    assert fused.plan.arena_bytes <= unfused.plan.arena_bytes
    for node in fused.nodes:
        if node.attr("fused"):
            assert fused.node(node.inputs[0]).op in ("conv2d", "dense")
            assert not any(b.name == node.inputs[0] for b in fused.plan.buffers)
    x = np.random.default_rng(1).uniform(0, 2, graph.inputs[0].type.shape).astype(np.float32)
    np.testing.assert_array_equal(run(fused, x, simulate_plan=True), run(unfused, x))


@settings(max_examples=30, deadline=None)
@given(graphs())
def test_a_budget_the_unfused_plan_fits_still_fits(graph) -> None:
    unfused = PassManager(UNFUSED_PIPELINE, PassOptions(alignment=16)).run(graph)
    budget = unfused.plan.arena_bytes
    fused = PassManager(DEFAULT_PIPELINE, PassOptions(budget=budget, alignment=16)).run(graph)  # check-budget passes
    assert fused.plan.arena_bytes <= budget


def test_fuse_neurons_runs_after_the_layout_and_before_the_plan() -> None:
    """It needs the layers' kernels (weight layouts, batching) and changes which buffers exist."""
    assert DEFAULT_PIPELINE.index("layout") < DEFAULT_PIPELINE.index("fuse-neurons")
    assert DEFAULT_PIPELINE.index("fuse-neurons") < DEFAULT_PIPELINE.index("assign-offsets")
