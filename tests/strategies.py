"""Hypothesis strategies: random small SNN graphs in the IR (chains of the supported ops, with element-wise side
branches and recurrent delays)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from masic.ir.graph import Graph, Node, ParamRef, TensorType
from masic.ir.neurons import FAMILIES
from masic.ir.ops import OPS
from masic.ir.shapes import ShapeError

# The ops drawn, from the op table: a new element-wise op or pooling is drawn too, and so is a new neuron family
# whose attributes are among those `_neuron_attrs` draws.
NEURON_ATTRS = ("dt_tau_mem", "neg_dt_tau_syn", "v_leak", "v_th", "v_reset", "reset")
NEURONS = tuple(op for op, f in FAMILIES.items() if set(f.params + f.mode_names) <= set(NEURON_ATTRS))
ELEMENTWISE = tuple(op.name for op in OPS.values() if op.function and op.arity == 1)
BINARY = tuple(op.name for op in OPS.values() if op.function and op.arity == 2)
TERNARY = tuple(op.name for op in OPS.values() if op.function and op.arity == 3)
POOLS = tuple(op.name for op in OPS.values() if op.pooling)


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


class _Chain:
    """A graph under construction: its nodes in order, each typed by its op's shape rule, and their weights."""

    def __init__(self, draw: st.DrawFn, rng: np.random.Generator, shape: tuple[int, ...]) -> None:
        self.draw, self.rng = draw, rng
        self.weights: dict[str, np.ndarray] = {}
        self.nodes = [Node("in", "input", type=TensorType(shape))]

    def push(
        self, op: str, attrs: dict, inputs: tuple[str, ...] | None = None, declared: TensorType | None = None
    ) -> None:
        """Appends a node `n<position>` reading `inputs` (default: the last node); raises ShapeError if they do not
        fit."""
        inputs = (self.nodes[-1].name,) if inputs is None else inputs
        node = Node(f"n{len(self.nodes)}", op, inputs, tuple(attrs.items()), declared)
        types = tuple(next(n.type for n in self.nodes if n.name == v) for v in inputs)
        self.nodes.append(Node(node.name, op, node.inputs, node.attrs, OPS[op].infer(node, types)))

    def element_param(self, name: str) -> float | ParamRef:
        """A float, or one value per element of the last node's output."""
        if self.draw(st.booleans()):
            return self.draw(st.sampled_from([-0.5, 0.25, 1.5]))
        return self.param(name, self.rng.normal(0, 1, self.nodes[-1].type.shape))

    def param(self, name: str, array: np.ndarray) -> ParamRef:
        self.weights[name] = array.astype(np.float32)
        return ParamRef(name)

    def graph(self, timesteps: int) -> Graph:
        graph = Graph("random", (), self.nodes[-1].name, timesteps=timesteps)
        return graph.with_params(self.weights).with_nodes(self.nodes)


@st.composite
def graphs(draw: st.DrawFn, max_layers: int = 6) -> Graph:
    """A random chain: optional conv/pool stages on a (C,H,W) input, then flatten, dense and neuron layers; element-wise
    ops with float or per-element parameters, binary ops of the current value with an element-wise function of it,
    constants, reshapes, and integrators closed by a delay (`s = x + delay(s)`)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    conv_input = draw(st.booleans())
    shape = (
        (draw(st.integers(1, 3)), draw(st.integers(4, 9)), draw(st.integers(4, 9)))
        if conv_input
        else (draw(st.integers(2, 24)),)
    )
    chain = _Chain(draw, rng, shape)
    nodes, push, param, element_param = chain.nodes, chain.push, chain.param, chain.element_param

    for _ in range(draw(st.integers(1, max_layers))):
        current = nodes[-1].type.shape
        choices = ["neuron", "dense"] if len(current) == 1 else ["neuron", "conv", "pool", "flatten"]
        kind = draw(st.sampled_from([*choices, "elementwise", "binary", "delay", "reshape"]))
        name = f"n{len(nodes)}"
        if kind == "elementwise":
            op = draw(st.sampled_from(ELEMENTWISE))
            key = OPS[op].function_param
            push(op, {key: element_param(f"{name}.{key}")} if key else {})
        elif kind == "binary":
            x = nodes[-1]
            if draw(st.booleans()):
                push("constant", {"value": element_param(f"{name}.value")}, (), x.type)
            else:
                push("scale", {"factor": element_param(f"{name}.factor")})
            op = draw(st.sampled_from(BINARY + TERNARY))
            other = nodes[-1].name
            push(op, {}, (x.name, other, x.name)[: OPS[op].arity])
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
            op = draw(st.sampled_from([*POOLS, "adaptive_avgpool2d"]))
            if op == "adaptive_avgpool2d":
                push(op, {"output": (draw(st.integers(1, h + 2)), draw(st.integers(1, w + 2)))})
            else:
                push(op, {"kernel": (k, k), "stride": (k, k), "padding": (0, 0)})
        else:
            push("flatten", {})
    return chain.graph(draw(st.integers(1, 4)))


@st.composite
def conv_stages(draw: st.DrawFn, max_layers: int = 6, outputs: tuple[int, ...] = ()) -> Graph:
    """A random convolutional stage on a (C,H,W) image, as patch-rows cuts into row patches: convolutions with
    strides, padding, dilation and groups, pools with padding, neurons and element-wise ops with per-element
    parameters, residual blocks (x + a shape-keeping conv of x, perhaps through a neuron), a constant operand; then
    perhaps flatten and a dense layer, which end the stage. Ungrouped convs have 1 or 2 outputs, or one of
    `outputs` when given (and then perhaps a 1x1 pool reads the last layer's output)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    chain = _Chain(draw, rng, (draw(st.integers(1, 3)), draw(st.integers(5, 20)), draw(st.integers(3, 7))))

    def conv(name: str, c: int, out: int, kernel: tuple[int, int], groups: int, **window: tuple[int, int]) -> dict:
        weight = chain.param(f"{name}.w", rng.normal(0, 1, (out, c // groups, *kernel)))
        attrs = {"weight": weight, "out_channels": out, "kernel": kernel, "groups": groups, **window}
        if draw(st.booleans()):
            attrs["bias"] = chain.param(f"{name}.b", rng.normal(0, 0.5, out))
        return attrs

    def neuron() -> None:
        op = draw(st.sampled_from(NEURONS))
        attrs = _neuron_attrs(draw, op)
        for key in ("v_th", "v_leak") if draw(st.booleans()) else ():  # per-neuron threshold and rest value
            if key in attrs:
                low, high = (0.3, 1.0) if key == "v_th" else (-0.1, 0.1)
                shape = chain.nodes[-1].type.shape
                attrs[key] = chain.param(f"n{len(chain.nodes)}.{key}", rng.uniform(low, high, shape))
        chain.push(op, attrs)

    for _ in range(draw(st.integers(1, max_layers))):
        c, _, _ = chain.nodes[-1].type.shape
        start = len(chain.nodes)
        name = f"n{start}"
        kind = draw(st.sampled_from(["conv", "conv", "pool", "neuron", "elementwise", "residual", "constant"]))
        try:
            if kind == "conv":
                kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
                window = {
                    "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 2))),
                    "padding": (draw(st.integers(0, kernel[0])), draw(st.integers(0, kernel[1] // 2))),
                    "dilation": (draw(st.integers(1, 2)), 1),
                }
                groups = draw(st.sampled_from([1, c]))
                out = draw(st.sampled_from(outputs)) if outputs and groups == 1 else groups * draw(st.integers(1, 2))
                chain.push("conv2d", conv(name, c, out, kernel, groups, **window))
            elif kind == "pool":
                k = draw(st.integers(1, 3))
                op = draw(st.sampled_from(POOLS))
                window = {"kernel": (k, k), "stride": (draw(st.integers(1, 2)),) * 2}
                chain.push(op, {**window, "padding": (draw(st.integers(0, k // 2)), 0)})
            elif kind == "neuron":
                neuron()
            elif kind == "elementwise":
                op = draw(st.sampled_from(ELEMENTWISE))
                key = OPS[op].function_param
                chain.push(op, {key: chain.element_param(f"{name}.{key}")} if key else {})
            elif kind == "residual":  # x + f(x), f a conv keeping the shape: odd kernel, "same" padding
                x = chain.nodes[-1]
                k, d = draw(st.sampled_from([1, 3])), draw(st.integers(1, 2))
                groups = draw(st.sampled_from([1, c]))
                window = {"stride": (1, 1), "padding": (d * (k // 2), k // 2), "dilation": (d, 1)}
                chain.push("conv2d", conv(name, c, c, (k, k), groups, **window))
                if draw(st.booleans()):
                    neuron()
                chain.push("add", {}, (x.name, chain.nodes[-1].name))
            else:
                x = chain.nodes[-1]
                chain.push("constant", {"value": chain.element_param(f"{name}.value")}, (), x.type)
                chain.push(draw(st.sampled_from(BINARY)), {}, (x.name, chain.nodes[-1].name))
        except ShapeError:  # a window larger than what is left of the image: try another layer
            del chain.nodes[start:]
    if outputs and draw(st.booleans()):  # a reader of the last conv's output other than the graph's output
        chain.push(
            draw(st.sampled_from(["maxpool2d", "avgpool2d"])), {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0)}
        )
    if draw(st.booleans()):
        chain.push("flatten", {})
        features = chain.nodes[-1].type.shape[0]
        weight = chain.param(f"n{len(chain.nodes)}.w", rng.normal(0, 1, (3, features)))
        chain.push("dense", {"weight": weight, "in_features": features, "out_features": 3})
    return chain.graph(draw(st.integers(1, 4)))


@st.composite
def spiking_dense_graphs(draw: st.DrawFn, max_layers: int = 4) -> Graph:
    """A random graph (`graphs`) continued by a spiking neuron whose spikes a dense layer reads, directly or
    through views (reshape, flatten), and perhaps another node too: a second dense layer, an element-wise op or a
    concat of the spikes (whose output, the graph's, must then be float32, and so must the spikes)."""
    base = draw(graphs(max_layers))
    chain = _Chain(draw, np.random.default_rng(draw(st.integers(0, 2**32 - 1))), (1,))
    chain.nodes, chain.weights = list(base.nodes), dict(base.weights)
    if len(chain.nodes[-1].type.shape) > 1:
        chain.push("flatten", {})
    n = chain.nodes[-1].type.shape[0]
    op = draw(st.sampled_from(("lif", "lif_box", "iaf")))
    chain.push(op, {k: v for k, v in _neuron_attrs(draw, op).items() if k != "probe"})
    spikes = read = chain.nodes[-1].name
    if draw(st.booleans()):
        chain.push("reshape", {"shape": (1, 1, n)})
        chain.push("flatten", {})
        read = chain.nodes[-1].name

    def dense(operand: str) -> None:
        out = draw(st.integers(1, 40))
        weight = chain.param(f"n{len(chain.nodes)}.w", chain.rng.normal(0, 1, (out, n)))
        chain.push("dense", {"weight": weight, "in_features": n, "out_features": out}, (operand,))

    dense(read)
    other = draw(st.sampled_from(["none", "dense", "scale", "concat"]))
    if other == "dense":
        dense(spikes)
    elif other == "scale":
        chain.push("scale", {"factor": 0.5}, (spikes,))
    elif other == "concat":
        chain.push("concat", {"axis": 0}, (chain.nodes[-1].name, spikes))
    return chain.graph(base.timesteps)
