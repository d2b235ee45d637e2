"""fold-pooling, alone: an adaptive average pooling that enlarges its input, folded into the dense layer that reads
it, computes the same up to float32 rounding. What it prints: tests/filecheck/fold-pooling/."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.ir.interpret import run
from masic.ir.text import parse
from masic.opt import run_passes


def _graph(c: int, h: int, w: int, oh: int, ow: int, out: int, extra_reader: bool = False):
    """input (c,h,w) -> lif -> adaptive pool to (oh,ow) -> flatten -> dense -> li, as VGG's classifier; with
    `extra_reader`, the pooled value is also the graph's output, so it must stay."""
    text = f"""graph @vgg_tail timesteps=3 {{
  param @fc.w : f32[{out},{c * oh * ow}]
  param @fc.b : f32[{out}]
  %in = input() : f32[{c},{h},{w}]
  %z = lif(%in) {{dt_tau_mem=0.1, neg_dt_tau_syn=-0.2, v_leak=0.0, v_th=0.5, v_reset=0.0}} : ?
  %pool = adaptive_avgpool2d(%z) {{output=({oh},{ow})}} : ?
  %flat = flatten(%pool) : ?
  %fc = dense(%flat) {{weight=@fc.w, bias=@fc.b, in_features={c * oh * ow}, out_features={out}}} : ?
  %y = li(%fc) {{dt_tau_mem=0.1, neg_dt_tau_syn=-0.2, v_leak=0.0}} : ?
  output %{"pool" if extra_reader else "y"}
}}
"""
    rng = np.random.default_rng(c * 100 + h * 10 + w)
    weights = {
        "fc.w": rng.normal(size=(out, c * oh * ow)).astype(np.float32),
        "fc.b": rng.normal(size=out).astype(np.float32),
    }
    return run_passes(parse(text, weights), ["infer-shapes"])


def _inputs(graph) -> np.ndarray:
    shape = graph.inputs[0].type.shape
    return np.random.default_rng(0).uniform(0, 2, (3, *shape)).astype(np.float32)


def test_vgg_replication_folds_into_the_first_dense_layer() -> None:
    """VGG at 32x32 input: 512x1x1 pooled to 7x7; here 8 channels. The dense layer reads the 8 values directly, with
    49x fewer weights, and computes the same up to float32 rounding."""
    graph = _graph(8, 1, 1, 7, 7, 5)
    folded = run_passes(graph, ["fold-pooling"])
    assert folded.param("fc.weight.folded").type.shape == (5, 8)  # the text: tests/filecheck/fold-pooling/
    assert "fc.w" not in folded.weights
    x = _inputs(graph)
    np.testing.assert_allclose(run(folded, x), run(graph, x), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 7), st.integers(1, 7), st.integers(1, 6))
def test_folding_computes_the_same_and_only_when_it_shrinks_the_weights(c, h, w, oh, ow, out) -> None:
    graph = _graph(c, h, w, oh, ow, out)
    folded = run_passes(graph, ["fold-pooling"])
    pooled = any(n.op == "adaptive_avgpool2d" for n in folded.nodes)
    assert pooled == (h * w >= oh * ow)
    assert sum(p.type.nbytes for p in folded.params) <= sum(p.type.nbytes for p in graph.params)
    x = _inputs(graph)
    np.testing.assert_allclose(run(folded, x), run(graph, x), rtol=1e-5, atol=1e-5)


def test_a_pooled_value_something_else_reads_stays() -> None:
    graph = _graph(4, 1, 1, 7, 7, 3, extra_reader=True)
    assert run_passes(graph, ["fold-pooling"]) == graph
