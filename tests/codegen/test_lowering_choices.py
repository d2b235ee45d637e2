"""What lowering and weights.bin make of the passes' choices in planned graphs: the kernels are told each weight's
and activation's layout, weights.bin stores them so, bit-packed spikes take a word per 32 in the plan and in the
kernels, row patches run row kernels padded at the image's border, and the plan computes what the graph computes.
Which layouts and patches the passes pick: tests/passes/ and tests/filecheck/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from masic.targets.machine import Machine

from masic.codegen.kernels import Conv2dKernel, DenseKernel, Pool2dKernel, RowsKernel
from masic.codegen.lower import lower
from masic.codegen.weights import stored_weight, write_weights
from masic.ir.graph import TensorType
from masic.ir.interpret import run
from masic.ir.names import value
from masic.ir.shapes import activation_block
from masic.ir.text import parse
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.passes.patch_rows import patch_rows
from tests.passes.test_layout import SPIKING_DENSE, _bits_graph, _graph
from tests.passes.test_patch_rows import _graph as patch_graph
from tests.pipelines import planned, prepared
from tests.strategies import conv_stages, graphs, spiking_dense_graphs


def _kernels_by_node(plan) -> dict:
    kernels, calls = lower(plan)
    return {call.node.name: kernel for call in calls for kernel in kernels if kernel.symbol == call.symbol}


def test_kernels_read_and_weights_bin_stores_the_chosen_layout(tmp_path: Path) -> None:
    plan = planned(_graph())
    convs = _kernels_by_node(plan)
    assert convs["narrow"].weight_layout == "OIHW16o" and convs["narrow"].weight_shape() == (2, 8, 3, 3, 16)
    assert convs["wide"].weight_layout == "OIHW" and isinstance(convs["mv"], DenseKernel)
    weights = write_weights(plan, tmp_path / "weights.bin")
    data = (tmp_path / "weights.bin").read_bytes()
    stored = {s.name: data[s.file_offset : s.file_offset + s.nbytes] for s in weights.resident}
    for node in plan.nodes:
        if node.op == "conv2d":
            name = node.attr("weight").name
            want = stored_weight(plan.weights[name], node.attr("weight_layout", "OIHW"))
            assert stored[name] == np.ascontiguousarray(want).tobytes(), name
    assert stored["narrow.w"] != plan.weights["narrow.w"].tobytes()


def test_a_blocked_weight_keeps_each_group_whole() -> None:
    conv = Conv2dKernel("c", (16, 4, 4), 24, (3, 3), groups=2, weight_layout="OIHW4o")
    assert conv.weight_shape() == (6, 8, 3, 3, 4)


@pytest.mark.parametrize(("cache_bytes", "block", "layout_"), [(1 << 20, 1, "IO"), (0, 4, None)])
def test_dense_layers_of_spikes_accumulate_unless_batched(cache_bytes: int, block: int, layout_: str | None) -> None:
    """One step per call: the accumulate-only kernel (W stored transposed), its operand bit-packed. On a machine
    without a cache the schedule batches the layer over blocks of 4 steps, whose kernel multiplies, reading W
    (out, in) once, and bytes of spikes."""
    weights = {"fc.w": np.random.default_rng(3).normal(0, 0.5, (8, 64)).astype(np.float32)}
    graph = parse(SPIKING_DENSE, weights)
    plan = planned(graph, PassOptions(machine=Machine(1e9, 1e9, 1e9, cache_bytes=cache_bytes)))
    assert plan.schedule.block == block and plan.node("fc").attr("weight_layout") == layout_
    assert plan.node("z").type == TensorType((64,), "bits" if layout_ else "spike")
    kernels, _ = lower(plan)
    assert {type(k).__name__ for k in kernels if "Dense" in type(k).__name__} == {
        "AccumulateDenseKernel" if layout_ else "DenseKernel"
    }
    x = np.random.default_rng(4).uniform(0, 1, (9, 64)).astype(np.float32)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(run_passes(graph, ["infer-shapes"]), x))


def test_bit_packed_spikes_take_a_word_per_32_in_the_plan_and_the_kernels() -> None:
    plan = planned(_bits_graph(), PassOptions(alignment=16))
    assert plan.plan.buffer_of(value("f")) == plan.plan.buffer_of(value("z1"))  # views share the words
    assert plan.plan.buffer_of(value("z1")).size == 8  # 40 spikes: two 32-bit words
    by_node = _kernels_by_node(plan)
    assert by_node["z1"].packed and by_node["z1"].arg_dtype("z") == "uint32"
    assert by_node["fc1"].packed and by_node["fc1"].arg_shapes()["x"] == (2,)
    assert not by_node["fc1"].neuron.packed and not by_node["fc2"].packed  # z2 (bytes) runs in fc1's kernel
    assert plan.node("z2").attr("fused") and not plan.node("z1").attr("fused")
    x = np.random.default_rng(6).uniform(0, 1, (4, 40)).astype(np.float32)
    expected = run(run_passes(_bits_graph(), ["infer-shapes"]), x)
    np.testing.assert_array_equal(run(plan, x), expected)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), expected)


@settings(max_examples=60, deadline=None)
@given(st.one_of(graphs(), spiking_dense_graphs()), st.sampled_from([1 << 20, 0]))
def test_a_bits_buffer_holds_4_bytes_per_32_spikes_and_simulates_exactly(graph, cache_bytes: int) -> None:
    options = PassOptions(alignment=16, machine=Machine(6e9, 4e9, 4e7, cache_bytes=cache_bytes))
    plan = planned(graph, options)
    for node in (n for n in plan.nodes if n.type.dtype == "bits"):
        assert plan.plan.buffer_of(value(node.name)).size == 4 * -(-node.type.numel // 32)
    x = np.random.default_rng(1).uniform(0, 3, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(prepared(graph, "spike-dtype"), x))


@settings(max_examples=60, deadline=None)
@given(st.one_of(conv_stages(outputs=(4, 8, 12, 16, 32)), conv_stages(outputs=(16,), max_layers=3)))
def test_kernels_are_told_the_channel_blocks_and_simulate_exactly(graph) -> None:
    plan = planned(graph, PassOptions(alignment=16))
    kernels, calls = lower(plan)
    by_symbol = {kernel.symbol: kernel for kernel in kernels}
    for call in calls:
        kernel, node = by_symbol[call.symbol], call.node
        if isinstance(kernel, Conv2dKernel | Pool2dKernel):
            assert kernel.in_block == activation_block(plan.layout(node.inputs[0]))
        if isinstance(kernel, Conv2dKernel):
            assert kernel.out_block == activation_block(plan.layout(node.name))
    x = np.random.default_rng(1).uniform(0, 3, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), run(prepared(graph, "spike-dtype"), x))


def test_patches_lower_to_row_kernels_with_the_planned_scratch() -> None:
    patched = planned(patch_rows(patch_graph(), 5, 3), PassOptions(alignment=16))
    kernels, calls = lower(patched)  # asserts every kernel's scratch fits the buffer liveness planned
    by_node = {call.node.name: kernels[[k.symbol for k in kernels].index(call.symbol)] for call in calls}
    crop = by_node["in.patch0.rows0_6"]
    assert crop == RowsKernel(crop.symbol, ((2, 12, 7),), ((0, 6),))
    assert by_node["p"] == RowsKernel(by_node["p"].symbol, ((4, 2, 8),) * 2 + ((4, 3, 8),), ((0, 2),) * 2 + ((0, 3),))
    convs = [by_node[f"dw.patch{k}"] for k in range(3)]
    assert all(isinstance(k, Conv2dKernel) for k in convs)
    assert [k.row_padding for k in convs] == [(1, 0), (0, 0), (0, 1)]  # padded at the image's border only
    pools = [by_node[f"p.patch{k}"] for k in range(3)]
    assert all(isinstance(k, Pool2dKernel) for k in pools)
    assert [k.row_padding for k in pools] == [(1, 0), (0, 0), (0, 1)]
