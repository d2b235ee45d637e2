"""slice-layers{budget}, alone, on graphs prepared by the passes before it: layers whose weights the budget cannot
hold are cut along their outputs into pieces of at most one power-of-two size (or one output row), at most
MAX_PIECES a layer, that compute exactly what the layer computed; the piece size follows from the budget. The text
of what it does: tests/filecheck/slice-layers/."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.ir.graph import Graph, ParamRef
from masic.ir.interpret import run
from masic.ir.verify import verify
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.passes.slice_layers import (
    MAX_PIECES,
    SLOT_SHARE,
    candidate_limits,
    resident_bytes,
    slice_to,
    smallest_plan_bytes,
)
from tests.norse_models import MODELS
from tests.pipelines import prepared
from tests.strategies import conv_stages, graphs

ALIGN = 16
RANDOM_GRAPHS = st.one_of(graphs(max_layers=4), conv_stages(max_layers=4))


def _sliceable(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op == "dense" or (n.op == "conv2d" and n.attr("groups") == 1)]


def _pieces(graph: Graph) -> dict[str, list]:
    """The layers cut into pieces, by the name the concat that joins them keeps."""
    pieces: dict[str, list] = {}
    for node in _sliceable(graph):
        if ".part" in node.name:
            pieces.setdefault(node.name.rsplit(".part", 1)[0], []).append(node)
    return pieces


def _inputs(graph: Graph) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 2, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(RANDOM_GRAPHS, st.data())
def test_slicing_at_any_size_computes_exactly_the_same(graph: Graph, data: st.DataObject) -> None:
    before = prepared(graph, "slice-layers")
    limits = candidate_limits(before)
    limit = data.draw(st.sampled_from(limits)) if limits else 1
    sliced = slice_to(before, limit)
    verify(sliced)
    for node in _sliceable(sliced):
        weight = sliced.param(node.attr("weight").name).type
        assert weight.nbytes <= limit or weight.shape[0] == 1  # whole layers too: all larger ones are cut
    for name, parts in _pieces(sliced).items():
        assert sliced.node(name).op == "concat" and sliced.node(name).inputs == tuple(p.name for p in parts)
        assert sum(p.type.shape[0] for p in parts) == before.node(name).type.shape[0]
    x = _inputs(graph)
    np.testing.assert_array_equal(run(sliced, x), run(before, x))  # each output by the same arithmetic


@settings(max_examples=30, deadline=None)
@given(RANDOM_GRAPHS, st.floats(0.0, 1.0))
def test_the_budget_chooses_one_piece_size_for_every_layer(graph: Graph, where: float) -> None:
    """Some candidate size L bounds every piece (or the piece is one row) and every layer left whole; at most
    MAX_PIECES pieces a layer; the smallest plan of the result fits the budget, or the slicing is the finest."""
    before = prepared(graph, "slice-layers")
    resident = resident_bytes(before, ALIGN)
    budget = max(1, int(where * resident))
    after = run_passes(before, ["slice-layers"], PassOptions(budget=budget, alignment=ALIGN))
    limits = candidate_limits(before)
    if after is before:
        return  # nothing to slice, or every weight fits resident (test below)
    assert any(
        all(
            after.param(n.attr("weight").name).type.nbytes <= limit
            or after.param(n.attr("weight").name).type.shape[0] == 1
            for n in _sliceable(after)
        )
        for limit in limits
    )
    assert all(len(parts) <= MAX_PIECES for parts in _pieces(after).values())
    capacity = budget - budget % ALIGN
    finest = slice_to(before, limits[-1])
    assert smallest_plan_bytes(after, ALIGN, capacity) <= capacity or after.nodes == finest.nodes
    x = _inputs(graph)
    np.testing.assert_array_equal(run(after, x), run(before, x))


@settings(max_examples=30, deadline=None)
@given(RANDOM_GRAPHS)
def test_nothing_is_sliced_without_a_budget_or_when_every_weight_fits_resident(graph: Graph) -> None:
    before = prepared(graph, "slice-layers")
    assert run_passes(before, ["slice-layers"]) is before
    resident = resident_bytes(before, ALIGN)
    assert run_passes(before, ["slice-layers"], PassOptions(budget=resident, alignment=ALIGN)) is before


def test_streamed_pieces_leave_most_of_the_budget_to_resident_weights() -> None:
    """Below the all-resident plan, pieces are cut to at most 1/SLOT_SHARE of the budget where the layer allows."""
    from masic.frontends.norse import import_norse

    factory, _ = MODELS["dense"]
    before = prepared(import_norse(factory(), timesteps=4), "slice-layers")
    budget = resident_bytes(before, ALIGN) * 3 // 4
    after = run_passes(before, ["slice-layers"], PassOptions(budget=budget, alignment=ALIGN))
    limit = max(candidate_limits(before)[-1], budget // SLOT_SHARE)
    pieces = [p for p in after.params if ".part" in p.name]
    assert pieces, "the largest layer must be sliced"
    assert all(p.type.nbytes <= max(limit, p.type.nbytes // p.type.shape[0]) for p in pieces)


def test_biases_are_sliced_with_their_weights() -> None:
    from masic.frontends.norse import import_norse

    factory, _ = MODELS["dense"]
    before = prepared(import_norse(factory(), timesteps=4), "slice-layers")
    after = slice_to(before, 16 * 20 * 4)  # the first layer (48 x 20) in three pieces of 16 rows
    parts = [n for n in after.nodes if n.name.startswith("0.part")]
    assert len(parts) == 3
    for k, part in enumerate(parts):
        weight, bias = (after.weights[part.attr(key).name] for key in ("weight", "bias"))
        whole_weight, whole_bias = (before.weights[before.node("0").attr(key).name] for key in ("weight", "bias"))
        np.testing.assert_array_equal(weight, whole_weight[16 * k : 16 * (k + 1)])
        np.testing.assert_array_equal(bias, whole_bias[16 * k : 16 * (k + 1)])
        assert isinstance(part.attr("bias"), ParamRef) and part.attr("out_features") == 16
