"""Textual IR: printing is deterministic and parses back to an equal graph."""

from __future__ import annotations

import pytest
from hypothesis import given

from masic.ir.graph import TensorType
from masic.ir.text import ParseError, parse, parse_attr, print_graph
from tests.pipelines import planned
from tests.strategies import graphs

TEXT = """graph @tiny timesteps=4 {
  param @fc.w : f32[3,2]
  %in = input() : f32[2] loc("model input")
  %fc = dense(%in) {weight=@fc.w, in_features=2, out_features=3} : f32[3] loc("model.0 (Linear)")
  %lif = lif(%fc) {dt_tau_mem=0.1, neg_dt_tau_syn=-0.2, v_leak=0.0, v_th=1.0, v_reset=0.0} : f32[3]
  output %lif
}
"""


def test_known_text_round_trips_exactly() -> None:
    graph = parse(TEXT)
    assert print_graph(graph) == TEXT
    assert graph.node("fc").type == TensorType((3,))
    assert graph.node("fc").loc == "model.0 (Linear)"


@given(graphs())
def test_random_graphs_round_trip(graph) -> None:
    text = print_graph(graph)
    assert parse(text, graph.weights) == graph
    assert print_graph(parse(text)) == text


@given(graphs())
def test_planned_graphs_round_trip(graph) -> None:
    plan = planned(graph)  # with its plan section, and a schedule line where it is not the default
    assert parse(print_graph(plan), plan.weights) == plan


def test_float_attributes_keep_every_bit() -> None:
    value = float.fromhex("0x1.99999ap-4")  # float32(0.1)
    assert parse_attr(repr(value)) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("graph @g timesteps=1 {\n  %a = input() : f32[2\n}\n", "line 2"),
        ("graph @g timesteps=1 {\n  %a = input() : f32[2]\n", "missing header or output"),
        ("graph @g timesteps=1 {\n  %a = dense(%x) {weight=} : f32[2]\n}\n", "line 2"),
        ("nonsense\n", "line 1: unexpected line"),
    ],
)
def test_malformed_text_names_the_line(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(text)
