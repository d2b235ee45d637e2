"""NIR frontend: a NIR graph file (HDF5) -> Graph IR of one timestep.

Covers NIR 1.0 graphs of Input, Output, Affine, Linear, Scale, Conv1d, Conv2d, SumPool2d, AvgPool2d, Flatten,
Threshold, Delay, I, IF, LI, LIF, CubaLI and CubaLIF nodes, nested NIRGraph subgraphs (an edge to or from a subgraph
goes to its Input / comes from its Output node; `sub.node` names a node inside), several edges into one node (their
values are summed in the file's edge order) and cycles. Any other node type is refused with its name and type.

Inputs and outputs. The Input and Output nodes of the top level, in the file's order, are the model's; several of
either are packed into the graph's one input and one output (`masic.ir.graph.Port`: each flattened, one after
another), which is what the loader reads and writes each step, and `masic run` takes and gives as .npz files of
named arrays.

Reading. `masic.frontends.nir_file` reads the file as untrusted input (HDF5 only, never unpickled; no links to
other files, no unbounded data; node types, edges and values checked on the file's own values), each refusal one
line naming the file and node. Here the graph is checked against the limits of `masic.frontends.limits` (nodes and
edges; steps of a Delay); the graph builder checks the rest (windows, finite derived coefficients, sizes of values)
for every frontend.

Cycles. Back edges are found by a depth-first search from the Input nodes (then from the remaining nodes, in file
order): an edge to a node on the current search path. A back edge delivers its source's output of the previous
step (zeros at the first step), as nirtorch does; it becomes a `delay` node. Nodes from which no Output can be
reached do not influence the outputs and are left out.

Discretisation. NIR is continuous-time and stores no time step: the caller gives `dt` (`masic.frontends.nir_time`
reads the one the exporter meant from the graph's parameters, for the error without it and a warning against a
contradicting one). Each ODE takes one forward
Euler step of `dt`, in float32. Coefficients are folded in float32 the way Norse folds `dt * tau_mem_inv`:
`a = f32(dt) * (1 / f32(tau))`, `b = f32(dt) * f32(r)`. Parameters may be scalars or per-neuron arrays (broadcast).
With input x (the sum of the incoming edges), per step:

    I        v' = v + b*x                                                  output v'
    IF       v1 = v + b*x                                                  (iaf)
    LIF      v1 = v + a*((r*x + v_leak) - v)                               (lif_box: Norse's association)
             z = v1 > v_threshold;  v' = z ? v_reset : v1                  output z (IF the same)
    LI       v' = v + a*((v_leak - v) + r*x)                               (li_box)  output v'
    CubaLIF  i' = i + a_syn*((0 - i) + w_in*x)                             synapse first (li_box), then
             v1 = v + a_mem*((r*i' + v_leak) - v);  z, v' as LIF           the membrane sees the new current
    CubaLI   i' as CubaLIF;  v' = v + a_mem*((v_leak - v) + r*i')          output v'
    Threshold  z = x > threshold;   Scale  y = x * scale;   Delay  y(t) = x(t - delay/dt)  (whole steps only)

Products with r, w_in or b are left out where the factor is exactly 1, and so are biases that are all zero.
Initial state as Norse's: v = v_leak (LI, LIF, CubaLI, CubaLIF), v = v_reset (IF), v = 0 (I), i = 0.
`v1 - v_threshold > 0` is how the kernels test the spike; for finite float32 values it is the same predicate as
`v1 > v_threshold`. The synapse-first order of the Cuba neurons is the one Norse's, snnTorch's and Lava's CubaLIF
use. The golden trace of `lif_norse.nir` (Norse, dt=1e-4) is reproduced bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from masic.frontends.errors import FrontendError, FrontendWarning
from masic.frontends.graph_builder import GraphBuilder, ir_name
from masic.frontends.limits import MAX_DELAY_STEPS, MAX_NIR_EDGES, MAX_NIR_NODES, MAX_TENSOR_ELEMENTS
from masic.frontends.nir_file import read_nir
from masic.frontends.nir_time import dt_warning, suggested_dt

from masic.ir.graph import Graph, Port, TensorType

_STEP_TOLERANCE = 1e-6  # relative: a delay of 3e-4 s at dt=1e-4 is 2.9999999999999996 steps


# ---------------------------------------------------------------------------------------------------------------
# Nested graphs -> one flat graph
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Flat:
    """All non-graph nodes under qualified names (`sub.node`) and the edges between them, in file order."""

    nodes: dict[str, Any]
    edges: list[tuple[str, str]]


def _flatten(graph: Any, prefix: str, flat: _Flat) -> None:
    import nir

    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            _flatten(node, f"{prefix}{name}.", flat)
        else:
            flat.nodes[f"{prefix}{name}"] = node
    where = f"subgraph '{prefix[:-1]}'" if prefix else "the graph"
    for source, target in graph.edges:
        flat.edges.append(
            (_endpoint(graph, source, prefix, "Output", where), _endpoint(graph, target, prefix, "Input", where))
        )
    if len(flat.nodes) > MAX_NIR_NODES or len(flat.edges) > MAX_NIR_EDGES:
        raise FrontendError(
            f"the graph has {len(flat.nodes)} nodes and {len(flat.edges)} edges so far; masic reads at most "
            f"{MAX_NIR_NODES} nodes and {MAX_NIR_EDGES} edges"
        )


def _endpoint(graph: Any, name: str, prefix: str, port: str, where: str) -> str:
    """The flat name an edge endpoint refers to: a node, `sub.node` inside a subgraph, or a subgraph's only
    Input (as a target) or Output (as a source)."""
    import nir

    node = graph.nodes.get(name)
    if node is None and "." in name:
        head, rest = name.split(".", 1)
        if isinstance(graph.nodes.get(head), nir.NIRGraph):
            return _endpoint(graph.nodes[head], rest, f"{prefix}{head}.", port, f"subgraph '{prefix}{head}'")
    if node is None:
        available = ", ".join(sorted(graph.nodes))
        raise FrontendError(f"an edge in {where} names node '{name}', which does not exist (nodes: {available})")
    if isinstance(node, nir.NIRGraph):
        ports = [k for k, n in node.nodes.items() if type(n).__name__ == port]
        if len(ports) != 1:
            raise FrontendError(f"subgraph '{prefix}{name}' has {len(ports)} {port} nodes; name one as '{name}.x'")
        return _endpoint(node, ports[0], f"{prefix}{name}.", port, f"subgraph '{prefix}{name}'")
    return f"{prefix}{name}"


def _back_edges(nodes: list[str], edges: list[tuple[str, str]], roots: list[str]) -> set[tuple[str, str]]:
    """Edges to a node on the depth-first search path (searching from `roots`, then every unvisited node)."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in edges:
        successors[source].append(target)
    visited: set[str] = set()
    on_path: set[str] = set()
    back: set[tuple[str, str]] = set()
    for root in [*roots, *nodes]:
        if root in visited:
            continue
        visited.add(root)
        on_path.add(root)
        stack = [(root, iter(successors[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                on_path.discard(node)
                stack.pop()
            elif child in on_path:
                back.add((node, child))
            elif child not in visited:
                visited.add(child)
                on_path.add(child)
                stack.append((child, iter(successors[child])))
    return back


# ---------------------------------------------------------------------------------------------------------------
# Node conversion
# ---------------------------------------------------------------------------------------------------------------


class _Importer:
    """Emits the IR of each flat node, in an order where every forward edge's source comes first."""

    def __init__(self, flat: _Flat, dt: float) -> None:
        self.flat, self.dt = flat, dt
        self.b = GraphBuilder()
        self.value: dict[str, str] = {}  # flat NIR node -> IR value holding its output

    def loc(self, name: str) -> str:
        return f"NIR node '{name}' ({type(self.flat.nodes[name]).__name__})"

    # -- helpers shared by the node kinds --

    def param(self, name: str, key: str, x: str, array: Any) -> float | Any:
        return self.b.element_param(name, key, array, self.b.type_of(x).shape, self.loc(name))

    def scaled(self, name: str, x: str, key: str, factor: Any, value_name: str = "") -> str:
        """x * factor (a node named `value_name`, or `name.key`), or x itself where the factor is exactly 1."""
        value = self.param(name, key, x, factor)
        if value == 1.0:
            return x
        return self.b.add(value_name or f"{name}.{key}", "scale", (x,), {"factor": value}, self.loc(name))

    def coefficient(self, name: str, tau: Any) -> np.ndarray:
        """dt/tau folded in float32 as Norse folds dt * tau_mem_inv (an overflow, from a subnormal tau, is refused
        as a non-finite coefficient when the neuron is added)."""
        tau = np.asarray(tau, dtype=np.float32)
        if np.any(~(tau > 0)):
            raise FrontendError(f"{self.loc(name)}: time constant {tau[~(tau > 0)].flat[0]:g} is not positive")
        with np.errstate(over="ignore", divide="ignore"):
            return np.float32(self.dt) * (np.float32(1.0) / tau)

    def dt_times(self, r: Any) -> np.ndarray:
        """dt * r in float32 (an overflow is refused as a non-finite factor when the scale is added)."""
        with np.errstate(over="ignore"):
            return np.float32(self.dt) * np.asarray(r, dtype=np.float32)

    def neuron(self, name: str, op: str, x: str, params: dict[str, Any], value_name: str = "") -> str:
        attrs = {key: self.param(name, key, x, value) for key, value in params.items()}
        if op == "lif_box":
            attrs["reset"] = "value"
        return self.b.add(value_name or name, op, (x,), attrs, self.loc(name))

    def synapse(self, name: str, x: str, node: Any) -> str:
        """The current of a Cuba neuron: w_in * x into a leaky integrator with time constant tau_syn."""
        drive = self.scaled(name, x, "w_in", node.w_in)
        return self.neuron(
            name, "li_box", drive, {"dt_tau_mem": self.coefficient(name, node.tau_syn), "v_leak": 0.0}, f"{name}.syn"
        )

    def steps(self, name: str, delay: Any) -> np.ndarray:
        """Whole steps of dt, at most `MAX_DELAY_STEPS` (the file's values are finite: `masic.frontends.nir_file`)."""
        steps = np.asarray(delay, dtype=np.float64) / self.dt
        whole = np.round(steps)
        if np.any(whole < 0):
            raise FrontendError(f"{self.loc(name)}: delay {np.min(delay):g} is negative")
        if np.any(np.abs(steps - whole) > _STEP_TOLERANCE * np.maximum(1.0, whole)):
            raise FrontendError(f"{self.loc(name)}: delays {np.unique(delay)} are not whole steps of dt={self.dt}")
        if whole.max() > MAX_DELAY_STEPS:
            raise FrontendError(
                f"{self.loc(name)}: a delay of {np.max(delay):g} s is {whole.max():.0f} steps of dt={self.dt}; "
                f"masic compiles delays of at most {MAX_DELAY_STEPS} steps"
            )
        return whole.astype(np.int64)

    # -- the node kinds: (flat name, node, input value) -> output value --

    def convert(self, name: str, node: Any, x: str) -> str:
        kind = type(node).__name__
        converter: Callable[[str, Any, str], str] = getattr(self, f"_{kind.lower()}")
        return converter(name, node, x)

    def _output(self, name: str, node: Any, x: str) -> str:
        return x

    _input = _output  # a subgraph's Input passes its edges' sum through

    def _affine(self, name: str, node: Any, x: str) -> str:
        weight = np.asarray(node.weight)
        bias = getattr(node, "bias", None)
        if weight.ndim != 2:
            raise FrontendError(f"{self.loc(name)}: weight of shape {weight.shape} is not a matrix")
        if len(self.b.type_of(x).shape) != 1:
            raise FrontendError(f"{self.loc(name)}: input {self.b.type_of(x)} is not flat; add a Flatten before it")
        bias = None if bias is None else self.broadcast(name, "bias", bias, weight.shape[:1])
        attrs = {
            "weight": self.b.param(f"{name}.weight", weight),
            "bias": self.b.param(f"{name}.bias", bias) if np.any(bias) else None,
            "in_features": int(weight.shape[1]),
            "out_features": int(weight.shape[0]),
        }
        return self.b.add(name, "dense", (x,), attrs, self.loc(name))

    _linear = _affine

    def _scale(self, name: str, node: Any, x: str) -> str:
        return self.b.add(name, "scale", (x,), {"factor": self.param(name, "scale", x, node.scale)}, self.loc(name))

    def _threshold(self, name: str, node: Any, x: str) -> str:
        attrs = {"threshold": self.param(name, "threshold", x, node.threshold)}
        return self.b.add(name, "threshold", (x,), attrs, self.loc(name))

    def _conv2d(self, name: str, node: Any, x: str, spatial: int = 2) -> str:
        """Conv1d runs as a Conv2d of height 1 (same sums, same order)."""
        shape, loc = self.b.type_of(x).shape, self.loc(name)
        weight = np.asarray(node.weight)
        if weight.ndim != 2 + spatial:
            raise FrontendError(f"{loc}: weight of shape {weight.shape} is not (out, in / groups, *kernel)")
        (groups,) = _integers(node.groups, 1, f"{loc}: groups", least=1)
        expected = (weight.shape[1] * groups, *_integers(node.input_shape, None, f"{loc}: input_shape"))
        if shape != expected:
            raise FrontendError(f"{loc}: expects input {expected} (channels, input_shape), got {shape}")
        kernel = weight.shape[2:]
        stride = _integers(node.stride, spatial, f"{loc}: stride")
        dilation = _integers(node.dilation, spatial, f"{loc}: dilation")
        padding = _padding(node.padding, kernel, dilation, loc)
        if spatial == 1:
            x = self.b.add(f"{name}.2d", "reshape", (x,), {"shape": (shape[0], 1, shape[1])}, self.loc(name))
            weight, kernel = weight[:, :, None, :], (1, *kernel)
            stride, dilation, padding = (1, *stride), (1, *dilation), (0, *padding)
        bias = self.broadcast(name, "bias", node.bias, weight.shape[:1])
        attrs = {
            "weight": self.b.param(f"{name}.weight", weight),
            "bias": self.b.param(f"{name}.bias", bias) if np.any(bias) else None,
            "out_channels": int(weight.shape[0]),
            "kernel": tuple(int(k) for k in kernel),
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
        }
        y = self.b.add(name if spatial == 2 else f"{name}.conv", "conv2d", (x,), attrs, self.loc(name))
        if spatial == 1:
            out = self.b.type_of(y).shape
            y = self.b.add(name, "reshape", (y,), {"shape": (out[0], out[2])}, self.loc(name))
        return y

    def _conv1d(self, name: str, node: Any, x: str) -> str:
        return self._conv2d(name, node, x, spatial=1)

    def _sumpool2d(self, name: str, node: Any, x: str) -> str:
        attrs = {key: _integers(getattr(node, field), 2, f"{self.loc(name)}: {field}") for key, field in _POOL_FIELDS}
        op = "sumpool2d" if type(node).__name__ == "SumPool2d" else "avgpool2d"
        return self.b.add(name, op, (x,), attrs, self.loc(name))

    _avgpool2d = _sumpool2d

    def _flatten(self, name: str, node: Any, x: str) -> str:
        shape = self.b.type_of(x).shape
        start, end = (_axis(getattr(node, key), shape, f"{self.loc(name)}: {key}") for key in ("start_dim", "end_dim"))
        if start > end:
            raise FrontendError(f"{self.loc(name)}: start_dim {node.start_dim} is after end_dim {node.end_dim}")
        out = (*shape[:start], int(np.prod(shape[start : end + 1])), *shape[end + 1 :])
        if len(out) == 1:
            return self.b.add(name, "flatten", (x,), {}, self.loc(name))
        return self.b.add(name, "reshape", (x,), {"shape": out}, self.loc(name))

    def _delay(self, name: str, node: Any, x: str) -> str:
        """A chain of one-step delays; with different delays per element, each element picks its tap by a 0/1
        mask (products with 0 and 1 and sums with zeros are exact)."""
        value_type = self.b.type_of(x)
        steps = self.broadcast(name, "delay", self.steps(name, node.delay), value_type.shape)
        if int(steps.max()) * value_type.numel > MAX_TENSOR_ELEMENTS:  # each step holds a copy of the value
            raise FrontendError(
                f"{self.loc(name)}: a delay of {int(steps.max())} steps of {value_type} holds more than "
                f"{MAX_TENSOR_ELEMENTS} elements, masic's limit"
            )
        taps = [x]
        for k in range(1, int(steps.max()) + 1):
            taps.append(self.b.delay(f"{name}.d{k}", value_type, self.loc(name)))
            self.b.connect_delay(taps[k], taps[k - 1])
        chosen = [int(k) for k in np.unique(steps)]
        if len(chosen) == 1:
            return taps[chosen[0]]
        terms = [self.scaled(name, taps[k], f"mask{k}", steps == k, f"{name}.tap{k}") for k in chosen]
        return self.summed(name, terms)

    def _i(self, name: str, node: Any, x: str) -> str:
        drive = self.scaled(name, x, "dt_r", self.dt_times(node.r))
        previous = self.b.delay(f"{name}.v", self.b.type_of(drive), self.loc(name))
        v = self.b.add(name, "add", (previous, drive), {}, self.loc(name))
        self.b.connect_delay(previous, v)
        return v

    def _if(self, name: str, node: Any, x: str) -> str:
        drive = self.scaled(name, x, "dt_r", self.dt_times(node.r))
        return self.neuron(name, "iaf", drive, {"v_th": node.v_threshold, "v_reset": node.v_reset})

    def _li(self, name: str, node: Any, x: str) -> str:
        drive = self.scaled(name, x, "r", node.r)
        return self.neuron(
            name, "li_box", drive, {"dt_tau_mem": self.coefficient(name, node.tau), "v_leak": node.v_leak}
        )

    def _lif(self, name: str, node: Any, x: str) -> str:
        drive = self.scaled(name, x, "r", node.r)
        params = {"dt_tau_mem": self.coefficient(name, node.tau), "v_leak": node.v_leak}
        return self.neuron(name, "lif_box", drive, params | {"v_th": node.v_threshold, "v_reset": node.v_reset})

    def _cubali(self, name: str, node: Any, x: str) -> str:
        drive = self.scaled(name, self.synapse(name, x, node), "r", node.r)
        params = {"dt_tau_mem": self.coefficient(name, node.tau_mem), "v_leak": node.v_leak}
        return self.neuron(name, "li_box", drive, params)

    def _cubalif(self, name: str, node: Any, x: str) -> str:
        drive = self.scaled(name, self.synapse(name, x, node), "r", node.r)
        params = {"dt_tau_mem": self.coefficient(name, node.tau_mem), "v_leak": node.v_leak}
        return self.neuron(name, "lif_box", drive, params | {"v_th": node.v_threshold, "v_reset": node.v_reset})

    def broadcast(self, name: str, key: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
        try:
            return np.broadcast_to(value, shape)
        except ValueError:
            raise FrontendError(f"{self.loc(name)}: {key} of shape {np.shape(value)} does not fit {shape}") from None

    def summed(self, name: str, values: list[str]) -> str:
        total = values[0]
        for k, value in enumerate(values[1:], start=1):
            if self.b.type_of(value) != self.b.type_of(total):
                raise FrontendError(
                    f"{self.loc(name)}: its inputs {self.b.type_of(total)} and {self.b.type_of(value)} cannot be summed"
                )
            total = self.b.add(f"{name}.sum{k}", "add", (total, value), {}, self.loc(name))
        return total


_POOL_FIELDS = (("kernel", "kernel_size"), ("stride", "stride"), ("padding", "padding"))
_INT32_MAX = (1 << 31) - 1  # no NIR integer is larger; numpy would wrap larger ones silently


def _integers(value: Any, n: int | None, what: str, least: int = -_INT32_MAX) -> tuple[int, ...]:
    """Whole numbers of at least `least`: one value for all `n` axes or `n` values, or (n None) a list of any
    length, such as a shape. Fractions, text and values beyond int32 are refused (a cast would round or wrap them).
    """
    array = np.atleast_1d(np.asarray(value))
    if array.dtype.kind not in "biuf" or array.ndim != 1 or (n is not None and array.size not in (1, n)):
        count = "a list of" if n is None else "one" if n == 1 else f"1 or {n}"
        raise FrontendError(f"{what} {_quote(value)} is not {count} whole number(s)")
    numbers = array.astype(np.float64)  # one type for the checks (a float16 cannot hold the int32 bound)
    if not np.all(np.isfinite(numbers) & (np.round(numbers) == numbers) & (np.abs(numbers) <= _INT32_MAX)):
        raise FrontendError(f"{what} {_quote(value)} is not whole numbers within int32")
    if np.any(numbers < least):
        raise FrontendError(f"{what} {_quote(value)} is below {least}")
    return tuple(int(v) for v in (np.broadcast_to(numbers, (n,)) if n is not None and numbers.size == 1 else numbers))


def _axis(value: Any, shape: tuple[int, ...], what: str) -> int:
    """A dimension of `shape`, counted from the end when negative (as PyTorch does)."""
    (axis,) = _integers(value, 1, what)
    if not -len(shape) <= axis < len(shape):
        raise FrontendError(f"{what} {axis} is not a dimension of a value of shape {shape}")
    return axis % len(shape)


def _quote(value: Any) -> str:
    """A short rendering of a value from the file, for an error message."""
    text = repr(np.asarray(value).tolist())
    return text if len(text) <= 60 else f"{text[:57]}..."


def _padding(value: Any, kernel: tuple[int, ...], dilation: tuple[int, ...], loc: str) -> tuple[int, ...]:
    if isinstance(value, bytes | str):
        text = value.decode() if isinstance(value, bytes) else value
        if text == "valid":
            return (0,) * len(kernel)
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        if text != "same" or any(t % 2 for t in total):
            raise FrontendError(f"{loc}: padding {text!r} is not supported (only 'valid', or 'same' with odd kernels)")
        return tuple(t // 2 for t in total)
    return _integers(value, len(kernel), f"{loc}: padding")


def import_nir(path: str | Path, dt: float | None, timesteps: int = 16, name: str | None = None) -> Graph:
    """Reads a NIR file and discretises it with forward Euler steps of `dt` seconds. Without `dt` the error
    suggests the one the graph's parameters imply; a `dt` they contradict gets a warning
    (`masic.frontends.nir_time`)."""
    path = Path(path)
    if dt is not None and not 0 < dt < float("inf"):
        raise FrontendError(f"--dt must be positive and finite, got {dt}")
    graph = read_nir(path)
    try:
        flat = _Flat({}, [])
        _flatten(graph, "", flat)
        if dt is None:
            value, reason = suggested_dt(flat.nodes)
            raise FrontendError(
                f"NIR graphs are continuous-time and store no time step; pass --dt (this one suggests --dt {value:g}: "
                f"{reason})"
            )
        imported = _import_graph(graph, flat, dt, timesteps, name or path.stem)  # its values checked first
        if (warning := dt_warning(flat.nodes, dt)) is not None:
            warnings.warn(f"{path}: {warning}", FrontendWarning, stacklevel=2)
        return imported
    except FrontendError as err:
        raise FrontendError(f"{path}: {err}") from None


def _import_graph(graph: Any, flat: _Flat, dt: float, timesteps: int, name: str) -> Graph:
    inputs = [n for n in graph.nodes if type(graph.nodes[n]).__name__ == "Input"]
    outputs = [n for n in graph.nodes if type(graph.nodes[n]).__name__ == "Output"]
    if not inputs or not outputs:
        raise FrontendError(
            f"the graph has {len(inputs)} Input and {len(outputs)} Output nodes; masic needs one of each at least"
        )
    back = _back_edges(list(flat.nodes), flat.edges, inputs)
    full = nx.DiGraph(flat.edges)
    full.add_nodes_from(flat.nodes)
    needed = set(outputs).union(*(nx.ancestors(full, output) for output in outputs))
    forward = nx.DiGraph([e for e in flat.edges if e not in back])
    forward.add_nodes_from(flat.nodes)
    index = {n: i for i, n in enumerate(flat.nodes)}
    importer = _Importer(flat, dt)
    b = importer.b
    input_ports = tuple(
        Port(ir_name(n), _integers(graph.nodes[n].input_type["input"], None, f"NIR input '{n}': shape")) for n in inputs
    )
    where = f"NIR input '{inputs[0]}'" if len(inputs) == 1 else f"NIR inputs {', '.join(map(repr, inputs))}"
    values = b.inputs(input_ports, where)
    importer.value.update({n: values[port.name] for n, port in zip(inputs, input_ports, strict=True)})
    pending: list[tuple[str, str]] = []  # (delay, NIR source) of back edges
    incoming: dict[str, list[str]] = {}
    for source, target in flat.edges:
        incoming.setdefault(target, []).append(source)
    for flat_name in nx.lexicographical_topological_sort(forward, key=index.__getitem__):
        if flat_name in inputs or flat_name not in needed:
            continue
        if flat_name not in incoming:
            raise FrontendError(f"{importer.loc(flat_name)} has no incoming edge")
        values = []
        for source in incoming[flat_name]:
            if (source, flat_name) in back:
                delayed = b.delay(
                    f"{flat_name}.from.{source}",
                    _own_type(flat.nodes[source], importer, source),
                    f"back edge {source} -> {flat_name}",
                )
                pending.append((delayed, source))
                values.append(delayed)
            else:
                values.append(importer.value[source])
        x = importer.summed(flat_name, values)
        importer.value[flat_name] = importer.convert(flat_name, flat.nodes[flat_name], x)
    for delayed, source in pending:
        b.connect_delay(delayed, importer.value[source])
    ports = [(Port(ir_name(n), b.type_of(importer.value[n]).shape), importer.value[n]) for n in outputs]
    output = b.outputs(ports, f"NIR outputs {', '.join(map(repr, outputs))}")
    return b.finish(name, output, timesteps, input_ports, tuple(port for port, _ in ports))


def _own_type(node: Any, importer: _Importer, name: str) -> TensorType:
    """The type of a back edge's value, before its source is converted: the NIR node's declared output type."""
    declared = (getattr(node, "output_type", None) or {}).get("output")
    if declared is None or np.size(declared) == 0:
        raise FrontendError(f"{importer.loc(name)} closes a cycle but declares no output shape")
    return TensorType(_integers(declared, None, f"{importer.loc(name)}: output_type"))
