"""infer-shapes: give every node its type from its operands' types, checking every operand and parameter.

Requires: input nodes carry their type; operands come before their users.
Ensures: every node has a type consistent with its op's shape rule (types already present are recomputed); every
parameter a node reads has the shape its op's rule gives for its operands (`masic.ir.ops.check_params`: the
kernels read exactly that many elements), and every delay has its source's type. Anything else is refused here,
naming the node, before any kernel could read past a weight.
"""

from __future__ import annotations

from dataclasses import replace

from masic.ir.graph import Graph, TensorType
from masic.ir.ops import OPS, check_params
from masic.ir.shapes import ShapeError
from masic.ir.verify import VerifyError, verify_delays
from masic.passes.base import PassError, PassOptions

NAME = "infer-shapes"


def run(graph: Graph, options: PassOptions) -> Graph:
    types: dict[str, TensorType] = {}
    params = {p.name: p.type for p in graph.params}
    nodes = []
    for node in graph.nodes:
        definition = OPS.get(node.op)
        if definition is None:
            raise PassError(NAME, f"unknown op {node.op!r}", node)
        missing = [v for v in node.inputs if v not in types]
        if missing:
            raise PassError(NAME, f"operand %{missing[0]} has no type (defined later or not at all)", node)
        operand_types = tuple(types[v] for v in node.inputs)
        try:
            node_type = definition.infer(node, operand_types)
            check_params(node, operand_types, node_type, params)
        except ShapeError as err:
            raise PassError(NAME, str(err), node) from None
        types[node.name] = node_type
        nodes.append(replace(node, type=node_type))
    typed = replace(graph, nodes=tuple(nodes))
    try:
        verify_delays(typed)
    except VerifyError as err:
        raise PassError(NAME, err.message, err.node) from None
    return typed
