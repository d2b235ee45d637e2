"""Running a framework's model and masic's version of it on one input, and the rule their spikes and membranes must
meet (issue 18): spikes identical, or below 0.1% differing with each difference explained by a membrane within 1e-6
of its threshold; membranes within rtol 1e-5 wherever the spikes so far agree (a spike that differs resets one
membrane and not the other, after which they differ by design).

masic's side observes the output neuron's spikes and membrane at once: `observed` gives the graph a second output
from a twin of that neuron (same input, attributes and so state at every step) that probes its membrane; several
models compile into one artifact side by side (`side_by_side`), their inputs and outputs packed as ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from masic.frontends.graph_builder import GraphBuilder

from masic.ir.graph import Graph, Node, ParamRef, Port

SPIKES_DIFFERING = 1e-3
NEAR_THRESHOLD = 1e-6
MEMBRANE_RTOL = 1e-5


@dataclass(frozen=True)
class Trace:
    """One run's output spikes, and the output cell's membrane and threshold, each (steps, neurons)."""

    z: np.ndarray
    v: np.ndarray
    threshold: np.ndarray | None = None


def _cell_state(state: Any) -> Any:
    """The output cell's state within what a model returns (a SequentialState's list, a RecurrentSequential's)."""
    if isinstance(state, list):
        return state[-1]
    inner = getattr(state, "state", None)
    return _cell_state(inner) if isinstance(inner, list) else state


def run_norse(case: Any, x: np.ndarray) -> Trace:
    """The case's model run by Norse on x (steps, *shape), a batch of one."""
    model = case.factory()
    flat = lambda t: torch.as_tensor(t).reshape(len(x), -1).float().numpy()  # noqa: E731
    with torch.no_grad():
        if case.lifted:
            out, state = model(torch.from_numpy(x)[:, None])  # states recorded: (steps, 1, ...)
            cell = _cell_state(state)
            v, threshold = (torch.broadcast_to(t, out.shape) for t in (case.membrane(cell), case.threshold(cell, out)))
            return Trace(flat(out[:, 0]), flat(v[:, 0]), flat(threshold[:, 0]))
        state, zs, vs, ths = None, [], [], []
        for step in x:
            out, state = model(torch.from_numpy(step)[None], state)
            cell = _cell_state(state)
            zs.append(out[0])
            vs.append(torch.broadcast_to(case.membrane(cell), out.shape)[0])
            ths.append(torch.broadcast_to(case.threshold(cell, out), out.shape)[0])
    return Trace(flat(torch.stack(zs)), flat(torch.stack(vs)), flat(torch.stack(ths)))


def observed(graph: Graph) -> Graph:
    """The graph with two outputs, `z` (its output) and `v` (the output neuron's membrane): a twin of the output
    neuron that probes `v`, or for a CobaLIFCell (element-wise ops, a `threshold` node) its membrane's value."""
    b = GraphBuilder()
    b.weights = dict(graph.weights)
    for node in graph.nodes:
        b.nodes[node.name] = node
    out = graph.node(graph.output)
    if out.op == "threshold":
        membrane = f"{out.name}.v"
    else:
        membrane = b.add(f"{out.name}.probe", out.op, out.inputs, dict(out.attrs) | {"probe": "v"}, out.loc)
    size = out.type.numel
    ports = [(Port("z", out.type.shape), out.name), (Port("v", (size,)), membrane)]
    return b.finish(graph.name, b.outputs(ports, "observed"), graph.timesteps, (), tuple(p for p, _ in ports))


def side_by_side(graphs: dict[str, Graph], timesteps: int) -> Graph:
    """One graph running `graphs` independently, each node and parameter renamed `<key>.<name>`: its input ports
    are each graph's input, its output ports each graph's output ports (`<key>.<port>`)."""
    b = GraphBuilder()
    inputs = tuple(Port(key, g.inputs[0].type.shape) for key, g in graphs.items())
    values = b.inputs(inputs, "side by side")
    outputs: list[tuple[Port, str]] = []
    ports: list[Port] = []
    for key, graph in graphs.items():
        names = {graph.inputs[0].name: values[key]}
        delays: list[tuple[str, str]] = []
        for node in graph.nodes[1:]:
            names[node.name] = _copy(b, key, node, names, graph, delays)
        for delay, source in delays:
            b.connect_delay(delay, names[source])
        output = graph.node(graph.output).type
        outputs.append((Port(key, (output.numel,)), names[graph.output]))
        ports += [Port(f"{key}.{p.name}", p.shape) for p in graph.output_ports or (Port("out", output.shape),)]
    return b.finish("side_by_side", b.outputs(outputs, "side by side"), timesteps, inputs, tuple(ports))


def _copy(b: GraphBuilder, key: str, node: Node, names: dict[str, str], graph: Graph, delays: list) -> str:
    if node.op == "delay":
        delays.append((b.delay(f"{key}.{node.name}", node.type, node.loc), node.attr("source")))
        return delays[-1][0]
    attrs = {
        k: b.param(f"{key}.{v.name}", graph.weights[v.name]) if isinstance(v, ParamRef) else v for k, v in node.attrs
    }
    declared = node.type if node.op == "constant" else None
    return b.add(f"{key}.{node.name}", node.op, tuple(names[i] for i in node.inputs), attrs, node.loc, declared)


def check(name: str, norse: Trace, masic: Trace) -> None:
    """The rule of the module docstring, with messages naming the model, the step and the neuron."""
    assert masic.z.shape == norse.z.shape, f"{name}: spikes of shape {masic.z.shape}, Norse {norse.z.shape}"
    differ = np.argwhere(masic.z != norse.z)
    assert len(differ) <= SPIKES_DIFFERING * norse.z.size, f"{name}: {len(differ)} of {norse.z.size} spikes differ"
    for t, j in differ:  # the side that did not spike holds its membrane as it met the threshold
        membrane = norse.v if norse.z[t, j] == 0 else masic.v
        gap = abs(float(membrane[t, j]) - float(norse.threshold[t, j]))
        assert gap <= NEAR_THRESHOLD * max(1.0, abs(float(norse.threshold[t, j]))), (
            f"{name}: spike of neuron {j} at step {t} differs, its membrane {gap:g} from threshold"
        )
    agree = len(norse.z) if len(differ) == 0 else int(differ[:, 0].min())
    scale = max(1.0, float(np.abs(norse.v).max()))
    np.testing.assert_allclose(
        masic.v[:agree], norse.v[:agree], rtol=MEMBRANE_RTOL, atol=MEMBRANE_RTOL * scale, err_msg=name
    )
