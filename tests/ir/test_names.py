"""Buffer identities (masic.ir.names): their text is what plans, model.c and manifests show, a plan's text
resolves back to the identities of its graph, and a name the graph places nothing under is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from masic.ir.graph import Schedule
from masic.ir.names import param, role, scratch, state, value
from masic.ir.text import ParseError, parse, placeable, print_graph
from masic.passes import PassOptions
from tests.pipelines import planned

TEXT = """graph @g timesteps=4 {
  param @c.w : f32[2,1,3,3]
  %in = input() : f32[1,5,5]
  %c = conv2d(%in) {weight=@c.w, out_channels=2, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : f32[2,5,5]
  %z = lif(%c) {dt_tau_mem=0.1, neg_dt_tau_syn=-0.2, v_leak=0.0, v_th=1.0, v_reset=0.0} : f32[2,5,5]
  output %z
}
"""


@pytest.mark.parametrize(
    ("ident", "text"),
    [
        (value("z"), "z"),
        (value("z", 3), "z@3"),
        (state("z", "v"), "z.v"),
        (param("c.w"), "@c.w"),
        (scratch("c"), "c.scratch"),
        (scratch("c", 0), "c.scratch@0"),
    ],
)
def test_each_identity_shows_its_text(ident, text: str) -> None:
    assert str(ident) == text
    assert ident.at(None).step is None and ident.at(2).at(None) == ident.at(None)


def test_values_and_scratch_have_a_copy_per_step_state_and_parameters_one() -> None:
    assert value("x").per_step and scratch("x").per_step
    assert not state("x", "v").per_step and not param("x").per_step


@pytest.mark.parametrize("block", [1, 4])
def test_a_plans_text_resolves_to_the_identities_of_its_graph(block: int) -> None:
    graph = replace(parse(TEXT), schedule=Schedule(block))
    plan = planned(graph, PassOptions(alignment=16), without=("schedule",))
    assert plan.schedule.block == block
    assert parse(print_graph(plan), plan.weights) == plan
    texts = {str(b.name) for b in plan.plan.buffers}
    assert ("c.scratch@3" in texts) == (block == 4) and ("c.scratch" in texts) == (block == 1)
    known = placeable(plan)
    assert all(known[str(ident)] == ident for pair in plan.plan.values for ident in pair)


def test_a_plan_naming_what_the_graph_does_not_place_is_refused() -> None:
    plan = planned(parse(TEXT), PassOptions(alignment=16))
    text = print_graph(plan).replace("value %z.v -> z.v", "value %z.w -> z.v")
    with pytest.raises(ParseError, match=r"line \d+: z.w is no value, state, parameter or scratch of the graph"):
        parse(text)


def test_a_manifest_row_names_which_of_its_layers_buffers_it_is() -> None:
    assert [role(str(i)) for i in (state("z", "v"), param("c.w"), scratch("c"), value("z"))] == [
        "v",
        "w",
        "scratch",
        "z",
    ]
