"""infer-shapes, alone: every node typed by its op's shape rule, in order, whatever types were there before. What it
prints and the shape errors it refuses: tests/filecheck/infer-shapes/."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masic.ir.graph import Graph, TensorType
from masic.ir.text import parse
from masic.ir.verify import verify
from masic.passes import PassOptions, infer_shapes
from masic.passes.base import PassError
from tests.strategies import conv_stages, graphs

DECLARED = ("input", "delay", "constant")  # the ops that must declare their type (no operand gives it)


def _stripped(graph: Graph) -> Graph:
    """The graph with every type removed but those the pass requires."""
    return graph.with_nodes([n if n.op in DECLARED else replace(n, type=None) for n in graph.nodes])


@given(st.one_of(graphs(), conv_stages()))
def test_every_type_comes_back_from_the_shape_rules(graph: Graph) -> None:
    typed = infer_shapes.run(_stripped(graph), PassOptions())
    assert typed == graph
    verify(typed)


@given(graphs())
def test_types_present_are_recomputed(graph: Graph) -> None:
    """A wrong type (here every node's shape padded by a dimension) does not survive the pass."""
    wrong = graph.with_nodes(
        [n if n.op in DECLARED else replace(n, type=TensorType((*n.type.shape, 1))) for n in graph.nodes]
    )
    assert infer_shapes.run(wrong, PassOptions()) == graph


TEXT = """graph @g timesteps=1 {
  %in = input() : f32[4]
  %a = relu(%in) : ?
  %b = add(%a, %in) : ?
  output %b
}
"""


@pytest.mark.parametrize(
    ("old", "new", "message", "node"),
    [
        ("relu(%in)", "relu(%b)", r"operand %b has no type \(defined later or not at all\)", "a"),
        ("add(%a, %in)", "add(%a, %ghost)", r"operand %ghost has no type", "b"),
        ("relu(%in)", "softplus(%in)", "unknown op 'softplus'", "a"),
        ("input() : f32[4]", "input() : ?", "input nodes must declare their type", "in"),
    ],
)
def test_graphs_the_verifier_would_refuse_are_refused_by_name(old: str, new: str, message: str, node: str) -> None:
    """The pass does not rely on a verified input: these graphs reach it only through the API, not `masic opt`."""
    with pytest.raises(PassError, match=f"^infer-shapes: {message}") as info:
        infer_shapes.run(parse(TEXT.replace(old, new)), PassOptions())
    assert info.value.node.name == node
