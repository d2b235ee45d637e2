"""Pass-level tests: each pass's contract, in textual IR and as properties over random graphs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from masic.analysis.liveness import analyse
from masic.ir.interpret import run
from masic.ir.text import parse, print_graph
from masic.ir.verify import verify
from masic.passes import (
    DEFAULT_PIPELINE,
    REGISTRY,
    PassOptions,
    assign_offsets,
    check_budget,
    fold_batchnorm,
    infer_shapes,
)
from masic.passes.base import PassError
from masic.passes.check_budget import BudgetError
from masic.passes.manager import PassManager
from tests.filecheck import filecheck
from tests.pipelines import UNFUSED_PIPELINE
from tests.strategies import graphs

CONV_BN = """graph @cbn timesteps=2 {
  param @c.w : f32[2,1,3,3]
  param @bn.mean : f32[2]
  param @bn.var : f32[2]
  param @bn.gamma : f32[2]
  param @bn.beta : f32[2]
  %in = input() : f32[1,5,5]
  %c = conv2d(%in) {weight=@c.w, out_channels=2, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : ?
  %bn = batchnorm2d(%c) {mean=@bn.mean, var=@bn.var, eps=1e-05, gamma=@bn.gamma, beta=@bn.beta} : ?
  %z = iaf(%bn) {v_th=0.5, v_reset=0.0} : ?
  %f = flatten(%z) : ?
  output %f
}
"""


def _conv_bn_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "c.w": rng.normal(size=(2, 1, 3, 3)).astype(np.float32),
        "bn.mean": rng.normal(size=2).astype(np.float32),
        "bn.var": rng.uniform(0.5, 2, size=2).astype(np.float32),
        "bn.gamma": rng.normal(size=2).astype(np.float32),
        "bn.beta": rng.normal(size=2).astype(np.float32),
    }


def test_registry_names_match_modules() -> None:
    assert set(DEFAULT_PIPELINE) <= set(REGISTRY)
    for name, module in [("infer-shapes", infer_shapes), ("fold-batchnorm", fold_batchnorm)]:
        assert module.__name__.endswith(name.replace("-", "_"))
        assert REGISTRY[name].run is module.run


def test_infer_shapes_fills_every_type() -> None:
    graph = infer_shapes.run(parse(CONV_BN, _conv_bn_weights()), PassOptions())
    filecheck(
        print_graph(graph),
        """
        CHECK: %c = conv2d(%in) {{.*}}
        CHECK-NOT: : ?
        CHECK: %f = flatten(%z) : f32[50]
        """.replace(" {{.*}}", ""),
    )
    verify(graph)


def test_infer_shapes_names_the_node_that_does_not_fit() -> None:
    bad = CONV_BN.replace("kernel=(3,3)", "kernel=(9,9)")
    with pytest.raises(PassError, match="infer-shapes: conv2d kernel 9x9 does not fit input 5x5") as info:
        infer_shapes.run(parse(bad, _conv_bn_weights()), PassOptions())
    assert info.value.node.name == "c"


def test_fold_batchnorm_removes_the_node_and_keeps_results() -> None:
    graph = infer_shapes.run(parse(CONV_BN, _conv_bn_weights()), PassOptions())
    folded = fold_batchnorm.run(graph, PassOptions())
    filecheck(
        print_graph(folded),
        """
        CHECK: param @c.weight.folded : f32[2,1,3,3]
        CHECK-NEXT: param @c.bias.folded : f32[2]
        CHECK: %c = conv2d(%in) {weight=@c.weight.folded,
        CHECK-NOT: batchnorm2d
        CHECK: %z = iaf(%c)
        """,
    )
    verify(folded)
    x = np.random.default_rng(2).uniform(0, 1, (3, 1, 5, 5)).astype(np.float32)
    before, after = run(graph, x), run(folded, x)
    assert np.mean(before != after) < 0.01  # spikes may flip only where the membrane sits at the threshold


def test_fold_batchnorm_refuses_a_batchnorm_without_conv() -> None:
    text = CONV_BN.replace("%bn = batchnorm2d(%c)", "%bn = batchnorm2d(%in)").replace("mean=@bn.mean", "mean=@bn.mean")
    weights = _conv_bn_weights()
    for key in ("bn.mean", "bn.var", "bn.gamma", "bn.beta"):
        weights[key] = weights[key][:1]
    text = text.replace("f32[2]\n  param @bn.var : f32[2]", "f32[1]\n  param @bn.var : f32[1]")
    text = text.replace("@bn.gamma : f32[2]", "@bn.gamma : f32[1]").replace("@bn.beta : f32[2]", "@bn.beta : f32[1]")
    with pytest.raises(PassError, match="fold-batchnorm: batch norm must follow a conv2d"):
        fold_batchnorm.run(infer_shapes.run(parse(text, weights), PassOptions()), PassOptions())


@given(graphs(), st.sampled_from([16, 64]))
def test_plans_are_valid_and_never_below_the_lower_bound(graph, alignment) -> None:
    planned = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=alignment)).run(graph)
    verify(planned)  # includes the independent plan checker
    plan = planned.plan
    assert plan.arena_bytes >= plan.lower_bound == analyse(planned, alignment).lower_bound  # under the chosen schedule
    assert all(b.offset % alignment == 0 for b in plan.buffers)


@given(graphs())
def test_plan_simulator_matches_the_interpreter(graph) -> None:
    planned = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(graph)
    x = np.random.default_rng(0).uniform(0, 2, graph.inputs[0].type.shape).astype(np.float32)
    expected = run(planned, x)
    simulated = run(planned, x, simulate_plan=True)
    np.testing.assert_array_equal(simulated, expected)


def test_simulator_exposes_a_plan_that_overlaps_live_buffers() -> None:
    """An activation moved onto neuron state corrupts the state: the checker rejects the plan, and the simulator,
    run on it anyway, no longer matches the interpreter."""
    from dataclasses import replace

    from masic.ir.verify import VerifyError

    planned = PassManager(UNFUSED_PIPELINE, PassOptions(alignment=16)).run(parse(CONV_BN, _conv_bn_weights()))
    plan = planned.plan
    moved = tuple(replace(b, offset=plan.buffer("z.v").offset) if b.name == "c" else b for b in plan.buffers)
    broken = replace(planned, plan=replace(plan, buffers=moved))
    with pytest.raises(VerifyError, match="live together and overlap"):
        verify(broken)
    x = np.random.default_rng(3).uniform(0, 1, (4, 1, 5, 5)).astype(np.float32)
    assert not np.array_equal(run(broken, x, simulate_plan=True), run(planned, x))


def test_liveness_pins_state_and_weights_and_keeps_scratch_inside_its_node() -> None:
    graph = PassManager(UNFUSED_PIPELINE, PassOptions(alignment=16)).run(parse(CONV_BN, _conv_bn_weights()))
    n = len(graph.nodes)
    buffers = {b.name: b for b in graph.plan.buffers}
    assert (buffers["z.v"].start, buffers["z.v"].end) == (0, n)
    assert (buffers["@c.weight.folded"].start, buffers["@c.weight.folded"].end) == (0, n)
    conv_position = [node.name for node in graph.nodes].index("c")
    assert (buffers["c.scratch"].start, buffers["c.scratch"].end) == (conv_position, conv_position + 1)
    values = dict(graph.plan.values)
    assert values["z"] == "c"  # the neuron updates in place over the conv output, which dies there
    assert values["f"] == "c"  # flatten is a view of its operand
    assert buffers["c"].kind == "io" and buffers["c"].end == n
    assert "z" not in buffers and "f" not in buffers


def test_neurons_do_not_overwrite_an_operand_that_is_read_later() -> None:
    text = CONV_BN.replace("%f = flatten(%z) : ?", "%f = add(%z, %bn) : ?")  # %c after folding
    graph = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(parse(text, _conv_bn_weights()))
    values = dict(graph.plan.values)
    assert values["z"] == "z" and values["c"] == "c"
    x = np.random.default_rng(5).uniform(0, 1, (3, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(graph, x, simulate_plan=True), run(graph, x))


def test_check_budget_refuses_with_the_bytes_needed() -> None:
    graph = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(parse(CONV_BN, _conv_bn_weights()))
    needed = graph.plan.arena_bytes
    assert check_budget.run(graph, PassOptions(budget=needed)) is graph
    with pytest.raises(BudgetError, match=rf"the plan needs .* \({needed} bytes, of which .* weights\)"):
        check_budget.run(graph, PassOptions(budget=needed - 1))


def test_assign_offsets_requires_folded_batchnorm() -> None:
    graph = infer_shapes.run(parse(CONV_BN, _conv_bn_weights()), PassOptions())
    with pytest.raises(PassError, match="run fold-batchnorm first"):
        assign_offsets.run(graph, PassOptions())


def test_manager_prints_times_and_dumps_after_each_pass(tmp_path) -> None:
    printed: list[str] = []
    manager = PassManager(DEFAULT_PIPELINE, PassOptions(), print_after_all=True, dump_dir=tmp_path, emit=printed.append)
    manager.run(parse(CONV_BN, _conv_bn_weights()))
    assert [name for name, _ in manager.timings] == list(DEFAULT_PIPELINE)
    assert [p.splitlines()[0] for p in printed] == [f"// ----- IR after {n} -----" for n in DEFAULT_PIPELINE]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:02d}-{n}.ir" for i, n in enumerate(DEFAULT_PIPELINE)]
    assert "batchnorm2d" in (tmp_path / "00-infer-shapes.ir").read_text()
    assert "batchnorm2d" not in (tmp_path / "01-fold-batchnorm.ir").read_text()


def test_manager_refuses_unknown_pass_names() -> None:
    with pytest.raises(ValueError, match="unknown pass 'fuse-everything'"):
        PassManager(["fuse-everything"])
