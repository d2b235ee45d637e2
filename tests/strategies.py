"""Hypothesis strategies: random small SNN graphs in the IR (chains of the supported ops, with element-wise side
branches and recurrent delays)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from masic.ir.graph import Graph, Node, ParamRef, TensorType
from masic.ir.ops import OPS

NEURONS = ("lif", "lif_box", "li", "li_box", "iaf")
ELEMENTWISE = ("scale", "offset", "threshold", "relu")
BINARY = ("add", "sub", "mul", "select")


def _neuron_attrs(draw: st.DrawFn, op: str) -> dict:
    floats = st.floats(0.0625, 0.5, width=32)
    attrs = {
        "dt_tau_mem": draw(floats),
        "neg_dt_tau_syn": -draw(floats),
        "v_leak": draw(st.sampled_from([0.0, 0.1])),
        "v_th": draw(st.sampled_from([0.3, 1.0])),
        "v_reset": draw(st.sampled_from([0.0, -0.1])),
        "reset": draw(st.sampled_from(["value", "subtract"])),
    }
    chosen = {k: attrs[k] for k in OPS[op].required}
    if "probe" in OPS[op].optional and draw(st.booleans()):
        chosen["probe"] = "v"  # observe the membrane instead of the spikes
    return chosen


@st.composite
def graphs(draw: st.DrawFn, max_layers: int = 6) -> Graph:
    """A random chain: optional conv/pool stages on a (C,H,W) input, then flatten, dense and neuron layers; element-wise
    ops with float or per-element parameters, binary ops of the current value with an element-wise function of it,
    constants, reshapes, and integrators closed by a delay (`s = x + delay(s)`)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weights: dict[str, np.ndarray] = {}
    conv_input = draw(st.booleans())
    shape = (
        (draw(st.integers(1, 3)), draw(st.integers(4, 9)), draw(st.integers(4, 9)))
        if conv_input
        else (draw(st.integers(2, 24)),)
    )
    nodes = [Node("in", "input", type=TensorType(shape))]

    def push(op: str, attrs: dict, inputs: tuple[str, ...] | None = None, declared: TensorType | None = None) -> None:
        inputs = (nodes[-1].name,) if inputs is None else inputs
        node = Node(f"n{len(nodes)}", op, inputs, tuple(attrs.items()), declared)
        types = tuple(next(n.type for n in nodes if n.name == v) for v in inputs)
        nodes.append(Node(node.name, op, node.inputs, node.attrs, OPS[op].infer(node, types)))

    def element_param(name: str) -> float | ParamRef:
        if draw(st.booleans()):
            return draw(st.sampled_from([-0.5, 0.25, 1.5]))
        return param(name, rng.normal(0, 1, nodes[-1].type.shape))

    def param(name: str, array: np.ndarray) -> ParamRef:
        weights[name] = array.astype(np.float32)
        return ParamRef(name)

    for _ in range(draw(st.integers(1, max_layers))):
        current = nodes[-1].type.shape
        choices = ["neuron", "dense"] if len(current) == 1 else ["neuron", "conv", "pool", "flatten"]
        kind = draw(st.sampled_from([*choices, "elementwise", "binary", "delay", "reshape"]))
        name = f"n{len(nodes)}"
        if kind == "elementwise":
            op = draw(st.sampled_from(ELEMENTWISE))
            key = {"scale": "factor", "offset": "value", "threshold": "threshold"}.get(op)
            push(op, {key: element_param(f"{name}.{key}")} if key else {})
        elif kind == "binary":
            x = nodes[-1]
            if draw(st.booleans()):
                push("constant", {"value": element_param(f"{name}.value")}, (), x.type)
            else:
                push("scale", {"factor": element_param(f"{name}.factor")})
            op = draw(st.sampled_from(BINARY))
            other = nodes[-1].name
            push(op, {}, (x.name, other, x.name) if op == "select" else (x.name, other))
        elif kind == "delay":  # an integrator: s = x + s(previous step); the delay comes before its source
            x = nodes[-1]
            push("delay", {"source": f"n{len(nodes) + 1}"}, (), x.type)
            push("add", {}, (x.name, nodes[-1].name))
        elif kind == "reshape":  # (n,) -> (1, 1, n) lets convolutions follow; (C, H, W) -> (C, W, H)
            shape = (1, 1, current[0]) if len(current) == 1 else (current[0], current[2], current[1])
            push("reshape", {"shape": shape})
        elif kind == "neuron":
            op = draw(st.sampled_from(NEURONS))
            push(op, _neuron_attrs(draw, op))
        elif kind == "dense":
            out = draw(st.integers(1, 20))
            attrs = {"weight": param(f"{name}.w", rng.normal(0, 1, (out, current[0]))), "in_features": current[0]}
            attrs |= {"out_features": out}
            if draw(st.booleans()):
                attrs["bias"] = param(f"{name}.b", rng.normal(0, 0.5, out))
            push("dense", attrs)
        elif kind == "conv":
            c, h, w = current
            k = draw(st.integers(1, min(3, h, w)))
            groups = draw(st.sampled_from([g for g in (1, c) if c % g == 0]))
            out = groups * draw(st.integers(1, 3))
            attrs = {
                "weight": param(f"{name}.w", rng.normal(0, 1, (out, c // groups, k, k))),
                "out_channels": out,
                "kernel": (k, k),
                "stride": (draw(st.integers(1, 2)),) * 2,
                "padding": (draw(st.integers(0, k // 2)),) * 2,
                "dilation": (1, 1),
                "groups": groups,
            }
            push("conv2d", attrs)
        elif kind == "pool":
            c, h, w = current
            k = draw(st.integers(1, min(2, h, w)))
            op = draw(st.sampled_from(["maxpool2d", "avgpool2d", "sumpool2d", "adaptive_avgpool2d"]))
            if op == "adaptive_avgpool2d":
                push(op, {"output": (draw(st.integers(1, h + 2)), draw(st.integers(1, w + 2)))})
            else:
                push(op, {"kernel": (k, k), "stride": (k, k), "padding": (0, 0)})
        else:
            push("flatten", {})
    graph = Graph("random", (), nodes[-1].name, timesteps=draw(st.integers(1, 4)))
    return graph.with_params(weights).with_nodes(nodes)
