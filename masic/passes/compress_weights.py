"""compress-weights: store each conv2d and dense weight in the format chosen for its layer.

float16 weights are the float32 ones rounded to half; int8 weights are quantized symmetrically per output channel,
their scales a new float32 parameter `<weight>.scale` that the layer's `weight_scale` attribute refers to
(`masic.ir.weight_formats` gives the formats and the arithmetic each implies). Every later pass, the planner and
weights.bin then count a weight's stored bytes, so a compressed graph fits budgets its float32 twin cannot. A layer
chosen int8 whose weight and scales, each aligned in the arena, would take more bytes than the weight as float16
(fewer than about four inputs per output: the scales outweigh the saving) is stored float16, so no weight takes
more arena bytes as int8 than as float16, nor as float16 than as float32.

Requires: typed graph; batch norms and poolings already folded into the weights (fold-batchnorm, fold-pooling), so
the weights are final; a weight shared by several layers chosen the same format for each.
Ensures: every conv2d and dense weight that was float32 is stored as `options.weights` chooses for its node (int8
only where it takes no more arena bytes than float16; a weight already compressed is left as it is); an int8
weight has its `weight_scale` and no other weight has one; other parameters unchanged.
"""

from __future__ import annotations

import numpy as np

from masic.analysis.liveness import align_up
from masic.ir.graph import Graph, ParamRef, TensorType
from masic.ir.ops import compressible
from masic.ir.weight_formats import FORMATS, quantize
from masic.passes.base import PassError, PassOptions, require_types

NAME = "compress-weights"


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    layers = {node.name for node in graph.nodes if compressible(node.op)}
    unknown = [name for name, _ in options.weights.layers if name not in layers]
    if unknown:
        raise PassError(NAME, f"no conv2d or dense layer named {unknown[0]!r} to choose a weight format for")
    chosen: dict[str, str] = {}  # weight -> element type
    nodes = []
    for node in graph.nodes:
        ref = node.attr("weight")
        if not compressible(node.op) or graph.param(ref.name).type.dtype != "f32":
            nodes.append(node)
            continue
        dtype = _stored(FORMATS[options.weights.of(node.name)], graph.param(ref.name).type, options.alignment)
        if chosen.setdefault(ref.name, dtype) != dtype:
            raise PassError(NAME, f"weight @{ref.name} is shared by layers chosen different formats", node)
        if dtype == "i8":
            node = node.with_attrs(weight_scale=ParamRef(f"{ref.name}.scale"))
        nodes.append(node)
    new: dict[str, np.ndarray] = {}
    for name, dtype in chosen.items():
        if dtype != "f32":
            new[name], scale = quantize(graph.weights[name], dtype)
            if scale is not None:
                new[f"{name}.scale"] = scale
    return graph.with_params(new).with_nodes(nodes) if new else graph


def _stored(dtype: str, weight: TensorType, alignment: int) -> str:
    """The element type a weight chosen `dtype` is stored in: int8 becomes float16 where that takes fewer bytes."""
    if dtype != "i8":
        return dtype
    int8 = align_up(weight.numel, alignment) + align_up(4 * weight.shape[0], alignment)  # values and scales
    return dtype if int8 <= align_up(2 * weight.numel, alignment) else "f16"
