"""What every frontend shares: a builder that turns nodes added in any convenient order into a verified Graph.

Frontends add nodes as they meet them in the source model, with their operands already added; the builder infers
each node's type (errors name the source location), keeps names unique and valid, stores parameters as float32, and
turns per-element parameters that hold one value into float attributes. `delay` nodes may be added before their
source exists (`delay`, then `connect_delay`); `finish` orders the nodes so that operands come before their users and
every delay before its source (a topological order that keeps the order of insertion where it can), and verifies.
A model with several inputs or outputs gets one input node and one output value holding their concatenation
(`masic.ir.graph.Port`): `inputs` makes the input node and a view of each part, `outputs` the concatenation.

The builder is also where every frontend's values are checked against what a model may ask of masic
(`masic.frontends.limits`), since model files are untrusted: each node's parameters and float attributes must be
finite in float32 (NaN, infinities and values such as 1e300 are refused, and so are complex numbers), a conv's or
pool's kernel, stride and dilation at least 1 and its padding at least 0 (a stride of 0 would divide by zero, a
dilation of 0 read one input element for every tap), each at most `MAX_WINDOW`; every value has dimensions of at
least one element and at most `MAX_TENSOR_ELEMENTS` in all, and so has a conv's or pool's padded input (its kernel
materialises it); a graph holds at most `MAX_GRAPH_NODES` nodes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import networkx as nx
import numpy as np
from masic.frontends.errors import FrontendError
from masic.frontends.limits import MAX_GRAPH_NODES, MAX_TENSOR_ELEMENTS, MAX_WINDOW

from masic.ir.graph import AttrValue, Graph, Node, ParamRef, Port, TensorType
from masic.ir.ops import OPS
from masic.ir.shapes import ShapeError, row_padding
from masic.ir.verify import verify

_WINDOW_LEAST = {"kernel": 1, "stride": 1, "dilation": 1, "padding": 0}


def real_float32(value: object, what: str) -> np.ndarray:
    """`value` as a float32 array; refuses values that are not real numbers (complex, text, objects), where a plain
    conversion would drop an imaginary part or fail. Values beyond float32's range become infinities, which the
    builder refuses where it knows the node."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise FrontendError(f"{what} holds {array.dtype} values, not real numbers")
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def _non_finite(array: np.ndarray) -> object | None:
    """The first value of `array` that is NaN or infinite, or None."""
    bad = array[~np.isfinite(array)]
    return bad.flat[0] if bad.size else None


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
        converted = real_float32(array, f"parameter {name}")
        if converted.size > MAX_TENSOR_ELEMENTS:
            raise FrontendError(
                f"parameter {name} of shape {converted.shape} has more than {MAX_TENSOR_ELEMENTS} elements, "
                "masic's limit"
            )
        unique = self.unique(name)
        self.weights[unique] = np.ascontiguousarray(converted)
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
        if len(self.nodes) >= MAX_GRAPH_NODES:
            raise FrontendError(f"{loc}: the model has more than {MAX_GRAPH_NODES} IR nodes a timestep, masic's limit")
        node = Node(
            self.unique(name), op, inputs, tuple((k, v) for k, v in attrs.items() if v is not None), declared, loc
        )
        self._check_values(node)
        operand_types = tuple(self.type_of(v) for v in inputs)
        try:
            node_type = OPS[op].infer(node, operand_types)
        except ShapeError as err:
            raise FrontendError(f"{loc}: {err}") from None
        _check_size(node_type, "its output", loc)
        if OPS[op].window:
            _check_size(padded_input(node, operand_types[0]), "its padded input", loc)
        self.nodes[node.name] = Node(node.name, op, inputs, node.attrs, node_type, loc)
        return node.name

    def _check_values(self, node: Node) -> None:
        """Finite float attributes and parameters; window attributes in range (before a shape rule divides by a
        stride or takes a group's share of the channels)."""
        for key, value in node.attrs:
            bad = None
            if isinstance(value, float):
                bad = None if np.isfinite(value) else value
            elif isinstance(value, ParamRef):
                bad = _non_finite(self.weights[value.name])
            if bad is not None:
                raise FrontendError(
                    f"{node.loc}: {key} holds {bad} (NaN, infinite, or beyond float32's range); masic compiles "
                    "finite values only"
                )
        if OPS[node.op].window:
            for key, least in _WINDOW_LEAST.items():
                value = node.attr(key)
                if isinstance(value, tuple) and any(not least <= v <= MAX_WINDOW for v in value):
                    raise FrontendError(
                        f"{node.loc}: {node.op} {key} {value} is out of range (each from {least} to {MAX_WINDOW})"
                    )
        groups = node.attr("groups")
        if isinstance(groups, int) and groups < 1:
            raise FrontendError(f"{node.loc}: conv2d groups {groups} is not positive")

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
        array = real_float32(value, f"{loc}: parameter {key}")
        if array.size == 0:
            raise FrontendError(f"{loc}: parameter {key} is empty")
        while array.ndim > len(shape) and array.shape[0] == 1:
            array = array[0]
        try:
            broadcast = np.broadcast_to(array, shape)
        except ValueError:
            raise FrontendError(f"{loc}: parameter {key} of shape {array.shape} does not fit values {shape}") from None
        if np.all(array == array.flat[0]):
            return float(array.flat[0])
        return self.param(f"{name}.{key}", broadcast)

    def inputs(self, ports: tuple[Port, ...], loc: str) -> dict[str, str]:
        """The value of each of the model's inputs: one input node named after the only port, or, for several, one
        input node `input` of their concatenation, each port a view of its rows (`crop_rows` copies them out)."""
        if len(ports) == 1:
            (port,) = ports
            return {port.name: self.add(port.name, "input", (), {}, loc, TensorType(port.shape))}
        total = sum(p.numel for p in ports)
        packed = self.add("input", "input", (), {}, loc, TensorType((total,)))
        rows = self.add("input.rows", "reshape", (packed,), {"shape": (1, total, 1)}, loc)
        values, start = {}, 0
        for port in ports:
            crop = self.add(f"{port.name}.rows", "crop_rows", (rows,), {"rows": (start, start + port.numel)}, loc)
            values[port.name] = self.add(port.name, "reshape", (crop,), {"shape": port.shape}, loc)
            start += port.numel
        return values

    def outputs(self, values: list[tuple[Port, str]], loc: str) -> str:
        """The graph's output: the only value, or the concatenation of several, each flattened."""
        if len(values) == 1:
            return values[0][1]
        flat = [
            value
            if len(port.shape) == 1
            else self.add(f"{value}.flat", "reshape", (value,), {"shape": (port.numel,)}, loc)
            for port, value in values
        ]
        return self.add("output", "concat", tuple(flat), {"axis": 0}, loc)

    def finish(
        self,
        name: str,
        output: str,
        timesteps: int,
        input_ports: tuple[Port, ...] = (),
        output_ports: tuple[Port, ...] = (),
    ) -> Graph:
        """The graph in an order where operands precede users and each delay precedes its source, verified;
        parameters no node uses are dropped. Ports are given when there are several (`inputs`, `outputs`)."""
        order = nx.DiGraph()
        index = {node: i for i, node in enumerate(self.nodes)}
        order.add_nodes_from(self.nodes)
        for node in self.nodes.values():
            order.add_edges_from((operand, node.name) for operand in node.inputs)
            if OPS[node.op].delay and node.attr("source") not in self.nodes:
                raise FrontendError(f"{node.loc}: the delayed value was never connected (a frontend bug)")
            if OPS[node.op].delay:
                order.add_edge(node.name, node.attr("source"))
        try:
            ordered = list(nx.lexicographical_topological_sort(order, key=index.__getitem__))
        except nx.NetworkXUnfeasible:
            loop = " -> ".join(f"%{u}" for u, _ in nx.find_cycle(order))
            raise FrontendError(f"the model has a loop made only of delays ({loop}): no value starts it") from None
        several = {"input_ports": input_ports, "output_ports": output_ports}
        ports = {key: value if len(value) > 1 else () for key, value in several.items()}
        graph = Graph(name=ir_name(name), nodes=(), output=output, timesteps=timesteps, **ports)
        graph = graph.with_params(self.weights).with_nodes([self.nodes[n] for n in ordered])
        verify(graph)
        return graph


def padded_input(node: Node, operand: TensorType) -> TensorType:
    """The operand of a conv or pool as its kernel sees it, padded."""
    c, h, w = operand.shape  # the shape rule has checked it is (C, H, W)
    top, bottom = row_padding(node)
    return TensorType((c, h + top + bottom, w + 2 * node.attr("padding")[1]))


def _check_size(value_type: TensorType, what: str, loc: str) -> None:
    """At most `MAX_TENSOR_ELEMENTS` elements in all (the shape rules have checked every dimension is positive)."""
    if value_type.numel > MAX_TENSOR_ELEMENTS:
        raise FrontendError(f"{loc}: {what} {value_type} has more than {MAX_TENSOR_ELEMENTS} elements, masic's limit")
