"""Lowering of a planned graph to kernel calls, and the C source of one timestep (model.c).

`lower(graph)` picks one kernel per node (identical signatures share one kernel) and binds each kernel parameter to
an arena offset. `emit_model_c` writes `masic_model` and `masic_model_block`, the straight sequence of those calls:
the whole step is readable top to bottom in the generated file, one comment per IR node.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from masic.codegen.kernels import (
    BITS,
    FLOAT,
    SPIKE,
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
from masic.codegen.weights import Segment, WeightsFile
from masic.early_exit import ExitRule
from masic.errors import MasicError
from masic.ir.elementwise import FUNCTIONS
from masic.ir.elementwise import OPS as ELEMENTWISE_OPS
from masic.ir.graph import SPIKE_DTYPES, Graph, Node, ParamRef
from masic.ir.neurons import FAMILIES
from masic.ir.ops import (
    CONV_LAYOUT,
    OPS,
    activation_block,
    matrix_vector,
    row_padding,
    state_names,
    state_type,
)
from masic.ir.text import format_node
from masic.ir.verify import value_bytes

NO_KERNEL_OPS = ("input", "flatten", "reshape")  # the loader writes the input; flatten and reshape are views


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


def _kernel_for(node: Node, graph: Graph) -> tuple[Kernel, dict[str, str]]:
    """The kernel a node needs (symbol left empty) and which value each kernel parameter reads or writes."""
    operand = graph.node(node.inputs[0]) if node.inputs else None
    binding = {"x": node.inputs[0] if node.inputs else "", "y": node.name, "scratch": f"{node.name}.scratch"}

    def ref(key: str) -> str:
        value = node.attr(key)
        return f"@{value.name}" if isinstance(value, ParamRef) else ""

    binding |= {"w": ref("weight"), "b": ref("bias")}
    if node.op == "conv2d" and matrix_vector(node, operand.type.shape) and not node.attr("weight_layout"):
        # Its (O, I, 1, 1) weight is the dense kernel's row-major (O, I) matrix; the dense schedule vectorises along
        # the inputs, where the conv schedule would vectorise along a single output column (bench/speed.py: 2-3x).
        kernel = DenseKernel("", operand.type.shape[0], node.attr("out_channels"), "bias" in dict(node.attrs))
    elif node.op == "conv2d":
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
    elif node.op == "dense" and node.attr("weight_layout") == "IO":  # of spikes, unbatched (the layout pass)
        has_bias = node.attr("bias") is not None
        packed = operand.type.dtype == "bits"
        kernel = AccumulateDenseKernel("", node.attr("in_features"), node.attr("out_features"), has_bias, packed=packed)
    elif node.op == "dense":
        kernel = DenseKernel("", node.attr("in_features"), node.attr("out_features"), node.attr("bias") is not None)
    elif node.op in ("maxpool2d", "avgpool2d", "sumpool2d"):
        kind = node.op.removesuffix("pool2d")
        a = dict(node.attrs)
        shape, in_block = operand.type.shape, activation_block(graph.layout(operand.name))
        kernel = Pool2dKernel(
            "", kind, shape, a["kernel"], a["stride"], a["padding"], _row_padding(node), in_block=in_block
        )
    elif node.op == "adaptive_avgpool2d":
        (_, h, w), (oh, ow) = operand.type.shape, node.attr("output")
        if h % oh == 0 and w % ow == 0:  # even bins: plain average pooling over (h/oh, w/ow) windows
            window = (h // oh, w // ow)
            kernel = Pool2dKernel("", "avg", operand.type.shape, window, window)
        else:
            kernel = AdaptiveAvgPool2dKernel("", operand.type.shape, (oh, ow))
    elif node.op == "crop_rows":
        kernel = RowsKernel("", (operand.type.shape,), (node.attr("rows"),))
        binding["x0"] = node.inputs[0]
    elif node.op == "concat" and node.attr("axis") == 1 and len(node.type.shape) == 3:  # the rows of patches
        shapes = tuple(graph.node(part).type.shape for part in node.inputs)
        kernel = RowsKernel("", shapes, tuple((0, h) for _, h, _ in shapes))
        binding |= {f"x{k}": part for k, part in enumerate(node.inputs)}
    elif node.op == "add":
        kernel = ElementwiseAddKernel("", node.type.numel)
        binding |= {"a": node.inputs[0], "b": node.inputs[1]}
    elif node.op in ELEMENTWISE_OPS:
        fn, key = ELEMENTWISE_OPS[node.op]
        value = node.attr(key) if key else None
        kernel = ElementwiseKernel("", fn, node.type.numel, None if isinstance(value, ParamRef) else value)
        binding |= dict(zip(FUNCTIONS[fn].operands, node.inputs, strict=True)) | {"p": ref(key) if key else ""}
    elif node.op == "delay":  # outputs its state; the state is updated after the source (see `lower`)
        kernel = ElementwiseKernel("", "copy", node.type.numel)
        binding["x"] = f"{node.name}.last"
    elif node.op in FAMILIES:
        kernel, neuron_binding = _neuron_kernel_for(node)
        binding |= neuron_binding
    else:
        raise NotImplementedError(f"no kernel for op {node.op!r} ({OPS[node.op].doc})")
    if epilogue := graph.epilogue(node):  # the fused neuron's arguments replace y
        neuron, neuron_binding = _neuron_kernel_for(epilogue)
        kernel = dataclasses.replace(kernel, neuron=neuron)
        del binding["y"]
        binding |= neuron_binding
    return kernel, binding


def _neuron_kernel_for(node: Node) -> tuple[NeuronKernel, dict[str, str]]:
    """A neuron node's kernel and which value each of its parameters other than x reads or writes."""
    family = FAMILIES[node.op]
    values = {name: node.attr(name) for name in family.params}
    params = tuple((k, None if isinstance(v, ParamRef) else float(v)) for k, v in values.items())
    modes = tuple((name, node.attr(name)) for name in family.mode_names)
    packed = node.type.dtype == "bits"  # the layout pass's choice
    kernel = NeuronKernel("", node.op, node.type.numel, params, node.attr("probe", ""), packed=packed, modes=modes)
    binding = {state: f"{node.name}.{state}" for state in family.state_names}
    binding |= {family.output: node.name}
    binding |= {k: f"@{v.name}" for k, v in values.items() if isinstance(v, ParamRef)}
    return kernel, binding


def _batched_kernel_for(node: Node, graph: Graph) -> tuple[Kernel, dict[str, str]]:
    """The kernel of a batched node (`Graph.batched`): one call computes every step of the block, each step's input
    and output copy bound to its own argument."""
    kernel, binding = _kernel_for(node, graph)
    kernel = dataclasses.replace(kernel, steps=graph.schedule.block)
    for arg in ("x", "y"):
        value = binding.pop(arg)
        binding |= {name: graph.copy_name(value, t) for t, name in enumerate(kernel.step_names(arg))}
    return kernel, binding


def lower(graph: Graph) -> tuple[tuple[Kernel, ...], tuple[KernelCall, ...]]:
    """One kernel per distinct signature, and the call sequence of one block. Right after a delay's source is
    computed (or, for a view or the input, at its position), a copy writes it into the delay's state."""
    plan = graph.plan
    assert plan is not None, "lower needs a planned graph"
    kernels: dict[Kernel, Kernel] = {}
    calls = []

    values = {node.name for node in graph.nodes}
    stored_bytes = value_bytes(graph)
    spikes = {n.name for n in graph.nodes if n.type.dtype in SPIKE_DTYPES}
    spikes |= {s for n in graph.nodes if state_type(n).dtype == "spike" for s in state_names(n)}

    def call(
        node: Node, kernel: Kernel, binding: dict[str, str], position: int, step: int, note: str = "", y_shift: int = 0
    ) -> None:
        # a batched call binds the steps' copies (value@t) of a value
        kernel = kernel.with_spikes(tuple(p for p in kernel.arg_names() if binding.get(p, "").split("@")[0] in spikes))
        # values and scratch exist once per step of a block; state and weights once
        binding = {
            k: graph.copy_name(v, step) if v in values or v.endswith(".scratch") else v for k, v in binding.items()
        }
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
        if node.op == "concat" and node.attr("axis", 0) == 0:  # each part copied into its place in the output
            shift = 0
            for part in node.inputs:
                part_type = graph.node(part).type
                copy = ElementwiseKernel("", "copy", part_type.numel)
                first = shift // part_type.np_dtype.itemsize
                note = f"%{node.name}[{first}:{first + part_type.numel}] <- %{part}"
                call(node, copy, {"x": part, "y": node.name}, position, step, note, shift)
                shift += part_type.nbytes
        elif graph.batched(node):
            if step == 0:  # its other positions run nothing
                call(node, *_batched_kernel_for(node, graph), position, step)
        elif node.op not in NO_KERNEL_OPS and not node.attr("fused"):  # a fused neuron runs in its operand's call
            call(node, *_kernel_for(node, graph), position, step)
        for delay in graph.delays_of(node.name):
            copy = ElementwiseKernel("", "copy", delay.type.numel)
            state = f"{delay.name}.last"
            call(delay, copy, {"x": node.name, "y": state}, position, step, f"delay state %{state} <- %{node.name}")
    return tuple(kernels.values()), tuple(calls)


def _c_offsets(graph: Graph, value: str) -> str:
    """The arena offsets of a value's copies, one per step of a block, as a C initializer list."""
    return ", ".join(f"{graph.plan.buffer_of(graph.copy_name(value, t)).offset}u" for t in range(graph.schedule.block))


def _step_note(call: KernelCall, graph: Graph) -> str:
    if graph.batched(call.node):
        return " (every step of the block)"
    return f" (step {call.step} of the block)" if graph.schedule.block > 1 else ""


class LoweringError(MasicError, ValueError):
    """The plan holds a number the loader's C types cannot hold (a C initializer would silently wrap it)."""


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
    return _c_table("masic_segment_t", name, [((s.file_offset, s.arena_offset, s.nbytes), s.name) for s in segments], 3)


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


C_TYPES = {FLOAT: "float", SPIKE: "uint8_t", BITS: "uint32_t"}


def _c_type(kernel: Kernel, arg: str) -> str:
    """The C element type of a kernel argument: spikes are bytes, or words of 32 when bit-packed."""
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
    first_reader: dict[str, int] = {}  # weight (@name) or neuron state -> position of the first call reading it
    for call in calls:
        by_position.setdefault(call.position, []).append(call)
        for node in _computed(call, graph):
            for name in (*(f"@{ref.name}" for _, ref in node.param_refs()), *state_names(node)):
                first_reader.setdefault(name, call.position)
    # The loads of a block: streamed weights and transient states' initial values, as (segment, buffer, is state),
    # issued in the order their buffers become free (the loading thread serves them in turn), then of first use.
    sources = [(s, f"@{s.name}", False) for s in weights.streamed] + [(s, s.name, True) for s in weights.state_loads]
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
                ),
                s.name,
            )
            for s, buffer, state in loads
        ],
        6,
    )
    waits: dict[int, list[int]] = {}  # position -> loads its calls need first
    for k, (_, buffer, _) in enumerate(loads):
        waits.setdefault(first_reader[buffer], []).append(k)
    body = ""
    n_positions = len(graph.nodes) * block
    for position in range(n_positions):
        for k in waits.get(position, []):
            body += f"  if ((rc = masic_wait_load(stream, {k}u)) != 0) return rc; /* {loads[k][0].name} */\n"
        for call in by_position.get(position, []):
            kernel = by_symbol[call.symbol]
            args = ", ".join(f"({_c_type(kernel, p)} *)(arena + {offset}u)" for p, offset in call.args)
            guard = f"if ({call.step} < nsteps && " if call.step else "if ("
            text = call.note or "\n   * then ".join(map(format_node, _computed(call, graph)))
            body += f"  /* {text.replace('*/', '* /')}{_step_note(call, graph)} */\n"
            body += f"  {guard}(rc = {call.symbol}({args})) != 0) return rc;\n"
        if loads:
            body += f"  masic_reached(stream, {position + 1}u);\n"
    input_offsets = _c_offsets(graph, input_node.name)
    output_offsets = _c_offsets(graph, output.name)
    return f"""/* Generated by masic for graph @{graph.name}: one block of {block} timestep(s) as kernel calls. */
#include "masic_model.h"

{prototypes}
{_c_segments("resident", weights.resident)}
{_c_segments("state_init", weights.state_init)}
{load_table}static const uint64_t input_offsets[] = {{{input_offsets}}};
static const uint64_t output_offsets[] = {{{output_offsets}}};
const masic_model_t masic_model = {{
  .name = "{graph.name}",
  .arena_bytes = {plan.arena_bytes}u,
  .arena_alignment = {plan.alignment}u,
  .weights_bytes = {weights.nbytes}u,
  .weights_crc32 = 0x{weights.crc32:08x}u,
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
}};

int masic_model_block(uint8_t *arena, int32_t nsteps, masic_stream_t *stream) {{
  int32_t rc;
  (void)nsteps;
  (void)stream;
{body}  return 0;
}}
"""
