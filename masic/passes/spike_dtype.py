"""spike-dtype: store spikes as one byte each.

A spiking neuron's output (lif, lif_box, iaf; not a probe, not li / li_box, which output voltages) becomes a
`spike` value (0 or 1 in a uint8), and so does every value of an op that passes spikes on unchanged
(`OpDef.passes_spikes`) whose operands are all spikes: max pooling, views (flatten, reshape), crop_rows, concat,
and a delay whose source is spikes. Every other op keeps
its float32 output and reads spike operands as 0.0 / 1.0 (whether a dense layer of spikes accumulates rather than
multiplies is the layout pass's choice, once the schedule is known).

Two places must stay float32: the graph's output (the loader reads float32 and the early exit accumulates it) and
the operands of a concat that are not all spikes (its parts share one type). A spiking neuron that reaches such a
place only through spike-passing ops keeps a float32 output, rather than gaining a cast op: such a neuron is
usually a classifier's last layer, whose output is small and read by the exit rule every step anyway.

The pass runs right after infer-shapes and fold-batchnorm, before slice-layers and patch-rows, so that their
budget decisions (which measure plans by liveness) see the smaller buffers. The nodes they create keep the types
this pass chose: slices of a dense layer and their concat are float32 like the layer; row patches copy each
node's type, and crop_rows and concat pass spikes on.

Requires: typed graph.
Ensures: every value that holds spikes as defined above is `spike`, all others `f32`; the graph output is `f32`;
the graph computes the same values.
"""

from __future__ import annotations

from dataclasses import replace

from masic.ir.graph import Graph, Node, TensorType
from masic.ir.ops import OPS, neuron_op
from masic.passes.base import PassOptions, require_types

NAME = "spike-dtype"


def spiking(node: Node) -> bool:
    """Whether the node outputs spikes of its own (a spiking neuron that does not probe a state)."""
    definition = neuron_op(node.op)
    return definition is not None and definition.spiking and node.attr("probe") is None


def _sources(node: Node) -> tuple[str, ...]:
    """The values whose type a spike-passing node takes on."""
    return (node.attr("source"),) if OPS[node.op].delay else node.inputs


def _spike_values(graph: Graph, kept: set[str]) -> set[str]:
    """The largest set of values, none in `kept`, that can be spikes: spiking neurons, and spike-passing nodes whose
    sources are all in the set (largest, so that a delay's cycle through its source stays spikes)."""
    candidates = (n for n in graph.nodes if spiking(n) or OPS[n.op].passes_spikes)
    spikes = {n.name for n in candidates if n.name not in kept}
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            if node.name in spikes and not spiking(node) and not all(s in spikes for s in _sources(node)):
                spikes.discard(node.name)
                changed = True
    return spikes


def _behind(graph: Graph, value: str) -> set[str]:
    """`value` and every value whose spikes reach it through spike-passing ops only (down to spiking neurons)."""
    seen, todo = set(), [value]
    while todo:
        node = graph.node(todo.pop())
        if node.name not in seen:
            seen.add(node.name)
            todo += [] if spiking(node) or not OPS[node.op].passes_spikes else _sources(node)
    return seen


def spike_values(graph: Graph) -> set[str]:
    """The values that hold spikes once the places that must stay float32 (see above) are satisfied."""
    kept: set[str] = set()
    while True:
        spikes = _spike_values(graph, kept)
        must_float = [graph.output] if graph.output in spikes else []
        for node in graph.nodes:
            # an op passing spikes on outputs its operands' one type (for one operand, this holds already)
            if OPS[node.op].passes_spikes and node.name not in spikes:
                must_float += [v for v in node.inputs if v in spikes]
        if not must_float:
            return spikes
        kept |= {name for value in must_float for name in _behind(graph, value)}  # each round keeps one more


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    spikes = spike_values(graph)
    nodes = []
    for node in graph.nodes:
        if spiking(node) or OPS[node.op].passes_spikes:
            node = replace(node, type=TensorType(node.type.shape, "spike" if node.name in spikes else "f32"))
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes))
