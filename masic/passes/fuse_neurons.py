"""fuse-neurons: run a neuron update as the epilogue of the conv or dense kernel that computes its input.

A conv2d or dense layer followed by a neuron writes its whole output (the synaptic input) to memory, and the
neuron kernel reads it back, with the neuron's state, to write the spikes and the new state. Fused, the layer's
kernel applies the neuron update to each output while it is still in registers: that output is never stored (it
owns no buffer: `Graph.elided`), which saves one write and one read of it per step and its arena bytes.

A neuron (not a delay) may get `fused=true` when `masic.ir.verify.fusion_problem` finds none, the rule the
verifier checks fused neurons by: its operand is
- a conv2d, or a dense layer that runs one step per call (a batched dense layer, `Graph.batched`, computes all the
  block's steps in one call, while the neuron's steps must run in order, each after the one before);
- read by that neuron only, and neither the graph's output nor a delay's source (those need the value stored);
and the neuron itself is no delay's source (a delay copies its source's value at the source's own position).

Where it pays: the epilogue runs in the layer's output loop, which is vectorised in a conv vectorised along output
columns, in the accumulate-only dense kernel, and in a conv vectorised along output channels (blocked weights,
"OIHW{ob}o") that stores its output NCHW{ob}c (the layout pass's choice: a pixel's ob outputs, one vector). A
blocked conv storing NCHW has a tile of channels x pixels whose outputs lie a map apart, and the dense kernel sums
rows of partial sums: both store one output at a time. Measured with bench/speed part 1b (the fused kernel
against the layer's and the neuron's own kernels; figures in docs/benchmarks.md, "Fused neurons"): column convs
with rows of 8 or more columns and blocked convs storing NCHW{ob}c run as fast or faster fused; blocked convs
storing NCHW, the dense kernel and column convs on maps of 4 columns or fewer run slower fused (the neuron's loads,
stores and arithmetic in a loop that stores one output at a time). So a neuron is fused only where its layer's
kernel stores whole vectors (`pays`).

Fusing moves the neuron's state use to the layer's call, where the layer's operand and scratch are live too: with
state that lives only while its layer runs (`masic.ir.graph.transient_states`) the arena can grow. So the
pass fuses every neuron the rule allows only when the plan still fits: within the budget by the fit test the
budget passes decide by (`assign_offsets.arena_bytes`, which assign-offsets then meets), and without a budget when
the heuristic arena does not grow; otherwise it fuses none.

The fused kernel computes the layer exactly as the unfused one does (same schedule, same order of additions) and
the neuron update with the same float32 operations, so outputs and state are bit-identical to the unfused pair's.

Requires: typed graph with its schedule (after the schedule pass: whether a dense layer is batched) and weight
layouts (after the layout pass: the layer's kernel is chosen), before assign-offsets.
Ensures: either every neuron that the rule allows and where fusing pays has `fused=true` or none does (see
above), no other node has it; the plan fits the budget whenever the unfused one does; no value, shape or other
attribute changes.
"""

from __future__ import annotations

from masic.ir.graph import ACTIVATION_LAYOUT, Graph, Node
from masic.ir.ops import OPS
from masic.ir.shapes import matrix_vector
from masic.ir.verify import fusion_problem
from masic.passes.assign_offsets import arena_bytes
from masic.passes.base import PassOptions, require_types

NAME = "fuse-neurons"
MIN_COLUMNS = 8  # output columns a conv's vectors must span for its epilogue to pay (bench/speed part 1b)


def pays(graph: Graph, neuron: Node) -> bool:
    """Whether the layer's kernel stores its outputs a vector at a time, so that the epilogue runs vectorised: a
    conv vectorised along output columns (OIHW weights) with rows of at least MIN_COLUMNS, a conv storing its output
    in blocks of channels, or the accumulate-only dense kernel (vectorised along outputs). The others store one
    output at a time and the epilogue then costs more than the pass it saves (module docstring)."""
    producer = graph.node(neuron.inputs[0])
    if not OPS[producer.op].window:  # a dense layer: its accumulate-only kernel is vectorised along outputs
        return producer.attr("weight_layout") == "IO"
    if graph.layout(producer.name) != ACTIVATION_LAYOUT:  # NCHW{c}c: a pixel's block of outputs, one vector
        return True
    in_shape = graph.node(producer.inputs[0]).type.shape
    columns = producer.attr("weight_layout") is None and not matrix_vector(producer, in_shape)
    return columns and producer.type.shape[2] >= MIN_COLUMNS


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    plain = graph.with_nodes([node.with_attrs(fused=None) for node in graph.nodes])
    nodes = [
        node.with_attrs(fused=True)
        if OPS[node.op].family and not fusion_problem(plain, node) and pays(plain, node)
        else node
        for node in plain.nodes
    ]
    fused = plain.with_nodes(nodes)
    if fused.nodes == plain.nodes:
        return plain
    if options.budget is not None:  # the fit test the budget passes decide by, which assign-offsets then meets
        fits = arena_bytes(fused, options.alignment, options.budget) <= options.budget
    else:
        fits = arena_bytes(fused, options.alignment, thorough=True) <= arena_bytes(
            plain, options.alignment, thorough=True
        )
    return fused if fits else plain
