"""Textual IR: printing is deterministic and parses back to an equal graph."""

from __future__ import annotations

import pytest
from hypothesis import given

from masic.ir.graph import TensorType
from masic.ir.text import ParseError, parse, parse_attr, print_graph
from masic.passes import DEFAULT_PIPELINE, PassOptions
from masic.passes.manager import PassManager
from tests.filecheck import filecheck
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
    planned = PassManager(DEFAULT_PIPELINE, PassOptions()).run(graph)
    assert parse(print_graph(planned), planned.weights) == planned


def test_float_attributes_keep_every_bit() -> None:
    value = float.fromhex("0x1.99999ap-4")  # float32(0.1)
    assert parse_attr(repr(value)) == value


def test_plan_section_is_printed() -> None:
    planned = PassManager(DEFAULT_PIPELINE, PassOptions(alignment=16)).run(parse(TEXT))
    filecheck(
        print_graph(planned),
        """
        CHECK: graph @tiny timesteps=4 {
        CHECK: output %lif
        CHECK: plan arena=
        CHECK: buffer @fc.w weight size=24 live=[0,3)
        CHECK: buffer lif.v state size=12 live=[0,3)
        CHECK-NEXT: buffer lif.i state size=12 live=[0,3)
        CHECK: buffer in io size=8 live=[0,2)
        CHECK: buffer fc io size=12 live=[1,3)
        CHECK: value @fc.w -> @fc.w
        CHECK: value %lif -> fc
        CHECK-NEXT: value %lif.v -> lif.v
        """,
    )


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
