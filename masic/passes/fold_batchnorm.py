"""fold-batchnorm: fold each eval-mode batchnorm2d into the conv2d that produces its input.

    w'[o] = w[o] * s[o],  b'[o] = (b[o] - mean[o]) * s[o] + beta[o],  s = gamma / sqrt(var + eps)

computed in float64 and rounded once to float32.

Requires: typed graph; each batchnorm2d reads a conv2d that has no other user.
Ensures: no batchnorm2d remains; the conv computes what conv + batchnorm computed (up to float32 rounding); what
read the batch norm's value (operands, delays) reads the conv instead.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from masic.ir.graph import Graph, Node, ParamRef
from masic.ir.ops import OPS
from masic.passes.base import PassError, PassOptions, require_types

NAME = "fold-batchnorm"


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    nodes = {n.name: n for n in graph.nodes}
    new_params: dict[str, np.ndarray] = {}
    renamed: dict[str, str] = {}  # batchnorm value -> conv value that now computes it
    for bn in graph.nodes:
        if bn.op != "batchnorm2d":
            continue
        conv = nodes[bn.inputs[0]]
        if conv.op != "conv2d" or len(graph.users(conv.name)) != 1 or conv.name == graph.output:
            raise PassError(NAME, "batch norm must follow a conv2d whose only user it is", bn)

        def param(node: Node, key: str) -> np.ndarray | None:
            ref = node.attr(key)
            return graph.weights[ref.name].astype(np.float64) if isinstance(ref, ParamRef) else None

        scale = 1.0 / np.sqrt(param(bn, "var") + bn.attr("eps"))
        gamma, beta, bias = param(bn, "gamma"), param(bn, "beta"), param(conv, "bias")
        scale = scale if gamma is None else scale * gamma
        folded_bias = ((0.0 if bias is None else bias) - param(bn, "mean")) * scale
        folded_bias = folded_bias if beta is None else folded_bias + beta
        weight_name, bias_name = f"{conv.name}.weight.folded", f"{conv.name}.bias.folded"
        new_params[weight_name] = param(conv, "weight") * scale[:, None, None, None]
        new_params[bias_name] = folded_bias
        nodes[conv.name] = conv.with_attrs(weight=ParamRef(weight_name), bias=ParamRef(bias_name))
        renamed[bn.name] = conv.name
    if not renamed:
        return graph
    # A delay of a folded batch norm now copies the conv; one placed after the conv moves before it (a delay precedes
    # its source), one already before it (perhaps read before the conv) stays.
    position = {n.name: k for k, n in enumerate(graph.nodes)}
    retargeted = {
        n.name: n.with_attrs(source=renamed[n.attr("source")])
        for n in graph.nodes
        if OPS[n.op].delay and n.attr("source") in renamed
    }
    nodes.update(retargeted)
    moved = {name: d for name, d in retargeted.items() if position[name] > position[d.attr("source")]}
    kept = []
    for node in graph.nodes:
        if node.op == "batchnorm2d" or node.name in moved:
            continue
        kept += [d for d in moved.values() if d.attr("source") == node.name]
        node = nodes[node.name]
        inputs = tuple(renamed.get(v, v) for v in node.inputs)
        kept.append(Node(node.name, node.op, inputs, node.attrs, node.type, node.loc))
    output = renamed.get(graph.output, graph.output)
    folded = graph.with_params(new_params).with_nodes(kept)
    return replace(folded, output=output, plan=None)
