"""Lowering of a planned graph to kernel calls, and the C source of one timestep (model.c).

`lower(graph)` picks one kernel per node (identical signatures share one kernel) and binds each kernel parameter to
an arena offset. `emit_model_c` writes `masic_model` and `masic_model_block`, the straight sequence of those calls:
the whole step is readable top to bottom in the generated file, one comment per IR node.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from masic.codegen.kernels import (
    BITS,
    FLOAT,
    HALF,
    INT8,
    SPIKE,
    STORAGE,
    AccumulateDenseKernel,
    AdaptiveAvgPool2dKernel,
    Conv2dKernel,
    DenseKernel,
    ElementwiseAddKernel,
    ElementwiseKernel,
    Kernel,
    NeuronKernel,
    Pool2dKernel,
    RowsKernel,
)
from masic.codegen.kernels.args import WeightArgs
from masic.codegen.weights import Segment, WeightsFile
from masic.early_exit import ExitRule
from masic.errors import MasicError
from masic.ir import names
from masic.ir.elementwise import FUNCTIONS
from masic.ir.graph import SPIKE_DTYPES, Graph, Node, ParamRef
from masic.ir.names import BufferId
from masic.ir.neurons import FAMILIES
from masic.ir.ops import OPS, state_names, state_type
from masic.ir.shapes import CONV_LAYOUT, activation_block, matrix_vector, row_padding
from masic.ir.text import format_node
from masic.ir.verify import value_bytes


@dataclass(frozen=True)
class KernelCall:
    node: Node
    symbol: str
    args: tuple[tuple[str, int], ...]  # (kernel parameter, arena offset)
    position: int = 0  # position within the block (Graph.positions)
    step: int = 0  # step of the block it computes
    note: str = ""  # the comment in model.c when it is not the node itself (a delay's state update)


def _computed(call: KernelCall, graph: Graph) -> tuple[Node, ...]:
    """The IR nodes a call computes: its node, and the neuron fused into it (`Graph.epilogue`), if any."""
    return (call.node, *filter(None, [graph.epilogue(call.node)]))


def _row_padding(node: Node) -> tuple[int, int] | None:
    """A conv's or pool's row padding when it is not `padding`'s on both sides (then None, so that equal
    kernels are one)."""
    rows = row_padding(node)
    return None if rows == (node.attr("padding")[0],) * 2 else rows


def _ref(node: Node, key: str | None) -> BufferId | None:
    """The parameter an attribute refers to, or None when it holds none."""
    value = node.attr(key) if key else None
    return names.param(value.name) if isinstance(value, ParamRef) else None


# Which value, state, parameter or scratch each kernel argument reads or writes (None: none, an argument the
# kernel does not take)
Binding = dict[str, BufferId | None]
# Each kernel description's lowering (by `OpDef.kernel`): the kernel a node needs (symbol left empty), given its
# operand, and what its arguments beyond x, y, scratch, w and b read or write.
Lowering = Callable[[Node, Node | None, Graph], tuple[Kernel, Binding]]


def _conv(node: Node, operand: Node, graph: Graph) -> tuple[Kernel, Binding]:
    if matrix_vector(node, operand.type.shape) and not node.attr("weight_layout"):
        # Its (O, I, 1, 1) weight is the dense kernel's row-major (O, I) matrix; the dense schedule vectorises along
        # the inputs, where the conv schedule would vectorise along a single output column (bench/speed: 2-3x).
        return DenseKernel("", operand.type.shape[0], node.attr("out_channels"), "bias" in dict(node.attrs)), {}
    a = dict(node.attrs)
    kernel = Conv2dKernel(
        "",
        operand.type.shape,
        a["out_channels"],
        a["kernel"],
        a["stride"],
        a["padding"],
        a["dilation"],
        a["groups"],
        "bias" in a,
        _row_padding(node),
        a.get("weight_layout", CONV_LAYOUT),
        in_block=activation_block(graph.layout(operand.name)),
        out_block=activation_block(graph.layout(node.name)),
    )
    return kernel, {}


def _dense(node: Node, operand: Node, graph: Graph) -> tuple[Kernel, Binding]:
    has_bias = node.attr("bias") is not None
    if node.attr("weight_layout") == "IO":  # of spikes, unbatched (the layout pass)
        packed = operand.type.dtype == "bits"
        kernel = AccumulateDenseKernel("", node.attr("in_features"), node.attr("out_features"), has_bias, packed=packed)
        return kernel, {}
    return DenseKernel("", node.attr("in_features"), node.attr("out_features"), has_bias), {}


def _pool(node: Node, operand: Node, graph: Graph) -> tuple[Kernel, Binding]:
    a = dict(node.attrs)
    shape, in_block = operand.type.shape, activation_block(graph.layout(operand.name))
    kind = OPS[node.op].pooling
    kernel = Pool2dKernel(
        "", kind, shape, a["kernel"], a["stride"], a["padding"], _row_padding(node), in_block=in_block
    )
    return kernel, {}


def _adaptive_pool(node: Node, operand: Node, graph: Graph) -> tuple[Kernel, Binding]:
    (_, h, w), (oh, ow) = operand.type.shape, node.attr("output")
    if h % oh == 0 and w % ow == 0:  # even bins: plain average pooling over (h/oh, w/ow) windows
        window = (h // oh, w // ow)
        return Pool2dKernel("", "avg", operand.type.shape, window, window), {}
    return AdaptiveAvgPool2dKernel("", operand.type.shape, (oh, ow)), {}


def _crop(node: Node, operand: Node, graph: Graph) -> tuple[Kernel, Binding]:
    return RowsKernel("", (operand.type.shape,), (node.attr("rows"),)), {"x0": names.value(node.inputs[0])}


def _concat_rows(node: Node, operand: Node, graph: Graph) -> tuple[Kernel, Binding]:
    """A concat of rows (of row patches: axis 1); one of axis 0 is a copy per operand (see `lower`)."""
    shapes = tuple(graph.node(part).type.shape for part in node.inputs)
    kernel = RowsKernel("", shapes, tuple((0, h) for _, h, _ in shapes))
    return kernel, {f"x{k}": names.value(part) for k, part in enumerate(node.inputs)}


def _elementwise(node: Node, operand: Node | None, graph: Graph) -> tuple[Kernel, Binding]:
    definition = OPS[node.op]
    if definition.function == "add":
        a, b = map(names.value, node.inputs)
        return ElementwiseAddKernel("", node.type.numel), {"a": a, "b": b}
    fn, key = definition.function, definition.function_param
    value = node.attr(key) if key else None
    kernel = ElementwiseKernel("", fn, node.type.numel, None if isinstance(value, ParamRef) else value)
    operands = dict(zip(FUNCTIONS[fn].operands, map(names.value, node.inputs), strict=True))
    return kernel, operands | {"p": _ref(node, key)}


def _copy_state(node: Node, operand: Node | None, graph: Graph) -> tuple[Kernel, Binding]:
    """A delay outputs its state; the state is updated after the source (see `lower`)."""
    (last,) = state_names(node)
    return ElementwiseKernel("", "copy", node.type.numel), {"x": last}


def _neuron(node: Node, operand: Node, graph: Graph) -> tuple[Kernel, Binding]:
    return _neuron_kernel_for(node)


LOWERINGS: Mapping[str, Lowering] = MappingProxyType(
    {
        "conv": _conv,
        "dense": _dense,
        "pool": _pool,
        "adaptive_pool": _adaptive_pool,
        "crop": _crop,
        "concat": _concat_rows,
        "elementwise": _elementwise,
        "copy_state": _copy_state,
        "neuron": _neuron,
    }
)


def _kernel_for(node: Node, graph: Graph) -> tuple[Kernel, Binding]:
    """The kernel a node needs (symbol left empty) and which value each kernel parameter reads or writes."""
    operand = graph.node(node.inputs[0]) if node.inputs else None
    binding: Binding = {"x": names.value(node.inputs[0]) if node.inputs else None, "y": names.value(node.name)}
    binding |= {"scratch": names.scratch(node.name), "w": _ref(node, "weight"), "b": _ref(node, "bias")}
    definition = OPS[node.op]
    lowering = LOWERINGS.get(definition.kernel)
    if lowering is None:
        raise NotImplementedError(f"no kernel for op {node.op!r} ({definition.doc})")
    kernel, arguments = lowering(node, operand, graph)
    binding |= arguments
    if _ref(node, "weight") is not None:
        kernel, binding = _with_stored_weight(node, graph, kernel, binding)
    if epilogue := graph.epilogue(node):  # the fused neuron's arguments replace y
        neuron, neuron_binding = _neuron_kernel_for(epilogue)
        kernel = dataclasses.replace(kernel, neuron=neuron)
        del binding["y"]
        binding |= neuron_binding
    return kernel, binding


def _with_stored_weight(node: Node, graph: Graph, kernel: Kernel, binding: Binding) -> tuple[Kernel, Binding]:
    """The kernel taking the node's weight in its stored type (`masic.ir.weight_formats`), and an int8 weight's
    scale; a kernel that cannot read a compressed weight refuses it rather than reading its bytes as float32."""
    dtype = graph.param(node.attr("weight").name).type.dtype
    if dtype == "f32":
        return kernel, binding
    if not isinstance(kernel, WeightArgs):
        raise LoweringError(f"{node.describe()}: its kernel cannot read {dtype} weights; compile its weight as f32")
    return dataclasses.replace(kernel, weight_dtype=STORAGE[dtype]), binding | {"scale": _ref(node, "weight_scale")}


def _neuron_kernel_for(node: Node) -> tuple[NeuronKernel, Binding]:
    """A neuron node's kernel and which value each of its parameters other than x reads or writes."""
    family = FAMILIES[node.op]
    values = {name: node.attr(name) for name in family.params}
    params = tuple((k, None if isinstance(v, ParamRef) else float(v)) for k, v in values.items())
    modes = tuple((name, node.attr(name)) for name in family.mode_names)
    packed = node.type.dtype == "bits"  # the layout pass's choice
    kernel = NeuronKernel("", node.op, node.type.numel, params, node.attr("probe", ""), packed=packed, modes=modes)
    binding: Binding = {state.field: state for state in state_names(node)}
    binding |= {family.output: names.value(node.name)}
    binding |= {k: names.param(v.name) for k, v in values.items() if isinstance(v, ParamRef)}
    return kernel, binding


def _batched_kernel_for(node: Node, graph: Graph) -> tuple[Kernel, Binding]:
    """The kernel of a batched node (`Graph.batched`): one call computes every step of the block, each step's input
    and output copy bound to its own argument."""
    kernel, binding = _kernel_for(node, graph)
    kernel = dataclasses.replace(kernel, steps=graph.schedule.block)
    for arg in ("x", "y"):
        value = binding.pop(arg)
        binding |= {name: graph.copy(value, t) for t, name in enumerate(kernel.step_names(arg))}
    return kernel, binding


def lower(graph: Graph) -> tuple[tuple[Kernel, ...], tuple[KernelCall, ...]]:
    """One kernel per distinct signature, and the call sequence of one block. Right after a delay's source is
    computed (or, for a view or the input, at its position), a copy writes it into the delay's state."""
    plan = graph.plan
    assert plan is not None, "lower needs a planned graph"
    kernels: dict[Kernel, Kernel] = {}
    calls = []

    stored_bytes = value_bytes(graph)
    spikes = {names.value(n.name) for n in graph.nodes if n.type.dtype in SPIKE_DTYPES}
    spikes |= {s for n in graph.nodes if state_type(n).dtype == "spike" for s in state_names(n)}

    def call(
        node: Node, kernel: Kernel, binding: Binding, position: int, step: int, note: str = "", y_shift: int = 0
    ) -> None:
        # a batched call binds the steps' copies of a value (value@t)
        held = {p: v.at(None) for p, v in binding.items() if v is not None}
        kernel = kernel.with_spikes(tuple(p for p in kernel.arg_names() if held.get(p) in spikes))
        # values and scratch exist once per step of a block, state and weights once: a call binds its step's copy
        binding = {k: graph.copy(v, step) if v and v.per_step and v.step is None else v for k, v in binding.items()}
        if kernel not in kernels:
            kernels[kernel] = dataclasses.replace(kernel, symbol=f"masic_{node.op}_{len(kernels)}")
        kernel = kernels[kernel]
        buffers = {p: plan.locate(binding[p]) for p in kernel.arg_names()}
        # The shape rules (masic.ir.ops) make every kernel read and write exactly its values' elements; should one
        # ever disagree, the kernel would read past a weight (weights.bin holds each parameter's bytes exactly) or
        # another value, so no artifact is written.
        for arg in (a for a in kernel.arg_names() if a != "scratch"):
            reach = kernel.arg_bytes(arg) + (y_shift if arg == "y" else 0)
            if reach > stored_bytes[binding[arg]]:
                raise AssertionError(
                    f"{node.describe()}: kernel {kernel.symbol} reaches {reach} bytes into {binding[arg]}, which "
                    f"holds {stored_bytes[binding[arg]]}; please report this bug"
                )
        args = tuple((p, buf.offset + (y_shift if p == "y" else 0)) for p, buf in buffers.items())
        calls.append(KernelCall(node, kernel.symbol, args, position, step, note))

    for position, (node, step) in enumerate(graph.positions()):
        definition = OPS[node.op]
        if definition.kernel == "concat" and node.attr("axis", 0) == 0:  # each part copied into its place
            shift = 0
            for part in node.inputs:
                part_type = graph.node(part).type
                copy = ElementwiseKernel("", "copy", part_type.numel)
                first = shift // part_type.np_dtype.itemsize
                note = f"%{node.name}[{first}:{first + part_type.numel}] <- %{part}"
                call(node, copy, {"x": names.value(part), "y": names.value(node.name)}, position, step, note, shift)
                shift += part_type.nbytes
        elif graph.batched(node):
            if step == 0:  # its other positions run nothing
                call(node, *_batched_kernel_for(node, graph), position, step)
        elif definition.calls_kernel and not node.attr("fused"):  # a fused neuron runs in its operand's call
            call(node, *_kernel_for(node, graph), position, step)
        for delay in graph.delays_of(node.name):
            copy = ElementwiseKernel("", "copy", delay.type.numel)
            (state,) = state_names(delay)
            binding = {"x": names.value(node.name), "y": state}
            call(delay, copy, binding, position, step, f"delay state %{state} <- %{node.name}")
    return tuple(kernels.values()), tuple(calls)


def _c_offsets(graph: Graph, value: str) -> str:
    """The arena offsets of a value's copies, one per step of a block, as a C initializer list."""
    return ", ".join(f"{graph.plan.buffer_of(graph.value_copy(value, t)).offset}u" for t in range(graph.schedule.block))


def _step_note(call: KernelCall, graph: Graph) -> str:
    if graph.batched(call.node):
        return " (every step of the block)"
    return f" (step {call.step} of the block)" if graph.schedule.block > 1 else ""


class LoweringError(MasicError, ValueError):
    """The plan holds a number the loader's C types cannot hold (a C initializer would silently wrap it), or a layer
    whose kernel cannot read its compressed weight."""


def _c_uint(value: int, bits: int, what: str) -> int:
    """`value` if it fits in a C unsigned integer of `bits` bits."""
    if not 0 <= value < 1 << bits:
        raise LoweringError(f"{what} is {value}, outside the loader's {bits}-bit unsigned range")
    return value


def _c_int(value: int, what: str, low: int = 0, high: int = 2**31 - 1) -> int:
    """`value` if it lies in [low, high], at most int32_t's range."""
    if not low <= value <= high:
        raise LoweringError(f"{what} is {value}, outside {low}..{high}, the loader's range")
    return value


def _c_table(ctype: str, name: str, rows: list[tuple[tuple[int | str, ...], str]], width: int) -> str:
    """A static C array of `width`-field structs, one row (values, comment) each: ints as unsigned literals, strings
    (enum names) as written."""

    def literal(v: int | str) -> str:
        return v if isinstance(v, str) else f"{_c_uint(v, 64, name)}u"

    text = "".join(f"  {{{', '.join(map(literal, values))}}}, /* {comment} */\n" for values, comment in rows)
    text = text or f"  {{{', '.join(['0u'] * width)}}},\n"  # C forbids an empty initializer list
    return f"static const {ctype} {name}[] = {{\n{text}}};\n"


def _c_segments(name: str, segments: tuple[Segment, ...]) -> str:
    rows = [((s.file_offset, s.arena_offset, s.nbytes, s.crc32c), s.name) for s in segments]
    return _c_table("masic_segment_t", name, rows, 4)


# enum masic_load_kind (runtime/masic_model.h)
LOAD_WEIGHT, LOAD_STATE, LOAD_STATE_FILL = "MASIC_LOAD_WEIGHT", "MASIC_LOAD_STATE", "MASIC_LOAD_STATE_FILL"
MAX_BLOCK = 65536  # MASIC_MAX_BLOCK (runtime/model_check.h)
MAX_TIMESTEPS = 1_000_000  # MASIC_MAX_TIMESTEPS (runtime/args.h): the most timesteps one run of the loader takes


def _load_kind(segment: Segment, state: bool) -> tuple[str, int]:
    """masic_load_t's (kind, fill_bits): a weight, a state read from the file, or a state filled with the float32
    whose bits are fill_bits."""
    if segment.fill is None:
        return (LOAD_STATE if state else LOAD_WEIGHT), 0
    return LOAD_STATE_FILL, int(np.float32(segment.fill).view(np.uint32))


# A float16 weight's C type is its bits: the kernels convert it, model.c only passes the pointer on
C_TYPES = {FLOAT: "float", SPIKE: "uint8_t", BITS: "uint32_t", HALF: "uint16_t", INT8: "int8_t"}


def _c_sites(sites: list[tuple[str, str]]) -> str:
    """The kernel call sites of a block (IR node, kernel symbol) as masic_site_t rows, for --profile."""
    rows = "".join(f"  {{{json.dumps(node)}, {json.dumps(kernel)}}},\n" for node, kernel in sites)
    return f"static const masic_site_t sites[] = {{\n{rows or '  {0, 0},' + chr(10)}}};\n"


def _c_type(kernel: Kernel, arg: str) -> str:
    """The C element type of a kernel argument: spikes are bytes, or words of 32 when bit-packed; weights in their
    stored type."""
    return C_TYPES[kernel.arg_dtype(arg)]


def _c_shape(shape: tuple[int, ...]) -> str:
    return "{" + ", ".join(map(str, shape)) + "}"


def emit_model_c(
    graph: Graph, kernels: tuple[Kernel, ...], calls: tuple[KernelCall, ...], weights: WeightsFile, exit_rule: ExitRule
) -> str:
    plan = graph.plan
    (input_node,) = graph.inputs
    output = graph.node(graph.output)
    prototypes = "".join(
        f"int32_t {k.symbol}({', '.join(f'{_c_type(k, p)} *{p}' for p in k.arg_names())});\n" for k in kernels
    )
    by_symbol = {k.symbol: k for k in kernels}
    block = graph.schedule.block
    by_position: dict[int, list[KernelCall]] = {}
    first_reader: dict[BufferId, int] = {}  # weight or neuron state -> position of the first call reading it
    for call in calls:
        by_position.setdefault(call.position, []).append(call)
        for node in _computed(call, graph):
            for name in (*(names.param(ref.name) for _, ref in node.param_refs()), *state_names(node)):
                first_reader.setdefault(name, call.position)
    # The loads of a block: streamed weights and transient states' initial values, as (segment, buffer, is state),
    # issued in the order their buffers become free (the loading thread serves them in turn), then of first use.
    sources = [(s, s.buffer, False) for s in weights.streamed] + [(s, s.buffer, True) for s in weights.state_loads]
    start = {buffer: plan.buffer(buffer).start for _, buffer, _ in sources}
    loads = sorted(sources, key=lambda load: (start[load[1]], first_reader[load[1]]))
    load_table = _c_table(
        "masic_load_t",
        "loads",
        [
            (
                (
                    s.file_offset,
                    s.arena_offset,
                    s.nbytes,
                    _c_uint(start[buffer], 32, "a load's start"),
                    *_load_kind(s, state),
                    s.crc32c,
                ),
                s.name,
            )
            for s, buffer, state in loads
        ],
        7,
    )
    waits: dict[int, list[int]] = {}  # position -> loads its calls need first
    for k, (_, buffer, _) in enumerate(loads):
        waits.setdefault(first_reader[buffer], []).append(k)
    body = ""
    sites = []  # (node, kernel) of each call, in order: masic_site_done's index
    n_positions = len(graph.nodes) * block
    for position in range(n_positions):
        for k in waits.get(position, []):
            body += f"  if ((rc = masic_wait_load(stream, {k}u)) != 0) return rc; /* {loads[k][0].name} */\n"
        for call in by_position.get(position, []):
            kernel = by_symbol[call.symbol]
            args = ", ".join(f"({_c_type(kernel, p)} *)(arena + {offset}u)" for p, offset in call.args)
            guard = f"{call.step} < nsteps" if call.step else ""
            text = call.note or "\n   * then ".join(map(format_node, _computed(call, graph)))
            body += "  start = masic_site_start();\n"
            body += f"  /* {text.replace('*/', '* /')}{_step_note(call, graph)} */\n"
            body += f"  if ({guard + ' && ' if guard else ''}(rc = {call.symbol}({args})) != 0) return rc;\n"
            body += f"  {f'if ({guard}) ' if guard else ''}masic_site_done({len(sites)}u, start);\n"
            sites.append((call.node.name, call.symbol))
        if loads:
            body += f"  masic_reached(stream, {position + 1}u);\n"
    input_offsets = _c_offsets(graph, input_node.name)
    output_offsets = _c_offsets(graph, output.name)
    return f"""/* Generated by masic for graph @{graph.name}: one block of {block} timestep(s) as kernel calls. */
#include "masic_model.h"

{prototypes}
{_c_segments("resident", weights.resident)}
{_c_segments("state_init", weights.state_init)}
{load_table}{_c_sites(sites)}static const uint64_t input_offsets[] = {{{input_offsets}}};
static const uint64_t output_offsets[] = {{{output_offsets}}};
const masic_model_t masic_model = {{
  .name = "{graph.name}",
  .arena_bytes = {plan.arena_bytes}u,
  .arena_alignment = {plan.alignment}u,
  .weights_bytes = {weights.nbytes}u,
  .input_ndim = {len(input_node.type.shape)},
  .input_shape = {_c_shape(input_node.type.shape)},
  .output_ndim = {len(output.type.shape)},
  .output_shape = {_c_shape(output.type.shape)},
  .timesteps = {_c_int(graph.timesteps, "the number of timesteps", 1, MAX_TIMESTEPS)},
  .exit_rule = {exit_rule.c_initializer()},
  .n_resident = {len(weights.resident)}u,
  .resident = resident,
  .n_state_init = {len(weights.state_init)}u,
  .state_init = state_init,
  .block = {_c_int(block, "the block of timesteps", 1, MAX_BLOCK)},
  .input_offsets = input_offsets,
  .output_offsets = output_offsets,
  .n_loads = {len(loads)}u,
  .loads = loads,
  .n_positions = {_c_uint(n_positions, 32, "positions in a block")}u,
  .n_sites = {_c_uint(len(sites), 32, "kernel calls in a block")}u,
  .sites = sites,
}};

int masic_model_block(uint8_t *arena, int32_t nsteps, masic_stream_t *stream) {{
  int32_t rc;
  double start;
  (void)nsteps;
  (void)stream;
{body}  return 0;
}}
"""
