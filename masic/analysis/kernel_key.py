"""Kernel description keys: which kernel call a measured time (`masic profile`) belongs to, from IR facts alone.

The key of a node is what decides its kernel's work and code: the op, its operands' and its own shape and element
type, each parameter's shape and stored type, the attributes that are no planning choice (kernel size, stride,
groups, ...), and the steps one call computes (a batched dense layer's block, else 1), e.g.

    conv2d(f32[1,16,16]){bias=f32[32],dilation=(1, 1),...,weight=f32[32,1,5,5]}->f32[32,12,12]x1

A call site's key (`site_key`) is its node's, joined with "+" to the neuron fused into it (`Graph.epilogue`): the
call computes both. Left out, so that the key the artifact records per call site (its manifest, after every pass)
is the key the schedule pass sees before the layout and fuse-neurons passes run: the layouts and `fused`
(planning choices made after the schedule, from the same facts), float attributes (constants baked into the code;
they do not change its time) and names (pieces of a sliced layer with the same shapes share a key, as do identical
layers). The thread count is not in the key: a profile's table holds the times of one run, at its thread count
(`masic.targets.machine.Measured.threads`).
"""

from __future__ import annotations

from masic.ir.graph import Graph, Node
from masic.ir.node import ParamRef, TensorType
from masic.ir.ops import OPS

PLANNING_ATTRS = frozenset({"layout", "weight_layout", "fused"})


def _type(t: TensorType | None) -> str:
    assert t is not None
    return f"{t.dtype}[{','.join(map(str, t.shape))}]"


def node_key(node: Node, graph: Graph) -> str:
    """The description key of one node's kernel (see the module's docstring)."""
    operands = ",".join(_type(graph.node(value).type) for value in node.inputs)
    attrs = []
    for key, value in sorted(node.attrs):
        if isinstance(value, ParamRef):
            attrs.append(f"{key}={_type(graph.param(value.name).type)}")
        elif key not in PLANNING_ATTRS and not isinstance(value, float):
            attrs.append(f"{key}={value!r}")
    steps = graph.schedule.block if graph.batched(node) else 1
    return f"{node.op}({operands}){{{','.join(attrs)}}}->{_type(node.type)}x{steps}"


def pair_key(layer: Node, neuron: Node, graph: Graph) -> str:
    """The key of a call computing `layer` with `neuron` as its epilogue."""
    return f"{node_key(layer, graph)}+{node_key(neuron, graph)}"


def site_key(node: Node, graph: Graph) -> str:
    """The key of the kernel call at a node's call site: the node's, with its fused neuron's if it has one."""
    neuron = graph.epilogue(node)
    return pair_key(node, neuron, graph) if neuron else node_key(node, graph)


def fusion_candidate(node: Node, graph: Graph) -> Node | None:
    """The neuron that may run as the epilogue of `node`, a layer whose kernel takes one (`OpDef.fusable`): its
    only user, when that is a neuron (of a neuron family)."""
    if not OPS[node.op].fusable:
        return None
    users = graph.users(node.name)
    return users[0] if len(users) == 1 and OPS[users[0].op].family is not None else None
