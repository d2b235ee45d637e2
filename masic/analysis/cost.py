"""The cost model the schedule pass ranks plans with: planned latency of one inference on a target.

    compute(step) = sum over nodes of max(work(node) / macs_per_second, traffic(node) / memory_bytes_per_second)
    read(block)   = bytes of the weights streamed into slots / read_bytes_per_second
    latency       = sum over the blocks of max(steps(block) * compute(step), read(block))

`work` is each op's own (`OpDef.work`): multiply-accumulates for conv2d and dense, one operation per tap of a
pooling window, and one per output element (neurons, adds, copies) for the rest; `traffic` is the bytes a call
moves through memory (its weights, operands, output and state), which bounds layers such as large dense ones that
do little work per weight. A layer's output that a
fused neuron takes in registers (`Graph.elided`) is neither written nor read back: the schedule pass, which runs
before fuse-neurons, ranks plans without that saving; plans of fused graphs (`masic compile --budget-sweep`) count
it. Weights that fit the cache
stay there from step to step (counted once per inference); larger ones are read from memory once per step, or
once per block by a batched layer (`Graph.batched`), which is what makes blocks pay without a budget. The loading
thread reads a
block's weights while the kernels run, so a block takes the longer of the two: reading hides behind compute until
the streamed bytes outgrow it. A plan's latency therefore falls as
blocks grow (fewer re-reads) and as more weights stay resident, and the cost model says by how much on each target.

The machine figures are per target (`masic.targets.Target.machine`, a `masic.targets.machine.Machine`); they are
sustained figures for fp32 kernels and for reading a file from the device's usual storage, estimates, not
measurements of one board. Planned from a profile (`masic compile --profile`), the machine carries what the device
measured (`Machine.measured`, a table of seconds per step by kernel description key, `masic.analysis.kernel_key`)
and its read bandwidth; then a node's compute time is

    measured(node) = 0                       if it is a neuron whose layer's call with it as epilogue was measured
                   = table[layer + neuron]   if its neuron (`fusion_candidate`) may be fused and that call was measured
                   = table[node]             if its own call was measured
                   = scale * compute(node)   otherwise (scale: the median measured / estimated over the matches)

so that a plan of the profiled artifact reproduces its measured kernel times, and the reads take the measured
bandwidth. The latency then also counts what the profile measured outside the kernels:

    latency += overhead + reads * wait_per_load

`overhead`, the time of an inference outside the kernels and read waits (the loop, the input and the output), and
`wait_per_load`, the kernels' wait per streamed weight read beyond the reads' excess over the kernels' time, times
the reads of the plan (streamed weights times blocks): on a loaded or small machine the hand-over of each piece
from the loading thread costs more than its bytes at the measured bandwidth (docs/benchmarks.md, "Planned against
measured").
"""

from __future__ import annotations

from dataclasses import replace

from masic.analysis.kernel_key import fusion_candidate, node_key, pair_key, site_key
from masic.ir.graph import Graph, Node, Schedule
from masic.ir.ops import OPS, state_names, state_type
from masic.targets.machine import Machine


def node_work(node: Node, graph: Graph) -> int:
    """Multiply-accumulates of one call of a node (one operation per output element for element-wise work)."""
    assert node.type is not None
    return OPS[node.op].work(node, tuple(graph.node(value).type for value in node.inputs))


def node_traffic(node: Node, graph: Graph, machine: Machine) -> float:
    """Bytes one step of a node moves through memory: weights (see the module's docstring), operands and output
    (but a value a fused neuron takes in registers, `Graph.elided`), and state read and written."""
    assert node.type is not None
    weights = sum(graph.param(ref.name).type.nbytes for _, ref in node.param_refs())
    if weights <= machine.cache_bytes:
        weights /= graph.timesteps
    elif graph.batched(node):
        weights /= graph.schedule.block
    stored = [graph.node(value).type for value in (*node.inputs, node.name) if not graph.elided(value)]
    return weights + sum(t.nbytes for t in stored) + 2 * len(state_names(node)) * state_type(node).nbytes


def estimated_seconds(node: Node, graph: Graph, machine: Machine) -> float:
    """Estimated compute time of one step of a node: bound by its arithmetic or by its memory traffic."""
    if not OPS[node.op].calls_kernel:  # the loader writes the input; views cost nothing
        return 0.0
    return max(
        node_work(node, graph) / machine.macs_per_second,
        node_traffic(node, graph, machine) / machine.memory_bytes_per_second,
    )


def node_seconds(node: Node, graph: Graph, machine: Machine) -> float:
    """Compute time of one step of a node: measured where the machine's table has its call (see the module's
    docstring), else estimated."""
    measured = machine.measured
    if measured is None or not OPS[node.op].calls_kernel:
        return estimated_seconds(node, graph, machine)
    table = measured.seconds
    if len(node.inputs) == 1:
        layer = graph.node(node.inputs[0])
        if fusion_candidate(layer, graph) == node and pair_key(layer, node, graph) in table:
            return 0.0
    neuron = fusion_candidate(node, graph)
    if neuron is not None and (key := pair_key(node, neuron, graph)) in table:
        return table[key]
    if (key := node_key(node, graph)) in table:
        return table[key]
    return measured.scale * estimated_seconds(node, graph, machine)


def step_seconds(graph: Graph, machine: Machine) -> float:
    """Compute time of one timestep under the graph's schedule: the sum of its nodes'."""
    return sum(node_seconds(node, graph, machine) for node in graph.nodes)


def inference_seconds_per_call_site(graph: Graph, machine: Machine) -> dict[str, float]:
    """Planned compute time of one inference (graph.timesteps steps) per node that the artifact calls a kernel
    for, a fused neuron's counted with the layer whose call computes it: what `masic profile` sets against the
    measured times."""
    return {
        node.name: graph.timesteps * sum(node_seconds(n, graph, machine) for n in (node, graph.epilogue(node)) if n)
        for node in graph.nodes
        if OPS[node.op].calls_kernel and not node.attr("fused")
    }


def planned_latency(graph: Graph, schedule: Schedule, machine: Machine) -> float:
    """Seconds one inference of graph.timesteps steps takes under `schedule`, by the model above."""
    step = step_seconds(replace(graph, schedule=schedule), machine)
    streamed = sum(graph.param(name).type.nbytes for name in schedule.streamed)
    read = streamed / machine.read_bytes_per_second
    full, rest = divmod(graph.timesteps, schedule.block)  # whole blocks, and the steps of a last partial one
    blocks = full + (rest > 0)
    measured = machine.measured
    overhead = (
        measured.overhead_seconds + blocks * len(schedule.streamed) * measured.wait_per_load_seconds
        if measured
        else 0.0
    )
    return full * max(schedule.block * step, read) + (max(rest * step, read) if rest else 0.0) + overhead


def planned_entry(graph: Graph, machine: Machine, planned_by: str) -> dict[str, object]:
    """The manifest's `planned` entry of a planned graph: where the figures came from, the read figure, the planned
    latency of one inference, and per kernel call site its planned and estimated (without a measured table) time
    of one inference and its description key, which `masic profile` sets against the measured times."""
    planned = inference_seconds_per_call_site(graph, machine)
    estimated = inference_seconds_per_call_site(graph, replace(machine, measured=None))
    return {
        "by": planned_by,
        "read_bytes_per_second": machine.read_bytes_per_second,
        "latency_us": 1e6 * planned_latency(graph, graph.schedule, machine),
        "nodes": [
            {
                "node": name,
                "us": 1e6 * seconds,
                "estimated_us": 1e6 * estimated[name],
                "key": site_key(graph.node(name), graph),
            }
            for name, seconds in planned.items()
        ],
    }


def measured_call_sites(graph: Graph, machine: Machine) -> list[str]:
    """The nodes of a planned graph whose kernel call the machine's measured table times."""
    table = machine.measured.seconds if machine.measured else {}
    return [
        name for name in inference_seconds_per_call_site(graph, machine) if site_key(graph.node(name), graph) in table
    ]
