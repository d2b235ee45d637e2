"""fuse-neurons: run a neuron update as the epilogue of the conv or dense kernel that computes its input.

A conv2d or dense layer followed by a neuron writes its whole output (the synaptic input) to memory, and the
neuron kernel reads it back, with the neuron's state, to write the spikes and the new state. Fused, the layer's
kernel applies the neuron update to each output while it is still in registers: that output is never stored (it
owns no buffer: `Graph.elided`), which saves one write and one read of it per step and its arena bytes.

A neuron (not a delay) gets `fused=true` when `masic.ir.verify.fusion_problem` finds none, the rule the verifier
checks fused neurons by: its operand is
- a conv2d, or a dense layer that runs one step per call (a batched dense layer, `Graph.batched`, computes all the
  block's steps in one call, while the neuron's steps must run in order, each after the one before);
- read by that neuron only, and neither the graph's output nor a delay's source (those need the value stored);
and the neuron itself is no delay's source (a delay copies its source's value at the source's own position).

Fusing moves the neuron's state use to the layer's call, where the layer's operand and scratch are live too: with
state that lives only while its layer runs (`masic.analysis.liveness.transient_states`) the arena can grow. So the
pass fuses every neuron the rule allows only when the plan still fits: within the budget by the fit test the
budget passes decide by (`assign_offsets.arena_bytes`, which assign-offsets then meets), and without a budget when
the heuristic arena does not grow; otherwise it fuses none.

The fused kernel computes the layer exactly as the unfused one does (same schedule, same order of additions) and
the neuron update with the same float32 operations, so outputs and state are bit-identical to the unfused pair's.

Requires: typed graph with its schedule (after the schedule pass: whether a dense layer is batched) and weight
layouts (after the layout pass: the layer's kernel is chosen), before assign-offsets.
Ensures: either every neuron that satisfies the rule above has `fused=true` or none does (see above), no other
node has it; the plan fits the budget whenever the unfused one does; no value, shape or other attribute changes.
"""

from __future__ import annotations

from masic.ir.graph import Graph
from masic.ir.ops import neuron_op
from masic.ir.verify import fusion_problem
from masic.passes.assign_offsets import arena_bytes
from masic.passes.base import PassOptions

NAME = "fuse-neurons"


def run(graph: Graph, options: PassOptions) -> Graph:
    plain = graph.with_nodes([node.with_attrs(fused=None) for node in graph.nodes])
    nodes = [
        node.with_attrs(fused=True) if neuron_op(node.op) and not fusion_problem(plain, node) else node
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
