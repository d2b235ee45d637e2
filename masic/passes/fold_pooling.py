"""fold-pooling: fold an adaptive average pooling that enlarges its input into the dense layer that reads it.

Adaptive average pooling is linear, and per channel the same (oh*ow, h*w) matrix P of bin averages. When its only
reader is a flatten whose only reader is a dense layer, the dense layer can read the flattened input directly:

    W'[o, c, :] = W[o, c, :] @ P      (W viewed as (out, C, oh*ow); W' as (out, C*h*w))

computed in float64 and rounded once to float32. This pays when the pooling enlarges its input (h*w < oh*ow):
VGG's classifier pools to 7x7 whatever the image size, so at 32x32 input it replicates each of 512 values 49
times, and its first dense layer holds 49 times the weights it needs (411 MB of 537 MB in vgg16). Folded, the
weights shrink by oh*ow / (h*w) and the model computes the same up to float32 rounding (the sum of the replicated
inputs' weights is formed once, at compile time, rather than at every step).

Requires: typed graph.
Ensures: no adaptive_avgpool2d that enlarges its input reaches a dense layer through a flatten that nothing else
reads; the dense layer keeps its name, bias and output; values nothing reads any more are gone.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from masic.ir.graph import Graph, Node, ParamRef, TensorType
from masic.ir.shapes import adaptive_bins
from masic.passes.base import PassOptions, require_types

NAME = "fold-pooling"


def _pooling_matrix(h: int, w: int, oh: int, ow: int) -> np.ndarray:
    """P (oh*ow, h*w): output bin i*ow+j averages the input cells of rows bins[i] and columns bins[j]."""
    matrix = np.zeros((oh, ow, h, w))
    for i, (h0, h1) in enumerate(adaptive_bins(h, oh)):
        for j, (w0, w1) in enumerate(adaptive_bins(w, ow)):
            matrix[i, j, h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
    return matrix.reshape(oh * ow, h * w)


def _only_reader(graph: Graph, value: str) -> Node | None:
    """The single node that reads `value`, if exactly one does and nothing else needs it (output, delays)."""
    users = graph.users(value)
    return users[0] if len(users) == 1 and value != graph.output and not graph.delays_of(value) else None


def _foldable(graph: Graph, pool: Node) -> tuple[Node, Node] | None:
    """(flatten, dense) when `pool` enlarges its input and reaches a dense layer only through a flatten."""
    if pool.op != "adaptive_avgpool2d":
        return None
    (_, h, w), (oh, ow) = graph.node(pool.inputs[0]).type.shape, pool.attr("output")
    flatten = _only_reader(graph, pool.name)
    if h * w >= oh * ow or flatten is None or flatten.op != "flatten":
        return None
    dense = _only_reader(graph, flatten.name)
    return (flatten, dense) if dense is not None and dense.op == "dense" else None


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    nodes = {n.name: n for n in graph.nodes}
    new_params: dict[str, np.ndarray] = {}
    for pool in graph.nodes:
        if (found := _foldable(graph, pool)) is None:
            continue
        flatten, dense = found
        source = graph.node(pool.inputs[0])
        channels, h, w = source.type.shape
        oh, ow = pool.attr("output")
        weight = graph.weights[dense.attr("weight").name].astype(np.float64)
        folded = weight.reshape(len(weight), channels, oh * ow) @ _pooling_matrix(h, w, oh, ow)
        name = f"{dense.name}.weight.folded"
        new_params[name] = folded.reshape(len(weight), channels * h * w)
        del nodes[pool.name]
        nodes[flatten.name] = replace(flatten, inputs=(source.name,), type=TensorType((channels * h * w,)))
        nodes[dense.name] = dense.with_attrs(weight=ParamRef(name), in_features=channels * h * w)
    if not new_params:
        return graph
    return graph.with_params(new_params).with_nodes([nodes[n.name] for n in graph.nodes if n.name in nodes])
