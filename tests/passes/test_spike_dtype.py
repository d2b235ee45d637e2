"""spike-dtype, alone: which values hold spikes, that they are exactly 0/1 bytes, that the graph computes the same,
and the text and verifier rules of spike types. What it prints: tests/filecheck/spike-dtype/; what the planner,
the simulator and weights.bin make of spikes: tests/test_spike_storage.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.ir.graph import Graph, TensorType
from masic.ir.interpret import run
from masic.ir.text import ParseError, parse, print_graph
from masic.ir.verify import VerifyError, verify
from masic.opt import run_passes
from masic.passes import DEFAULT_PIPELINE
from masic.passes.patch_rows import patch_rows
from masic.passes.slice_layers import slice_to
from masic.passes.spike_dtype import spiking
from tests.pipelines import prepared
from tests.strategies import conv_stages, graphs, spiking_dense_graphs

LIF = "dt_tau_mem=0.5, neg_dt_tau_syn=-0.5, v_leak=0.0, v_th=0.3, v_reset=0.0"
# conv -> lif -> maxpool -> flatten -> dense -> lif -> dense -> li: the digits example's shape
CONVNET = f"""graph @convnet timesteps=4 {{
  param @c.w : f32[4,1,3,3]
  param @fc1.w : f32[16,36]
  param @fc1.b : f32[16]
  param @fc2.w : f32[3,16]
  %in = input() : f32[1,6,6]
  %c = conv2d(%in) {{weight=@c.w, out_channels=4, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1}} : ?
  %z1 = lif(%c) {{{LIF}}} : ?
  %p = maxpool2d(%z1) {{kernel=(2,2), stride=(2,2), padding=(0,0)}} : ?
  %f = flatten(%p) : ?
  %fc1 = dense(%f) {{weight=@fc1.w, bias=@fc1.b, in_features=36, out_features=16}} : ?
  %z2 = lif(%fc1) {{{LIF}}} : ?
  %fc2 = dense(%z2) {{weight=@fc2.w, in_features=16, out_features=3}} : ?
  %out = li(%fc2) {{dt_tau_mem=0.5, neg_dt_tau_syn=-0.5, v_leak=0.0}} : ?
  output %out
}}
"""


def weights(text: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Normal weights (the parser's random ones are all positive: every neuron would spike at every step)."""
    rng = np.random.default_rng(seed)
    return {p.name: rng.normal(0, 1, p.type.shape).astype(np.float32) for p in parse(text).params}


def typed(text: str) -> Graph:
    """The graph as spike-dtype receives it."""
    return prepared(parse(text, weights(text)), "spike-dtype")


def spiked(text: str) -> Graph:
    return run_passes(typed(text), ["spike-dtype"])


def inputs(graph: Graph, steps: int = 6) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 3, (steps, *graph.inputs[0].type.shape)).astype(np.float32)


def test_registered_in_the_default_pipeline_before_slicing() -> None:
    order = list(DEFAULT_PIPELINE)
    assert order.index("fold-batchnorm") < order.index("spike-dtype") < order.index("slice-layers")


@settings(max_examples=60, deadline=None)
@given(st.one_of(graphs(), conv_stages(), spiking_dense_graphs()))
def test_spikes_are_bytes_of_0_and_1_and_change_no_result(graph: Graph) -> None:
    """On random graphs: only spiking neurons and what passes their spikes on become spikes, never the output; each
    holds exactly 0 or 1 at every step; the graph computes bit for bit what it did; a second run changes nothing."""
    before = prepared(graph, "spike-dtype")
    after = run_passes(before, ["spike-dtype"])
    assert after.node(after.output).type.dtype == "f32"
    passing = ("maxpool2d", "flatten", "reshape", "crop_rows", "concat", "delay")
    x = inputs(graph, graph.timesteps)
    for node in after.nodes:
        assert node.type.shape == before.node(node.name).type.shape
        if node.type.dtype == "spike":
            assert spiking(node) or node.op in passing, node
            values = run(replace(after, output=node.name), x)  # the interpreter itself does not verify
            assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1}, node
    np.testing.assert_array_equal(run(after, x), run(before, x))
    assert run_passes(after, ["spike-dtype"]) == after


def test_text_round_trips_spike_types_and_refuses_unknown_ones() -> None:
    graph = spiked(CONVNET)
    assert parse(print_graph(graph), graph.weights) == graph
    with pytest.raises(ParseError, match="unknown element type 'u8'"):
        parse(print_graph(graph).replace("spike[16]", "u8[16]"))


def test_the_verifier_checks_spike_types() -> None:
    graph = spiked(CONVNET)
    conv_spikes = replace(graph.node("c"), type=TensorType((4, 6, 6), "spike"))
    with pytest.raises(VerifyError, match=r"declared type spike\[4,6,6\] but operands give f32\[4,6,6\]"):
        verify(graph.with_nodes([conv_spikes if n.name == "c" else n for n in graph.nodes]))
    with pytest.raises(VerifyError, match=r"graph output %z2 is spike\[16\]: the loader reads float32"):
        verify(replace(graph, output="z2"))
    untyped = typed(CONVNET)
    io = untyped.node("fc1").with_attrs(weight_layout="IO")
    with pytest.raises(VerifyError, match='weight_layout "IO" is for the accumulate-only kernel of a spike operand'):
        verify(untyped.with_nodes([io if n.name == "fc1" else n for n in untyped.nodes]))
    oi = graph.node("fc1").with_attrs(weight_layout="OI")
    with pytest.raises(VerifyError, match="dense weight_layout must be \"IO\" when given, got 'OI'"):
        verify(graph.with_nodes([oi if n.name == "fc1" else n for n in graph.nodes]))


def test_slices_and_patches_keep_the_types() -> None:
    """The passes after spike-dtype keep its types: slices of a dense layer and their concat are float32 like the
    layer; row patches copy each node's type, and crop_rows and concat pass spikes on."""
    graph = spiked(CONVNET)
    sliced = slice_to(graph, 16 * 36)  # fc1 in pieces of 4 rows
    verify(sliced)
    parts = [n for n in sliced.nodes if n.name.startswith("fc1.part")]
    assert len(parts) == 4 and all(p.type.dtype == "f32" for p in parts)
    patched = patch_rows(graph, 3, 2)  # conv, lif, maxpool in two row patches
    assert patched is not None
    verify(patched)
    assert patched.node("z1.patch0").type.dtype == patched.node("p").type.dtype == "spike"
    x = inputs(graph)
    for changed in (sliced, patched):
        np.testing.assert_array_equal(run(changed, x), run(graph, x))
