"""layout: choose how each conv's and dense layer's weight is stored, and which activations are stored channel-blocked.

A column-vectorised conv kernel fills its vectors only when the output map is a whole number of WIDE_COLUMNS
columns wide and read at stride 1 along the columns; otherwise (4x4 and 2x2 maps of VGG on 32x32 images, 24- and
8-column maps of ConvNet4, strided convs, whose columns are gathered) the weight gets the layout "OIHW{ob}o"
(`weight_layout`): blocks of ob output channels innermost, ob the largest of BLOCKS dividing the outputs of a group,
so the conv kernel (`masic.codegen.tir.conv`) vectorises along output channels and keeps a tile of output pixels in
registers. Measured against the column kernel (bench/speed's kernel harness; figures in docs/benchmarks.md,
"Convolutions vectorised along output channels"), it is faster on narrow maps (8x8 and below), on maps whose width
is no whole number of vectors and on strided convs; as fast on 16-column 3x3 maps; slower on wide maps with short
reductions (1x1 convs of 16x16 maps, 3x32x32 -> 64 3x3), which keep OIHW; and 1x1 convs of spikes keep OIHW (the
blocked kernel converts each input byte once per block of outputs, which costs more than a 1x1 window's few taps
save). The graph's weights stay OIHW: only weights.bin stores the blocked layout
(`masic.codegen.weights.stored_weight`), so no other pass and not the interpreter sees it.

A dense layer whose operand is spikes and that runs one step per call gets `weight_layout="IO"`: weights.bin
stores W transposed, and its kernel adds the rows of W^T for the active inputs instead of multiplying (several times
faster at the models' spike rates: docs/benchmarks.md, "Spikes as bytes"). A batched dense layer (`Graph.batched`,
in blocks of several steps) keeps (out, in) and multiplies: its kernel reads each weight once for all the block's
steps, and a row of W^T is needed whenever any step's input is active, so accumulating was slower there.

Spikes are bit-packed (type "bits", 32 to a word) where every consumer reads words: a spiking neuron's output
(with the views, flatten and reshape, that share its buffer) becomes bits exactly when it has readers and every
reader, through the views, is a dense layer that accumulates ("IO" above), and it is neither the graph's output
nor a delay's source. Its neuron kernel packs the spikes and the accumulating kernel skips a zero word, 32
inactive inputs, at once. Everything else that holds spikes keeps one byte each: max pools, convs, concats, crops
and batched dense layers read bytes, and a delay's state and the loader's output are written by byte-wise copies.
This is a layout rather than the spike-dtype pass's choice because only after the schedule is it known which
dense layers are batched; planners that run earlier (slice-layers, patch-rows) measure spikes as bytes, an upper
bound.

A conv whose weight is blocked by ob (above) stores its output "NCHW{ob}c" (`blocked_activations`): blocks of ob
channels innermost, so its kernel stores each pixel's ob outputs as one vector, where in NCHW they lie a map apart
and are stored one at a time. The layout passes on through the element-wise ops of one operand that read it
(neurons, relu, scale, ...: `OpDef.layout_carrier`, which store their output, state and per-element parameters alike),
and is chosen only if every other reader of those values reads it at no cost: a conv with a blocked weight
(it broadcasts one input element at a time, from wherever it is stored), a padded conv (its padding stage copies
the input into an NCHW scratch anyway) and the pools (they write NCHW). So no transpose ever runs: the layout
changes back to NCHW inside a kernel that reads the value anyway. The graph output and delay sources stay NCHW
(the loader and a delay's byte-wise copy read them), and so do 1x1 maps (the same bytes either way).

Requires: typed graph with its schedule (after the schedule pass: whether a dense layer is batched), after
slice-layers and patch-rows (their pieces are the layers that run; row patches of one conv share its weight and
its output width, so they get the same layout), before assign-offsets (bits shrink buffers: 4 bytes per 32
spikes).
Ensures: a value has `layout` "NCHW{ob}c" exactly when `blocked_activations` picks it (so every value that does
is written and read as `masic.ir.verify.layout_problem` allows); a conv2d has `weight_layout` "OIHW{ob}o" exactly
when the rule above picks it for every conv sharing its weight (one weight, one stored layout), never for a 1x1
conv of a 1x1 map (a matrix-vector product on the OIHW weight); a dense layer has "IO" exactly when its operand
holds spikes (bytes or bits) and it is not batched; a spike value is "bits" exactly when the rule above picks
it, else "spike"; values, shapes and every other attribute are unchanged. Running the pass again changes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from masic.ir.graph import SPIKE_DTYPES, Graph, Node, TensorType
from masic.ir.ops import OPS
from masic.ir.shapes import CONV_LAYOUT, matrix_vector, row_padding, weight_block
from masic.passes.base import PassOptions, require_types
from masic.passes.spike_dtype import spiking

NAME = "layout"
WIDE_COLUMNS = 16  # float32 lanes of the widest vectors (AVX-512); a multiple of NEON's 4 and AVX2's 8
BLOCKS = (16, 8, 4)  # output-channel blocks: whole vectors on NEON (4 lanes), and on AVX2 / AVX-512 from 8 / 16


def weight_layout(conv: Node, in_shape: tuple[int, ...], in_dtype: str = "f32") -> str:
    """The layout the rule in the module docstring picks for a conv2d reading a value of `in_shape` and `in_dtype`."""
    outputs, width = conv.attr("out_channels") // conv.attr("groups"), conv.type.shape[2]
    block = next((b for b in BLOCKS if outputs % b == 0), None)
    whole_vectors = width % WIDE_COLUMNS == 0 and conv.attr("stride")[1] == 1
    # the blocked kernel converts an input spike for every block of outputs: too often for a 1x1 window's few taps
    spikes_1x1 = in_dtype == "spike" and conv.attr("kernel") == (1, 1)
    if block is None or whole_vectors or spikes_1x1 or matrix_vector(conv, in_shape):
        return CONV_LAYOUT
    return f"OIHW{block}o"


def accumulates(graph: Graph, node: Node) -> bool:
    """Whether a dense layer gets the accumulate-only kernel ("IO"): its operand holds spikes, one step per call."""
    return node.op == "dense" and graph.node(node.inputs[0]).type.dtype in SPIKE_DTYPES and not graph.batched(node)


def _readers(graph: Graph) -> dict[str, list[Node]]:
    """Each value's readers, once each, in graph order."""
    readers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for value in dict.fromkeys(node.inputs):
            readers.setdefault(value, []).append(node)
    return readers


def reads_blocked_freely(graph: Graph, reader: Node) -> bool:
    """Whether a reader of an NCHW{c}c value reads it at no extra cost (see the module docstring): a conv with a
    blocked weight or that pads some row or column (its kernel copies the input into a padded scratch), or a
    pool."""
    if reader.op == "conv2d":
        blocked = weight_block(reader.attr("weight_layout", CONV_LAYOUT)) > 1
        return blocked or row_padding(reader) != (0, 0) or reader.attr("padding")[1] != 0
    return OPS[reader.op].reads_blocked


def blocked_activations(graph: Graph) -> dict[str, str]:
    """The values the rule in the module docstring stores NCHW{c}c, with that layout: the outputs of convs with a
    blocked weight, and of the element-wise ops they feed, where every other reader reads the layout freely."""
    readers = _readers(graph)
    param_readers: dict[str, set[str]] = {}
    for node in graph.nodes:
        for _, ref in node.param_refs():
            param_readers.setdefault(ref.name, set()).add(node.name)
    chosen: dict[str, str] = {}
    for conv in graph.nodes:
        if conv.op != "conv2d" or conv.type.shape[1:] == (1, 1):
            continue
        if (block := weight_block(conv.attr("weight_layout", CONV_LAYOUT))) == 1:
            continue
        group, fits = [conv], True  # the conv and the carriers its layout passes through
        for node in group:  # grows as carriers are found
            fits &= node.name != graph.output and not graph.delays_of(node.name)
            for reader in readers.get(node.name, ()):
                if OPS[reader.op].layout_carrier:
                    group.append(reader)
                else:
                    fits &= reads_blocked_freely(graph, reader)
        names = {node.name for node in group}
        # weights.bin stores a per-element parameter once, in its readers' layout
        params = {ref.name for node in group[1:] for _, ref in node.param_refs()}
        fits &= all(param_readers[name] <= names for name in params)
        if fits:
            chosen |= dict.fromkeys(names, f"NCHW{block}c")
    return chosen


def bit_packed(graph: Graph) -> set[str]:
    """The values the rule in the module docstring stores as bits: spiking neurons' outputs and their views."""
    readers = _readers(graph)
    chosen: set[str] = set()
    for node in graph.nodes:
        if not (spiking(node) and node.type.dtype in SPIKE_DTYPES):
            continue
        shared, consumers = [node.name], []  # the values sharing the neuron's buffer, and their other readers
        for value in shared:  # grows as views are found
            for reader in readers.get(value, ()):
                if OPS[reader.op].view:
                    shared.append(reader.name)
                else:
                    consumers.append(reader)
        # the loader reads the output as floats; a delay's state is filled by a byte-wise copy of its source
        pinned = any(value == graph.output or graph.delays_of(value) for value in shared)
        if consumers and all(accumulates(graph, c) for c in consumers) and not pinned:
            chosen |= set(shared)
    return chosen


def summary(graph: Graph) -> str:
    """One line: how many values (not views) are stored in each activation layout, how many convs store their
    weight in each layout, and, when there are spikes, how many of the buffers holding them (views share one) are
    bit-packed."""
    counts = Counter(n.attr("weight_layout", CONV_LAYOUT) for n in graph.nodes if n.op == "conv2d")
    weights = ", ".join(f"{count} {layout}" for layout, count in sorted(counts.items())) or "no convs"
    stored = Counter(graph.layout(n.name) for n in graph.nodes if OPS[n.op].calls_kernel)
    activations = ", ".join(f"{count} {layout}" for layout, count in sorted(stored.items()))
    line = f"layout: activations {activations}; conv weights: {weights}"
    spikes = Counter(n.type.dtype for n in graph.nodes if n.type.dtype in SPIKE_DTYPES and not OPS[n.op].view)
    if spikes:
        line += f"; spike buffers: {spikes['bits']} bit-packed, {spikes['spike']} one byte per spike"
    return line


def run(graph: Graph, options: PassOptions) -> Graph:
    require_types(graph, NAME)
    chosen: dict[str, set[str]] = {}  # weight -> the layouts its convs pick
    for node in graph.nodes:
        if node.op == "conv2d":
            operand = graph.node(node.inputs[0]).type
            layout = weight_layout(node, operand.shape, operand.dtype)
            chosen.setdefault(node.attr("weight").name, set()).add(layout)
    # weights.bin stores a weight once: convs sharing one that would pick different layouts keep OIHW
    agreed = {name: layouts.pop() if len(layouts) == 1 else CONV_LAYOUT for name, layouts in chosen.items()}
    nodes = []
    for node in graph.nodes:
        if node.op == "conv2d":
            layout = agreed[node.attr("weight").name]
            node = node.with_attrs(weight_layout=None if layout == CONV_LAYOUT else layout)
        elif node.op == "dense":
            node = node.with_attrs(weight_layout="IO" if accumulates(graph, node) else None)
        nodes.append(node)
    bits = bit_packed(graph)  # reads only operand types and the schedule, which the loop above leaves alone
    blocked = blocked_activations(graph.with_nodes(nodes))  # reads the weight layouts chosen above
    for k, node in enumerate(nodes):
        node = node.with_attrs(layout=blocked.get(node.name))
        if node.type.dtype in SPIKE_DTYPES:
            node = replace(node, type=TensorType(node.type.shape, "bits" if node.name in bits else "spike"))
        nodes[k] = node
    return graph.with_nodes(nodes)
