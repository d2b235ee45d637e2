"""infer-shapes: give every node its type from its operands' types.

Requires: input nodes carry their type; operands come before their users.
Ensures: every node has a type consistent with its op's shape rule (types already present are recomputed).
"""

from __future__ import annotations

from dataclasses import replace

from masic.ir.graph import Graph, TensorType
from masic.ir.ops import OPS, ShapeError
from masic.passes.base import PassError, PassOptions

NAME = "infer-shapes"


def run(graph: Graph, options: PassOptions) -> Graph:
    types: dict[str, TensorType] = {}
    nodes = []
    for node in graph.nodes:
        definition = OPS.get(node.op)
        if definition is None:
            raise PassError(NAME, f"unknown op {node.op!r}", node)
        missing = [v for v in node.inputs if v not in types]
        if missing:
            raise PassError(NAME, f"operand %{missing[0]} has no type (defined later or not at all)", node)
        try:
            node_type = definition.infer(node, tuple(types[v] for v in node.inputs))
        except ShapeError as err:
            raise PassError(NAME, str(err), node) from None
        types[node.name] = node_type
        nodes.append(replace(node, type=node_type))
    return replace(graph, nodes=tuple(nodes))
