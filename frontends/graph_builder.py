"""What every frontend shares: a builder that turns nodes added in any convenient order into a verified Graph.

Frontends add nodes as they meet them in the source model, with their operands already added; the builder infers
each node's type (errors name the source location), keeps names unique and valid, stores parameters as float32, and
turns per-element parameters that hold one value into float attributes. `delay` nodes may be added before their
source exists (`delay`, then `connect_delay`); `finish` orders the nodes so that operands come before their users and
every delay before its source (a topological order that keeps the order of insertion where it can), and verifies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import networkx as nx
import numpy as np
from masic.frontends.errors import FrontendError

from masic.ir.graph import AttrValue, Graph, Node, ParamRef, TensorType
from masic.ir.ops import OPS, ShapeError
from masic.ir.verify import verify


def ir_name(text: str) -> str:
    """A valid IR value name for `text`: characters other than letters, digits, `_`, `.`, `-` become `_`."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text) or "_"


class GraphBuilder:
    """Collects typed nodes and parameters; `finish` returns the ordered, verified graph."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.weights: dict[str, np.ndarray] = {}

    def unique(self, name: str) -> str:
        """`name` made valid, with a numeric suffix if a node or parameter already has it."""
        base = candidate = ir_name(name)
        suffix = 1
        while candidate in self.nodes or candidate in self.weights:
            candidate = f"{base}_{suffix}"
            suffix += 1
        return candidate

    def param(self, name: str, array: np.ndarray) -> ParamRef:
        """Stores `array` as a float32 parameter under a unique name derived from `name`."""
        unique = self.unique(name)
        self.weights[unique] = np.ascontiguousarray(array, dtype=np.float32)
        return ParamRef(unique)

    def type_of(self, value: str) -> TensorType:
        return self.nodes[value].type

    def add(
        self,
        name: str,
        op: str,
        inputs: tuple[str, ...],
        attrs: Mapping[str, AttrValue | None],
        loc: str,
        declared: TensorType | None = None,
    ) -> str:
        """Adds a node (attributes that are None are left out) and returns its value's name. Operand types must be
        known; `declared` is the type of nodes that do not derive it (input, constant, delay)."""
        node = Node(
            self.unique(name), op, inputs, tuple((k, v) for k, v in attrs.items() if v is not None), declared, loc
        )
        try:
            node_type = OPS[op].infer(node, tuple(self.type_of(v) for v in inputs))
        except ShapeError as err:
            raise FrontendError(f"{loc}: {err}") from None
        self.nodes[node.name] = Node(node.name, op, inputs, node.attrs, node_type, loc)
        return node.name

    def delay(self, name: str, value_type: TensorType, loc: str) -> str:
        """A delay whose source is set later with `connect_delay` (its source may not exist yet)."""
        return self.add(name, "delay", (), {"source": ""}, loc, value_type)

    def connect_delay(self, delay: str, source: str) -> None:
        node = self.nodes[delay]
        if self.type_of(source) != node.type:
            raise FrontendError(f"{node.loc}: the delayed value %{source} is {self.type_of(source)}, not {node.type}")
        self.nodes[delay] = node.with_attrs(source=source)

    def element_param(self, name: str, key: str, value: object, shape: tuple[int, ...], loc: str) -> AttrValue:
        """A float attribute when `value` holds one value (a scalar, or an array whose elements are all equal),
        else a parameter broadcast to `shape` (leading axes of size one, such as a batch axis, are dropped)."""
        array = np.asarray(value, dtype=np.float32)
        if array.size == 0:
            raise FrontendError(f"{loc}: parameter {key} is empty")
        if np.all(array == array.flat[0]):
            return float(array.flat[0])
        while array.ndim > len(shape) and array.shape[0] == 1:
            array = array[0]
        try:
            return self.param(f"{name}.{key}", np.broadcast_to(array, shape))
        except ValueError:
            raise FrontendError(f"{loc}: parameter {key} of shape {array.shape} does not fit values {shape}") from None

    def finish(self, name: str, output: str, timesteps: int) -> Graph:
        """The graph in an order where operands precede users and each delay precedes its source, verified;
        parameters no node uses are dropped."""
        order = nx.DiGraph()
        index = {node: i for i, node in enumerate(self.nodes)}
        order.add_nodes_from(self.nodes)
        for node in self.nodes.values():
            order.add_edges_from((operand, node.name) for operand in node.inputs)
            if node.op == "delay" and node.attr("source") not in self.nodes:
                raise FrontendError(f"{node.loc}: the delayed value was never connected (a frontend bug)")
            if node.op == "delay":
                order.add_edge(node.name, node.attr("source"))
        try:
            ordered = list(nx.lexicographical_topological_sort(order, key=index.__getitem__))
        except nx.NetworkXUnfeasible:
            loop = " -> ".join(f"%{u}" for u, _ in nx.find_cycle(order))
            raise FrontendError(f"the model has a loop made only of delays ({loop}): no value starts it") from None
        graph = Graph(name=ir_name(name), nodes=(), output=output, timesteps=timesteps)
        graph = graph.with_params(self.weights).with_nodes([self.nodes[n] for n in ordered])
        verify(graph)
        return graph
