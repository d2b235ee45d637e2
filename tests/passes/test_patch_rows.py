"""patch-rows{budget}, alone: the leading conv stage in row patches with halos, computing exactly what the stage
did, and the coarsest patching whose smallest plan fits the budget. What it prints: tests/filecheck/patch-rows/;
what the kernels make of patches: tests/codegen/test_lowering_choices.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from masic.ir.graph import ParamRef
from masic.ir.interpret import run
from masic.ir.text import parse, print_graph
from masic.ir.verify import VerifyError, verify
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.passes.patch_rows import candidates, patch_rows, stage_ends
from masic.passes.slice_layers import smallest_plan_bytes
from tests.filecheck import filecheck
from tests.pipelines import prepared
from tests.strategies import conv_stages

ALIGN = 16

# A strided conv, a LIF with per-neuron thresholds, a residual depthwise conv and a padded max pool, then a dense
# layer that ends the stage.
GRAPH = """graph @stage timesteps=3 {
  param @c1.w : f32[4,2,3,3]
  param @c1.b : f32[4]
  param @l.v_th : f32[4,6,7]
  param @dw.w : f32[4,1,3,3]
  param @fc.w : f32[3,224]
  %in = input() : f32[2,12,7]
  %c1 = conv2d(%in) {weight=@c1.w, bias=@c1.b, out_channels=4, kernel=(3,3), stride=(2,1), padding=(1,1), dilation=(1,1), groups=1} : f32[4,6,7]
  %l = lif(%c1) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0, v_th=@l.v_th, v_reset=0.0} : f32[4,6,7]
  %dw = conv2d(%l) {weight=@dw.w, out_channels=4, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=4} : f32[4,6,7]
  %r = add(%l, %dw) : f32[4,6,7]
  %p = maxpool2d(%r) {kernel=(2,2), stride=(1,1), padding=(1,1)} : f32[4,7,8]
  %f = flatten(%p) : f32[224]
  %fc = dense(%f) {weight=@fc.w, in_features=224, out_features=3} : f32[3]
  output %fc
}
"""


def _graph():
    rng = np.random.default_rng(0)
    shapes = {"c1.w": (4, 2, 3, 3), "c1.b": (4,), "dw.w": (4, 1, 3, 3), "fc.w": (3, 224)}
    weights = {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in shapes.items()}
    weights["l.v_th"] = rng.uniform(0.3, 1.0, (4, 6, 7)).astype(np.float32)
    return parse(GRAPH, weights)


def _input(graph, seed: int = 0) -> np.ndarray:
    shape = (graph.timesteps, *graph.inputs[0].type.shape)
    return np.random.default_rng(seed).uniform(0, 2, shape).astype(np.float32)


def test_stage_ends_stop_at_flatten_and_never_cut_a_residual() -> None:
    graph = _graph()
    assert [graph.nodes[p].name for p in stage_ends(graph)] == ["c1", "l", "r", "p"]  # not dw: %l is read by %r


C1 = "weight=@c1.w, bias=@c1.b, out_channels=4, kernel=(3,3), stride=(2,1), padding=(1,1), dilation=(1,1), groups=1"
DW = "weight=@dw.w, out_channels=4, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=4"
POOL = "kernel=(2,2), stride=(1,1), padding=(1,1)"


def test_patches_crop_the_input_pad_only_at_the_border_and_join_under_the_stage_end() -> None:
    graph = _graph()
    patched = patch_rows(graph, stage_ends(graph)[-1], 2)
    text = print_graph(patched)
    checks = """
        CHECK: param @l.v_th.rows0_4 : f32[4,4,7]
        CHECK-NEXT: param @l.v_th.rows1_6 : f32[4,5,7]
        CHECK: %in.patch0.rows0_8 = crop_rows(%in) {rows=(0,8)} : f32[2,8,7]
        CHECK-NEXT: %c1.patch0 = conv2d(%in.patch0.rows0_8) {$C1, row_padding=(1,0)} : f32[4,4,7]
        CHECK-NEXT: %l.patch0 = lif(%c1.patch0) {$LIF, v_th=@l.v_th.rows0_4, v_reset=0.0} : f32[4,4,7]
        CHECK-NEXT: %dw.patch0 = conv2d(%l.patch0) {$DW, row_padding=(1,0)} : f32[4,3,7]
        CHECK-NEXT: %l.patch0.rows0_3 = crop_rows(%l.patch0) {rows=(0,3)} : f32[4,3,7]
        CHECK-NEXT: %r.patch0 = add(%l.patch0.rows0_3, %dw.patch0) : f32[4,3,7]
        CHECK-NEXT: %p.patch0 = maxpool2d(%r.patch0) {$POOL, row_padding=(1,0)} : f32[4,3,8]
        CHECK-NEXT: %in.patch1.rows1_12 = crop_rows(%in) {rows=(1,12)} : f32[2,11,7]
        CHECK-NEXT: %c1.patch1 = conv2d(%in.patch1.rows1_12) {$C1, row_padding=(0,0)} : f32[4,5,7]
        CHECK-NEXT: %l.patch1 = lif(%c1.patch1) {$LIF, v_th=@l.v_th.rows1_6, v_reset=0.0} : f32[4,5,7]
        CHECK-NEXT: %dw.patch1 = conv2d(%l.patch1) {$DW, row_padding=(0,1)} : f32[4,4,7]
        CHECK-NEXT: %l.patch1.rows2_6 = crop_rows(%l.patch1) {rows=(1,5)} : f32[4,4,7]
        CHECK-NEXT: %r.patch1 = add(%l.patch1.rows2_6, %dw.patch1) : f32[4,4,7]
        CHECK-NEXT: %p.patch1 = maxpool2d(%r.patch1) {$POOL, row_padding=(0,1)} : f32[4,4,8]
        CHECK-NEXT: %p = concat(%p.patch0, %p.patch1) {axis=1} : f32[4,7,8]
        CHECK-NEXT: %f = flatten(%p) : f32[224]
    """
    for name, value in {
        "$C1": C1,
        "$DW": DW,
        "$POOL": POOL,
        "$LIF": "dt_tau_mem=0.5, neg_dt_tau_syn=-0.25, v_leak=0.0",
    }.items():
        checks = checks.replace(name, value)
    filecheck(text, checks)
    assert "param @l.v_th :" not in text  # the whole parameter is no longer used
    assert parse(text, patched.weights) == patched
    x = _input(graph)
    np.testing.assert_array_equal(run(patched, x), run(graph, x))


@settings(max_examples=60)
@given(conv_stages(), st.data())
def test_any_patching_computes_exactly_what_the_graph_does(graph, data) -> None:
    ends = stage_ends(graph)
    assume(ends)
    end = data.draw(st.sampled_from(ends), "end")
    pieces = data.draw(st.integers(2, graph.nodes[end].type.shape[1] + 1), "pieces")
    patched = patch_rows(graph, end, pieces)
    if patched is None:  # more patches than rows, or a patch whose window holds only padding
        return
    verify(patched)
    assert parse(print_graph(patched), patched.weights) == patched
    assert sum(n.op == "concat" and n.attr("axis") == 1 for n in patched.nodes) == 1
    x = _input(graph, data.draw(st.integers(0, 3), "seed"))
    np.testing.assert_array_equal(run(patched, x), run(graph, x))


@settings(max_examples=30, deadline=None)
@given(conv_stages(max_layers=5), st.floats(0.5, 1.0))  # patching helps just below the smallest plan
def test_the_pass_patches_only_to_fit_and_computes_exactly_the_same(graph, where) -> None:
    """Budgets up to the unpatched smallest plan: the graph is unchanged, or patched so that its smallest plan
    fits; a budget the smallest plan fits, or the resident plan, leaves it unchanged."""
    before = prepared(graph, "patch-rows")
    unpatched = smallest_plan_bytes(before, ALIGN)
    budget = max(ALIGN, int(where * unpatched))
    after = run_passes(before, ["patch-rows"], PassOptions(budget=budget, alignment=ALIGN))
    capacity = budget - budget % ALIGN
    if after is not before:
        assert smallest_plan_bytes(after, ALIGN, capacity) <= capacity
        assert sum(n.op == "concat" and n.attr("axis") == 1 for n in after.nodes) == 1
        x = _input(graph, 3)
        np.testing.assert_array_equal(run(after, x), run(before, x))
    assert run_passes(before, ["patch-rows"], PassOptions(budget=unpatched, alignment=ALIGN)) is before


def test_the_coarsest_patching_that_fits_is_chosen() -> None:
    graph = _graph()
    unpatched = smallest_plan_bytes(graph, ALIGN)
    sizes = [(smallest_plan_bytes(g, ALIGN), g) for g in candidates(graph, ALIGN)]
    fitting = [(size, g) for size, g in sizes if size < unpatched]
    assert fitting, "some patching needs less than the whole stage"
    size, expected = fitting[0]
    chosen = run_passes(graph, ["patch-rows"], PassOptions(budget=size, alignment=ALIGN))
    assert chosen.nodes == expected.nodes  # the first candidate, coarsest first, that fits
    assert run_passes(graph, ["patch-rows"], PassOptions(budget=unpatched, alignment=ALIGN)) is graph
    assert run_passes(graph, ["patch-rows"], PassOptions(budget=min(s for s, _ in sizes) - 1)) is graph
    x = _input(graph, 2)
    np.testing.assert_array_equal(run(chosen, x), run(graph, x))


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("%y = crop_rows(%x) {rows=(2,9)} : f32[2,7,5]", "not a non-empty range"),
        ("%y = crop_rows(%x) {rows=(3,3)} : f32[2,0,5]", "not a non-empty range"),
        ("%y = concat(%x, %x) {axis=3} : f32[2,16,5]", "concat joins along axis 0, or 1 of"),
        ("%y = concat(%x, %x) {axis=2} : f32[2,8,10]", "concat joins along axis 0, or 1 of"),  # no kernel joins columns
        ("%y = maxpool2d(%x) {kernel=(2,2), stride=(1,1), padding=(1,1), row_padding=(2,0)} : f32[2,9,6]", "exceeds"),
        (
            "%y = avgpool2d(%x) {kernel=(3,3), stride=(1,1), padding=(1,1), row_padding=(-1,1)} : f32[2,6,5]",
            "at least 0",
        ),
    ],
)
def test_the_verifier_rejects_bad_crops_concats_and_row_padding(line: str, error: str) -> None:
    text = f"graph @bad timesteps=1 {{\n  %x = input() : f32[2,8,5]\n  {line}\n  output %y\n}}\n"
    with pytest.raises(VerifyError, match=error):
        verify(parse(text))


def test_per_element_parameters_are_cut_to_the_rows() -> None:
    graph = _graph()
    patched = patch_rows(graph, 2, 2)  # the stage ends at the LIF
    for node in (n for n in patched.nodes if n.op == "lif"):
        ref = node.attr("v_th")
        assert isinstance(ref, ParamRef) and patched.param(ref.name).type.shape == node.type.shape
        lo, hi = map(int, ref.name.removeprefix("l.v_th.rows").split("_"))
        np.testing.assert_array_equal(patched.weights[ref.name], graph.weights["l.v_th"][:, lo:hi])
