"""Verifier: the structural rules every graph obeys, checked after every pass.

Errors are `VerifyError`s that show the offending node's line of text, underlined, and where it came from in the
source model. `verify_plan` is the independent checker of a memory plan: it recomputes nothing from the planner,
it only checks that what the plan claims is possible (alignment, bounds, no two live buffers overlapping, every
value placed in a buffer large enough).
"""

from __future__ import annotations

from masic.errors import MasicError
from masic.ir import names
from masic.ir.graph import (
    ACTIVATION_LAYOUT,
    BUFFER_KINDS,
    DTYPES,
    SPIKE_DTYPES,
    Buffer,
    Graph,
    Node,
    ParamRef,
    TensorType,
    transient_states,
)
from masic.ir.names import BufferId
from masic.ir.ops import OPS, VARIADIC, check_params, neuron_op, state_names, state_type
from masic.ir.shapes import CONV_LAYOUT, ShapeError, activation_block, weight_block
from masic.ir.text import format_node
from masic.limits import MAX_TIMESTEPS


class VerifyError(MasicError, ValueError):
    """A broken rule, with the node it concerns (if any) shown underlined."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        self.message, self.node = message, node
        text = message
        if node is not None:
            line = format_node(node)
            head = line.split(" : ")[0]
            text += f"\n  {line}\n  {'^' * len(head)}"
            if node.loc:
                text += f"\n  from {node.loc}"
        super().__init__(text)


def verify(graph: Graph) -> None:
    """Raises VerifyError on the first broken rule."""
    defined: dict[str, Node] = {}
    params = {p.name: p.type for p in graph.params}
    if not graph.nodes:
        raise VerifyError(f"graph @{graph.name} has no nodes")
    if not 1 <= graph.timesteps <= MAX_TIMESTEPS:
        raise VerifyError(
            f"graph @{graph.name} has timesteps={graph.timesteps}; it must be from 1 to {MAX_TIMESTEPS} (the loader "
            "counts timesteps in 32-bit integers)"
        )
    for node in graph.nodes:
        _verify_node(node, defined, params, graph)
        defined[node.name] = node
        for state in state_names(node):  # by its text, as an operand would name it
            defined[str(state)] = node
    verify_delays(graph)
    weight_layouts(graph)
    if not graph.inputs:
        raise VerifyError(f"graph @{graph.name} has no input node")
    if graph.output not in defined or graph.output in {str(s) for n in graph.nodes for s in state_names(n)}:
        raise VerifyError(f"graph output %{graph.output} is not a node of the graph")
    output_type = graph.node(graph.output).type
    if output_type is not None and output_type.dtype != "f32":
        raise VerifyError(
            f"graph output %{graph.output} is {output_type}: the loader reads float32", graph.node(graph.output)
        )
    _verify_ports(graph)
    if graph.plan is not None:
        verify_plan(graph)


def _verify_ports(graph: Graph) -> None:
    """Ports (`masic.ir.graph.Port`) pack the one input, and the output: their sizes add up to its size."""
    for kind, ports, values in (("input", graph.input_ports, graph.inputs), ("output", graph.output_ports, ())):
        if not ports:
            continue
        names = [p.name for p in ports]
        if len(set(names)) != len(names) or len(ports) < 2:
            raise VerifyError(f"graph @{graph.name}: {kind} ports {names} must be two or more, each named once")
        if kind == "input" and len(values) != 1:
            raise VerifyError(f"graph @{graph.name} has input ports and {len(values)} input nodes, not one")
        node = values[0] if values else graph.node(graph.output)
        total = sum(p.numel for p in ports)
        if node.type is not None and node.type.numel != total:
            raise VerifyError(f"{kind} ports hold {total} elements, {kind} %{node.name} {node.type}", node)


def _verify_node(node: Node, defined: dict[str, Node], params: dict[str, TensorType], graph: Graph) -> None:
    if node.name in defined:
        raise VerifyError(f"value %{node.name} is defined twice", node)
    if node.type is not None and node.type.dtype not in DTYPES:
        raise VerifyError(f"unknown element type {node.type.dtype!r}", node)
    definition = OPS.get(node.op)
    if definition is None:
        raise VerifyError(f"unknown op {node.op!r}", node)
    if definition.graph_input and node.type is not None and node.type.dtype != "f32":
        raise VerifyError(f"input is {node.type}: the loader writes float32", node)
    variadic = definition.arity == VARIADIC
    if (variadic and not node.inputs) or (not variadic and len(node.inputs) != definition.arity):
        wanted = "one or more" if variadic else definition.arity
        raise VerifyError(f"{node.op} takes {wanted} operand(s), got {len(node.inputs)}", node)
    for value in node.inputs:
        if value not in defined:
            raise VerifyError(f"operand %{value} is not defined before its use", node)
        if value != defined[value].name:
            raise VerifyError(f"operand %{value} is neuron state, which only its own neuron reads", node)
    keys = [k for k, _ in node.attrs]
    missing = [k for k in definition.required if k not in keys]
    unknown = [k for k in keys if k not in definition.required + definition.optional]
    if missing or unknown or len(set(keys)) != len(keys):
        problem = f"missing {missing}" if missing else f"unexpected {unknown}" if unknown else "repeated keys"
        raise VerifyError(f"{node.op} attributes: {problem}", node)
    for key, ref in node.param_refs():
        param = params.get(ref.name)
        if param is None:
            raise VerifyError(f"attribute {key} refers to missing parameter @{ref.name}", node)
        array = graph.weights.get(ref.name)
        if array is not None and tuple(array.shape) != param.shape:
            raise VerifyError(f"parameter @{ref.name} holds {array.shape}, declared {param}", node)
    if neuron := neuron_op(node.op):
        modes = dict(definition.family.modes) if definition.family else {}
        for key, value in node.attrs:
            if key in modes:
                if value not in (allowed := modes[key]):
                    raise VerifyError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}", node)
            elif key == "fused":
                if value is not True:
                    raise VerifyError(f"fused must be true when given, got {value!r}", node)
                if problem := fusion_problem(graph, node):
                    raise VerifyError(f"cannot be fused: {problem}", node)
            elif key == "probe":
                if value not in [s for s, _ in neuron.states]:
                    raise VerifyError(f"probe must name a state of {node.op}, got {value!r}", node)
            elif key not in ("source", "layout"):
                _verify_element_param(node, key, value)
    if problem := definition.check_attrs(node):
        raise VerifyError(problem, node)
    for key in definition.element_params:
        _verify_element_param(node, key, node.attr(key))
    operand_types = tuple(defined[v].type for v in node.inputs)
    if node.type is not None and all(t is not None for t in operand_types):
        try:
            inferred = definition.infer(node, operand_types)
        except ShapeError as err:
            raise VerifyError(str(err), node) from None
        if inferred != node.type:
            raise VerifyError(f"declared type {node.type} but operands give {inferred}", node)
        try:
            check_params(node, operand_types, node.type, params)
        except ShapeError as err:
            raise VerifyError(str(err), node) from None
        if node.attr("weight_layout") == "IO" and operand_types[0].dtype not in SPIKE_DTYPES:
            raise VerifyError('weight_layout "IO" is for the accumulate-only kernel of a spike operand', node)
    _verify_bits(node, operand_types, graph)
    if problem := layout_problem(graph, node):
        raise VerifyError(f"layout: {problem}", node)


def _verify_bits(node: Node, operand_types: tuple[TensorType | None, ...], graph: Graph) -> None:
    """Bit-packed spikes are written only by spiking neurons (views share their buffer) and read only by views and
    the accumulate-only dense kernel of one step per call: no other kernel reads or writes words of bits."""
    view = OPS[node.op].view
    spiking = (definition := neuron_op(node.op)) is not None and definition.spiking
    if node.type is not None and node.type.dtype == "bits" and not (view or spiking):
        raise VerifyError(f"{node.op} cannot output bits: only spiking neurons (and views of them) do", node)
    if any(t is not None and t.dtype == "bits" for t in operand_types) and not view:
        accumulates = node.attr("weight_layout") == "IO" and not graph.batched(node)
        if not accumulates:
            raise VerifyError(f"{node.op} cannot read bits: only the accumulating dense layer of one step does", node)


def fusion_problem(graph: Graph, neuron: Node) -> str | None:
    """Why `neuron` cannot run as the epilogue of its operand's kernel (`Graph.epilogue`), or None if it can: the
    operand must be an op whose kernel can run a neuron update as its epilogue (`OpDef.fusable`: a conv2d, or a
    dense layer) running one step per call, whose value nothing else needs stored
    (no other reader, not the graph output, not a delay's source), and the neuron no delay's source (a delay copies
    its source at the source's own position) and its spikes not bit-packed (the layout pass's choice)."""
    if OPS[neuron.op].family is None:
        return f"{neuron.op} is not a neuron"
    producer = graph.node(neuron.inputs[0])
    if not OPS[producer.op].fusable:
        fusing = ", ".join(op.name for op in OPS.values() if op.fusable)
        return f"its operand %{producer.name} is a {producer.op}, not one of {fusing}"
    if graph.batched(producer):
        return f"its operand %{producer.name} computes a block's steps in one call"
    if [user.name for user in graph.users(producer.name)] != [neuron.name]:
        return f"its operand %{producer.name} has other readers"
    if producer.name == graph.output or graph.delays_of(producer.name):
        return f"its operand %{producer.name} is the graph output or a delay source"
    if graph.delays_of(neuron.name):
        return "it is a delay source"
    if neuron.type is not None and neuron.type.dtype == "bits":  # packing spans 32 outputs; epilogues write one
        return "its spikes are bit-packed"
    return None


def layout_problem(graph: Graph, node: Node) -> str | None:
    """Why `node` cannot store its output in its `layout` or read its operands as they are stored, or None.

    A value stored "NCHW{c}c" (blocks of c channels innermost: `activation_block`) has the shape (C, H, W) with c
    dividing C, and is written by a conv2d whose weight is blocked alike ("OIHW{c}o", `OpDef.blocked_weight`), or by
    an element-wise op of one operand (`OpDef.layout_carrier`) whose operand is stored so (a neuron fused into the
    conv's kernel too). It is neither the graph output (the loader reads NCHW) nor a delay's source, and only such
    carriers and the convs and pools that read any layout (`OpDef.reads_blocked`) read it."""
    definition = OPS[node.op]
    if (layout := node.attr("layout")) is not None:
        try:
            block = activation_block(layout)
        except ShapeError as err:
            return str(err)
        if block == 1:
            return f"{ACTIVATION_LAYOUT} is the default: leave the attribute out"
        if node.type is not None and (len(node.type.shape) != 3 or node.type.shape[0] % block):
            return f"{layout} needs (C, H, W) with C a multiple of {block}, not {node.type}"
        if definition.blocked_weight:
            if weight_block(node.attr("weight_layout", CONV_LAYOUT)) != block:
                return f"a conv stores {layout} only with its weight in OIHW{block}o"
        elif definition.layout_carrier:
            if graph.layout(node.inputs[0]) != layout:
                return f"its operand %{node.inputs[0]} is stored {graph.layout(node.inputs[0])}, not {layout}"
        else:
            return f"{node.op} stores {ACTIVATION_LAYOUT} only"
        if node.name == graph.output or graph.delays_of(node.name):
            return "the graph output and delay sources are stored NCHW"
    for value in node.inputs:
        stored = graph.layout(value)
        if stored not in (ACTIVATION_LAYOUT, layout) and not definition.reads_blocked:
            return f"{node.op} reads %{value}, stored {stored}, as {layout or ACTIVATION_LAYOUT}"
    return None


def weight_layouts(graph: Graph) -> dict[str, str | None]:
    """The layout weights.bin stores each parameter in (`masic.codegen.weights.stored_weight`): the `weight_layout` of
    the nodes that read it as their weight (by default OIHW for an op whose weight may be blocked, a conv's), the
    `layout` of an element-wise op reading it as a per-element parameter, None for every other parameter. weights.bin
    stores a parameter once, so all its readers (the row patches of one conv share their weight) must agree."""
    layouts: dict[str, str | None] = {}
    for node in graph.nodes:
        definition = OPS[node.op]
        default = CONV_LAYOUT if definition.blocked_weight else None
        for key, ref in node.param_refs():
            if key == "weight":
                layout = node.attr("weight_layout", default)
            else:
                layout = node.attr("layout") if definition.layout_carrier else None
            if layouts.setdefault(ref.name, layout) != layout:
                raise VerifyError(f"weight @{ref.name} is read as {layouts[ref.name]} and as {layout}", node)
    return layouts


def _verify_element_param(node: Node, key: str, value: object) -> None:
    """A float, or a parameter (with one value per element of the node's output: `check_params`)."""
    kind = "neuron" if neuron_op(node.op) else node.op
    if not isinstance(value, float | ParamRef):
        raise VerifyError(f"{kind} parameter {key} must be a float or a parameter, got {value!r}", node)


def verify_delays(graph: Graph) -> None:
    """A delay's source is a value computed later in the step (its state is written after the source runs), of
    the delay's type."""
    position = {node.name: p for p, node in enumerate(graph.nodes)}
    for p, node in enumerate(graph.nodes):
        if not OPS[node.op].delay:
            continue
        source = node.attr("source")
        if source not in position:
            raise VerifyError(f"delay source %{source} is not a node of the graph", node)
        if position[source] <= p:
            raise VerifyError(f"delay source %{source} must come after the delay in the order", node)
        source_type = graph.nodes[position[source]].type
        if None not in (node.type, source_type) and source_type != node.type:  # untyped: infer-shapes' business
            raise VerifyError(f"delay source %{source} is {source_type}, not {node.type}", node)


def verify_plan(graph: Graph) -> None:
    """Checks a memory plan independently of the planner that made it."""
    plan = graph.plan
    assert plan is not None
    texts = [str(b.name) for b in plan.buffers]  # the plan's text and the manifest name buffers by their text
    if len(set(texts)) != len(texts):
        raise VerifyError("plan: a buffer name is used twice")
    buffers = {b.name: b for b in plan.buffers}
    for buf in plan.buffers:
        where = f"plan: buffer {buf.name}"
        if buf.kind not in BUFFER_KINDS:
            raise VerifyError(f"{where} has unknown kind {buf.kind!r}")
        if buf.offset < 0 or buf.offset % plan.alignment:
            raise VerifyError(f"{where} offset {buf.offset} is not a multiple of the alignment {plan.alignment}")
        if buf.offset + buf.size > plan.arena_bytes:
            raise VerifyError(f"{where} ends at {buf.offset + buf.size}, past the arena ({plan.arena_bytes} bytes)")
        if buf.start >= buf.end:
            raise VerifyError(f"{where} has an empty lifetime [{buf.start},{buf.end})")
    ordered = sorted(plan.buffers, key=lambda b: b.offset)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.offset >= a.offset + a.size:
                break
            if a.overlaps_in_time(b) and a.size and b.size:
                raise VerifyError(f"plan: buffers {a.name} and {b.name} are live together and overlap in memory")
    if plan.lower_bound > plan.arena_bytes:
        raise VerifyError(f"plan: lower bound {plan.lower_bound} exceeds the arena {plan.arena_bytes}")
    placed = dict(plan.values)
    for value, size in value_bytes(graph).items():
        if value not in placed:
            raise VerifyError(f"plan: value %{value} has no buffer")
        buf = buffers.get(placed[value])
        if buf is None or buf.size < size:
            raise VerifyError(f"plan: value %{value} ({size} bytes) does not fit its buffer {placed[value]}")
    _check_lifetimes(graph, buffers, placed)


def value_bytes(graph: Graph) -> dict[BufferId, int]:
    """The bytes of everything a plan places, by its identity: each step's copy of every stored value (not those only
    a fused kernel's registers hold), every state, every parameter."""
    steps = range(graph.schedule.block)
    stored = [n for n in graph.nodes if n.type is not None and not graph.elided(n.name)]
    sizes = {graph.value_copy(n.name, t): n.type.nbytes for n in stored for t in steps}
    sizes.update({s: state_type(n).nbytes for n in graph.nodes if n.type is not None for s in state_names(n)})
    sizes.update({names.param(p.name): p.type.nbytes for p in graph.params})
    return sizes


def _check_lifetimes(graph: Graph, buffers: dict[BufferId, Buffer], placed: dict[BufferId, BufferId]) -> None:
    """Every buffer is live wherever its value is written or read: at each kernel call, for its operands, output,
    weights, state and scratch; a delay's state also where its source is copied into it. Values the loader reads or
    writes outside the block (its inputs, the outputs) are live at its start or end, and state that carries over
    from one block to the next (when a run has more than one) is live over the whole block. Lifetimes are
    intervals, so a value live where it is written and where it is last read is live in between: together with
    the overlap check this proves no value is overwritten before its last reader."""
    order = graph.positions()
    n = len(order)
    carried = not transient_states(graph)

    def require(value: BufferId, p: int, node: Node, role: str) -> None:
        buf = buffers[placed.get(value, value)]  # scratch is a buffer of its own, not a value
        if not buf.start <= p < buf.end:
            raise VerifyError(
                f"plan: buffer {buf.name} of %{value} ({role}) is not live at position {p} [{buf.start},{buf.end})",
                node,
            )

    for p, (node, t) in enumerate(order):
        name = graph.value_copy(node.name, t)
        call = graph.call_position(p, node, t)
        if not graph.elided(node.name):  # a fused kernel keeps it in registers
            loaded = OPS[node.op].graph_input  # written by the loader before the block
            require(name, 0 if loaded else call, node, "input" if loaded else "output")
        for value in (v for v in node.inputs if not graph.elided(v)):
            require(graph.value_copy(value, t), call, node, "operand")
        for _, ref in node.param_refs():
            require(names.param(ref.name), call, node, "weight")
        states = [*state_names(node), *(state for delay in graph.delays_of(node.name) for state in state_names(delay))]
        for state in states:
            require(state, call, node, "state")
            if carried:
                require(state, 0, node, "state carried across blocks")
                require(state, n - 1, node, "state carried across blocks")
        scratch = graph.copy(names.scratch(node.name), t)
        if scratch in buffers:
            require(scratch, p, node, "scratch")
    for t in range(graph.schedule.block):
        require(graph.value_copy(graph.output, t), n - 1, graph.node(graph.output), "output read after the block")
