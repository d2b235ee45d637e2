"""Every operand is checked (issue 14, item 3): a graph whose operand or parameter shapes disagree is refused by
infer-shapes, naming the node, before any kernel is chosen; it is never compiled into a kernel that reads past a
weight or a value. Lowering checks every kernel argument against the bytes of what it is bound to, the guard
behind the shape rules that these properties hold to account."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from masic.codegen.lower import lower
from masic.ir.graph import Graph, Node, TensorType
from masic.passes.base import PassError
from tests.artifacts import masic_cli
from tests.pipelines import planned
from tests.strategies import BINARY, graphs


@st.composite
def perturbed(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Another shape near `shape`: one dimension a little larger or smaller, an axis more, or the axes merged."""
    kinds = ["resize", "extra axis", *(["merged"] if len(shape) > 1 else [])]
    kind = draw(st.sampled_from(kinds))
    if kind == "resize":
        axis = draw(st.integers(0, len(shape) - 1))
        size = draw(st.sampled_from([s for s in (shape[axis] - 1, shape[axis] + 1, shape[axis] + 2) if s >= 1]))
        return (*shape[:axis], size, *shape[axis + 1 :])
    if kind == "extra axis":
        axis = draw(st.integers(0, len(shape)))
        return (*shape[:axis], draw(st.integers(1, 2)), *shape[axis:])
    return (int(np.prod(shape)),)


def _plan(graph: Graph) -> Graph | PassError:
    """The graph planned without a budget, or the refusal."""
    try:
        return planned(graph)
    except PassError as err:
        return err


def _refused_by_infer_shapes(outcome: Graph | PassError) -> Node:
    assert isinstance(outcome, PassError), "compiled although an operand does not fit"
    assert outcome.pass_name == "infer-shapes", str(outcome)
    assert outcome.node is not None
    return outcome.node


@given(graphs(), st.data())
def test_a_parameter_of_another_shape_is_refused_before_planning(graph: Graph, data: st.DataObject) -> None:
    assume(graph.params)
    param = data.draw(st.sampled_from(graph.params))
    shape = data.draw(perturbed(param.type.shape))
    node = _refused_by_infer_shapes(_plan(graph.with_params({param.name: np.zeros(shape, np.float32)})))
    assert param.name in {ref.name for _, ref in node.param_refs()}


def _must_refuse(node: Node, old: TensorType, new: TensorType) -> bool:
    """Whether the node's other operands or parameters pin the shape of the operand swapped from `old` to `new`:
    a dense layer's input features, a binary op's other operands, a conv's input channels (its weight's), and the
    operand of an element-wise op or neuron with per-element parameters (of its output's, that is its operand's,
    shape)."""
    if new.shape == old.shape:
        return False
    if node.op == "conv2d":
        return len(new.shape) != 3 or new.shape[0] != old.shape[0]
    return node.op in ("dense", *BINARY) or any(True for _ in node.param_refs())


@given(graphs(), st.data())
def test_an_operand_of_another_shape_is_refused_or_read_within_bounds(graph: Graph, data: st.DataObject) -> None:
    """The input's shape changed (as --input-shape changes it) or one operand swapped for another value: refused
    by infer-shapes (always, when the node's weights or other operands pin that operand's shape), or planned into
    kernels that each read and write within their values."""
    readers = [k for k, node in enumerate(graph.nodes) if node.inputs and k > 1]
    if readers and data.draw(st.booleans()):
        k = data.draw(st.sampled_from(readers))
        node = graph.nodes[k]
        slot = data.draw(st.integers(0, len(node.inputs) - 1))
        old = graph.node(node.inputs[slot])
        new = data.draw(st.sampled_from([n for n in graph.nodes[:k] if n.name != old.name]))
        inputs = (*node.inputs[:slot], new.name, *node.inputs[slot + 1 :])
        broken = graph.with_nodes([*graph.nodes[:k], replace(node, inputs=inputs), *graph.nodes[k + 1 :]])
        outcome = _plan(broken)
        if _must_refuse(node, old.type, new.type):
            assert _refused_by_infer_shapes(outcome).name == node.name
    else:
        (source,) = graph.inputs
        shape = data.draw(perturbed(source.type.shape))
        outcome = _plan(graph.with_nodes([replace(source, type=TensorType(shape)), *graph.nodes[1:]]))
    if isinstance(outcome, PassError):
        _refused_by_infer_shapes(outcome)
    else:
        lower(outcome)  # stops with an AssertionError at a kernel that would reach past a value


def test_digits_with_an_input_of_three_channels_is_refused(tmp_path: Path) -> None:
    """The digits CNN's first conv takes 1 channel: an input of 3 compiled, and its kernel read past the weight."""
    out = tmp_path / "out"
    result = masic_cli("compile", "examples.digits:digits_model", "--input-shape", "3,8,8", "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "masic: error: weight @0.weight is f32[16,1,3,3], but a conv2d of f32[3,8,8] reads f32[16,3,3,3] "
        "[at %0, model.0 (Conv2d)]"
    )
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_digits_with_an_image_of_another_size_plans() -> None:
    """A conv pins its input's channels, not the image size: at 9x9 the 2x2 max pool still gives the dense layer
    the 16x4x4 features its weight takes, so the model plans."""
    result = masic_cli("compile", "examples.digits:digits_model", "--input-shape", "1,9,9", "--emit", "plan")
    assert result.returncode == 0, result.stderr
