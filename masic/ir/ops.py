"""The op table: for each op its operands, attributes, neuron state and shape rule.

Neuron ops are one `NeuronOp` each, made from the neuron families of `masic.ir.neurons` (their parameters, states,
modes and equations are defined there, once). A neuron parameter is either a float attribute or a `ParamRef` to a
per-neuron array of the neuron's shape; so are the parameters of the element-wise ops listed in their
`element_params` (scale, offset, threshold, constant).

Element types (`masic.ir.graph.DTYPES`): a spiking neuron's output is "f32", "spike" (0/1 in one byte; the
spike-dtype pass chooses) or "bits" (0/1 bit-packed; the layout pass chooses); the declared type records the
choice and the shape rule keeps it; max pooling, views (flatten, reshape), crop_rows, concat and delay pass their
operand's type on; every other op outputs "f32" and reads any type (a spike counts as 0.0 or 1.0), though only
views and accumulating dense layers read bits (`masic.ir.verify`).

Cycles: the graph is a DAG within a step. `delay` carries a value across steps: its output at step t is the value of
its `source` (a node later in the order) at step t-1, zeros at t=0. The source's value is copied into the delay's
state right after the source is computed, so a delay must come before its source.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from types import MappingProxyType

from masic.ir.graph import ACTIVATION_LAYOUT, SPIKE_DTYPES, Node, ParamRef, TensorType
from masic.ir.neurons import FAMILIES, NeuronFamily


class ShapeError(ValueError):
    """An op's operands or attributes do not fit together."""


ShapeRule = Callable[[Node, tuple[TensorType, ...]], TensorType]
# The shape of each parameter a node may read, by attribute, given its operands' types and its own type
ParamRule = Callable[[Node, tuple[TensorType, ...], TensorType], Mapping[str, tuple[int, ...]]]


def _element_shapes(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """Per-element parameters (`float_or_param`): one value per output element."""
    return dict.fromkeys(float_or_param(OPS[node.op]), out.shape)


@dataclass(frozen=True)
class OpDef:
    """`infer` gives the node's type from its operands' (checking every attribute they must agree with); `params`
    the shape each parameter it reads must have (`check_params`): kernels read exactly those elements."""

    name: str
    arity: int  # operands; VARIADIC: one or more
    required: tuple[str, ...]
    optional: tuple[str, ...]
    infer: ShapeRule
    doc: str = ""
    element_params: tuple[str, ...] = ()  # attributes that are a float or a per-element parameter
    params: ParamRule = _element_shapes


@dataclass(frozen=True)
class NeuronOp(OpDef):
    """An op with state carried across timesteps: a neuron family (element-wise over its input), or `delay`.

    `states` lists (state name, attribute giving its initial value, or None for zero).
    `spiking` is true when the output is a spike (0/1) tensor. A spiking neuron with attribute `probe` (a state
    name) outputs that state after the update instead of the spikes, to observe a membrane. A neuron with
    `fused=true` runs as the epilogue of its operand's conv or dense kernel (`Graph.epilogue`).
    """

    states: tuple[tuple[str, str | None], ...] = ()
    spiking: bool = True


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(node: Node, key: str, least: int = 1) -> tuple[int, int]:
    """A pair of integers of at least `least` (1: kernels, strides, dilations, output sizes; 0: padding)."""
    value = node.attr(key)
    if not (isinstance(value, tuple) and len(value) == 2 and all(_integer(v) and v >= least for v in value)):
        raise ShapeError(f"attribute {key} must be a pair of integers of at least {least}, got {value!r}")
    return value


def _count(node: Node, key: str) -> int:
    """A positive integer attribute (channels, features, groups)."""
    value = node.attr(key)
    if not (_integer(value) and value >= 1):
        raise ShapeError(f"attribute {key} must be a positive integer, got {value!r}")
    return value


def window_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Windows along one axis padded by `pad` in total (both sides together)."""
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


def row_padding(node: Node) -> tuple[int, int]:
    """(top, bottom) padded rows of a conv2d or pooling input: its `row_padding` attribute, else `padding`'s rows on
    both sides. Row patches of an image (passes/patch_rows.py) pad only at the image's true border."""
    if node.attr("row_padding") is None:
        ph = _pair(node, "padding", 0)[0]
        return ph, ph
    return _pair(node, "row_padding", 0)


def pads(node: Node) -> tuple[int, int, int]:
    """(top rows, bottom rows, columns on each side) padded around a conv2d's or pooling's input."""
    return (*row_padding(node), _pair(node, "padding", 0)[1])


# Views: they reshape their operand without moving it, so they alias its buffer
VIEW_OPS = ("flatten", "reshape")

# Sliding-window ops: their kernels read a padded input from a copy of it (their scratch), and read an NCHW{c}c
# operand as freely as an NCHW one
WINDOW_OPS = ("conv2d", "maxpool2d", "avgpool2d", "sumpool2d")


def scratch_type(op: str, in_type: TensorType, padding: tuple[int, int, int]) -> TensorType | None:
    """The padded copy of its (C, H, W) input that the kernel of a sliding-window op (`WINDOW_OPS`) writes before it
    slides over it (its scratch buffer), for `padding` (top, bottom, each side) as `pads` gives it; None when
    nothing is padded. The copy is NCHW whatever the input's layout; a conv's is float32, so that each input
    spike is converted once rather than once per block of outputs and tap (faster: docs/benchmarks.md, "Convs of
    spikes pad into float32"); a pooling's keeps its input's type (spikes stay bytes). The planner sizes the
    scratch buffer and the kernel descriptions its argument by this one rule."""
    top, bottom, side = padding
    if not (top or bottom or side):
        return None
    c, h, w = in_type.shape
    return TensorType((c, h + top + bottom, w + 2 * side), "f32" if op == "conv2d" else in_type.dtype)


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling bins along one axis: [floor(i*size/out), ceil((i+1)*size/out)) for each i."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


CONV_LAYOUT = "OIHW"  # a conv weight's logical layout, PyTorch's: (out, in / groups, kernel rows, kernel columns)


def weight_block(layout: str) -> int:
    """The output-channel block of a conv's `weight_layout`: 1 for OIHW, ob for "OIHW{ob}o" (the weight stored as
    (O/ob, I/groups, kh, kw, ob): `masic.codegen.weights.stored_weight`)."""
    if layout == CONV_LAYOUT:
        return 1
    if match := re.fullmatch(r"OIHW([1-9][0-9]*)o", str(layout)):
        return int(match.group(1))
    raise ShapeError(f'unknown conv weight layout {layout!r} (expected "OIHW" or "OIHW<block>o")')


# Element-wise ops of one operand (every neuron family among them): the elements' order does not matter to them, so
# they store their output in their operand's layout (and their per-element parameters and state in it too)
LAYOUT_CARRIERS = ("relu", "scale", "offset", "threshold", *FAMILIES)
BLOCKED_READERS = WINDOW_OPS  # kernels that read an NCHW{c}c operand


def activation_block(layout: str) -> int:
    """The channel block of a value's `layout`: 1 for NCHW, c for "NCHW{c}c" (stored (C/c, H, W, c): c channels
    of a pixel contiguous, `masic.codegen.weights.stored_weight`)."""
    if layout == ACTIVATION_LAYOUT:
        return 1
    if match := re.fullmatch(r"NCHW([1-9][0-9]*)c", str(layout)):
        return int(match.group(1))
    raise ShapeError(f'unknown activation layout {layout!r} (expected "NCHW" or "NCHW<block>c")')


def matrix_vector(conv: Node, in_shape: tuple[int, ...]) -> bool:
    """A 1x1 ungrouped, unpadded convolution of a 1x1 map: a matrix-vector product (its OIHW weight is the dense
    layer's (O, I) matrix)."""
    spatial = in_shape[1:] == (1, 1) and conv.attr("kernel") == (1, 1)
    return spatial and conv.attr("groups") == 1 and conv.attr("padding") == (0, 0) and row_padding(conv) == (0, 0)


def _infer_identity(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    """Element-wise: the operand's shape, float32 whatever the operand's type."""
    return TensorType(ins[0].shape)


def _infer_spiking(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    """A spiking neuron: the operand's shape; spikes (bytes or bits) when declared so (not when probing a state, a
    float)."""
    spikes = node.type is not None and node.type.dtype in SPIKE_DTYPES and node.attr("probe") is None
    return TensorType(ins[0].shape, node.type.dtype if spikes else "f32")


def state_type(node: Node) -> TensorType:
    """The type of each state of a neuron or delay node: a delay holds values of its own type, neurons float32."""
    assert node.type is not None
    return node.type if node.op == "delay" else TensorType(node.type.shape)


def _infer_declared(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if node.type is None:
        raise ShapeError(f"{node.op} nodes must declare their type")
    if not all(_integer(d) and d >= 1 for d in node.type.shape):
        raise ShapeError(f"{node.op} declares {node.type}: every dimension must be a positive integer")
    return node.type


def _infer_conv2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"conv2d expects a (C,H,W) input, got {ins[0]}")
    c, h, w = ins[0].shape
    out_c, groups = _count(node, "out_channels"), _count(node, "groups")
    kh, kw = _pair(node, "kernel")
    (sh, sw), (_, pw), (dh, dw) = _pair(node, "stride"), _pair(node, "padding", 0), _pair(node, "dilation")
    if c % groups or out_c % groups:
        raise ShapeError(f"conv2d channels {c}->{out_c} do not divide into {groups} groups")
    if (out_c // groups) % weight_block(node.attr("weight_layout", CONV_LAYOUT)):
        raise ShapeError(
            f"conv2d weight layout {node.attr('weight_layout')} splits a group's {out_c // groups} outputs"
        )
    oh, ow = window_out(h, kh, sh, sum(row_padding(node)), dh), window_out(w, kw, sw, 2 * pw, dw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"conv2d kernel {kh}x{kw} does not fit input {h}x{w}")
    return TensorType((out_c, oh, ow))


def _conv2d_params(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """Weight (O, C/groups, kh, kw) as torch.nn.Conv2d, in the graph's OIHW whatever weights.bin stores; bias (O,)."""
    out_c = out.shape[0]
    return {"weight": (out_c, ins[0].shape[0] // node.attr("groups"), *node.attr("kernel")), "bias": (out_c,)}


def _infer_pool2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"pooling expects a (C,H,W) input, got {ins[0]}")
    c, h, w = ins[0].shape
    (kh, kw), (sh, sw), (_, pw) = _pair(node, "kernel"), _pair(node, "stride"), _pair(node, "padding", 0)
    top, bottom = row_padding(node)
    if 2 * max(top, bottom) > kh or 2 * pw > kw:  # every window must hold an element of the input
        raise ShapeError(f"pooling padding {top},{bottom},{pw} exceeds half the kernel {kh}x{kw}")
    oh, ow = window_out(h, kh, sh, top + bottom), window_out(w, kw, sw, 2 * pw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"pooling kernel {kh}x{kw} does not fit input {h}x{w}")
    return TensorType((c, oh, ow), ins[0].dtype if node.op == "maxpool2d" else "f32")


def _infer_dense(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 1:
        raise ShapeError(f"dense expects a flat input, got {ins[0]} (insert a flatten)")
    if ins[0].shape[0] != _count(node, "in_features"):
        raise ShapeError(f"dense expects {node.attr('in_features')} input features, got {ins[0].shape[0]}")
    return TensorType((_count(node, "out_features"),))


def _dense_params(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """Weight (out, in) as torch.nn.Linear, whatever weights.bin stores; bias (out,)."""
    return {"weight": (out.shape[0], ins[0].shape[0]), "bias": out.shape}


def _infer_batchnorm2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"batchnorm2d expects a (C,H,W) input, got {ins[0]}")
    if not isinstance(node.attr("eps"), float):
        raise ShapeError(f"batchnorm2d eps must be a float, got {node.attr('eps')!r}")
    return TensorType(ins[0].shape)


def _batchnorm2d_params(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """One value per channel."""
    return dict.fromkeys(("mean", "var", "gamma", "beta"), out.shape[:1])


def _infer_flatten(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    return TensorType((prod(ins[0].shape),), ins[0].dtype)


def _infer_reshape(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    shape = node.attr("shape")
    if not (isinstance(shape, tuple) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ShapeError(f"reshape needs a shape of positive integers, got {shape!r}")
    if prod(shape) != ins[0].numel:
        raise ShapeError(f"cannot reshape {ins[0]} to {shape}: {prod(shape)} elements for {ins[0].numel}")
    return TensorType(shape, ins[0].dtype)


def _infer_adaptive_pool2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"pooling expects a (C,H,W) input, got {ins[0]}")
    oh, ow = _pair(node, "output")
    return TensorType((ins[0].shape[0], oh, ow))


VARIADIC = -1


def _infer_concat(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    # The kernels join whole operands one after the other (axis 0) or the rows of (C,H,W) operands (axis 1).
    axis = node.attr("axis", 0)
    if not (axis == 0 or (axis == 1 and len(ins[0].shape) == 3)) or not _integer(axis):
        raise ShapeError(f"concat joins along axis 0, or 1 of (C,H,W) operands; got axis {axis!r} of {ins[0]}")

    def others(t: TensorType) -> tuple[int, ...]:
        return t.shape[:axis] + t.shape[axis + 1 :]

    if any(len(t.shape) != len(ins[0].shape) or others(t) != others(ins[0]) or t.dtype != ins[0].dtype for t in ins):
        raise ShapeError(f"concat operands may differ only in dimension {axis}, got {', '.join(map(str, ins))}")
    shape = list(ins[0].shape)
    shape[axis] = sum(t.shape[axis] for t in ins)
    return TensorType(tuple(shape), ins[0].dtype)


def _infer_crop_rows(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"crop_rows expects a (C,H,W) input, got {ins[0]}")
    c, h, w = ins[0].shape
    lo, hi = _pair(node, "rows", 0)
    if not 0 <= lo < hi <= h:
        raise ShapeError(f"crop_rows rows [{lo},{hi}) are not a non-empty range of the {h} rows of {ins[0]}")
    return TensorType((c, hi - lo, w), ins[0].dtype)


def _infer_same(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    """Element-wise over operands of one shape (of either type): float32. Nothing broadcasts: the interpreter
    would, but the kernels read every operand element by element over the output."""
    if any(t.shape != ins[0].shape for t in ins):
        raise ShapeError(f"operands must have equal shapes, got {', '.join(map(str, ins))}")
    return TensorType(ins[0].shape)


def _neuron(definition: NeuronFamily) -> NeuronOp:
    """The op of a neuron family: its parameters and modes are required attributes; a spiking neuron may probe."""
    spiking = definition.spiking
    return NeuronOp(
        definition.op,
        1,
        definition.params + definition.mode_names,
        ("probe", "fused", "layout") if spiking else ("fused", "layout"),
        _infer_spiking if spiking else _infer_identity,
        definition.doc,
        states=definition.states,
        spiking=spiking,
    )


OPS: Mapping[str, OpDef] = MappingProxyType(
    {
        op.name: op
        for op in (
            OpDef("input", 0, (), (), _infer_declared, "the sample presented at this timestep"),
            OpDef(
                "conv2d",
                1,
                ("weight", "out_channels", "kernel", "stride", "padding", "dilation", "groups"),
                ("bias", "row_padding", "weight_layout", "layout"),
                _infer_conv2d,
                params=_conv2d_params,
                doc="2-d cross-correlation as torch.nn.Conv2d; weight (O, C/groups, kh, kw); row_padding=(top, bottom)"
                " replaces padding's rows (a row patch pads only at the image border); weight_layout: how"
                " weights.bin stores the weight (default OIHW; the graph's weights stay OIHW); layout: how the"
                " output is stored (default NCHW)",
            ),
            OpDef(
                "dense",
                1,
                ("weight", "in_features", "out_features"),
                ("bias", "weight_layout"),
                _infer_dense,
                'y = W x + b; weight_layout="IO" stores W transposed in weights.bin (for the accumulate-only kernel'
                " of a spike operand); the parameter itself stays (out, in)",
                params=_dense_params,
            ),
            OpDef(
                "batchnorm2d",
                1,
                ("mean", "var", "eps"),
                ("gamma", "beta"),
                _infer_batchnorm2d,
                "eval-mode batch norm: (x - mean) / sqrt(var + eps) * gamma + beta, per channel",
                params=_batchnorm2d_params,
            ),
            OpDef("maxpool2d", 1, ("kernel", "stride", "padding"), ("row_padding",), _infer_pool2d, "max over windows"),
            OpDef(
                "avgpool2d",
                1,
                ("kernel", "stride", "padding"),
                ("row_padding",),
                _infer_pool2d,
                "mean over windows, padding counted (count_include_pad)",
            ),
            OpDef(
                "sumpool2d",
                1,
                ("kernel", "stride", "padding"),
                ("row_padding",),
                _infer_pool2d,
                "sum over windows (NIR SumPool2d), zero padding",
            ),
            OpDef(
                "adaptive_avgpool2d",
                1,
                ("output",),
                (),
                _infer_adaptive_pool2d,
                "torch.nn.AdaptiveAvgPool2d: output cell (i,j) is the mean of rows [floor(i*H/OH), ceil((i+1)*H/OH))"
                " and the same for columns",
            ),
            OpDef("flatten", 1, (), (), _infer_flatten, "a view of its input as one dimension"),
            OpDef("reshape", 1, ("shape",), (), _infer_reshape, "a view of its input with another shape"),
            OpDef("add", 2, (), (), _infer_same, "element-wise sum"),
            OpDef(
                "concat",
                VARIADIC,
                (),
                ("axis",),
                _infer_concat,
                "operands joined along dimension `axis` (default 0: outputs or channels of a sliced layer; 1: the"
                " rows of an image's patches)",
            ),
            OpDef(
                "crop_rows",
                1,
                ("rows",),
                (),
                _infer_crop_rows,
                "rows [lo, hi) of a (C,H,W) value, rows=(lo,hi): the part of an image one row patch reads",
            ),
            OpDef("sub", 2, (), (), _infer_same, "element-wise difference a - b"),
            OpDef("mul", 2, (), (), _infer_same, "element-wise product"),
            OpDef("select", 3, (), (), _infer_same, "element-wise c != 0 ? a : b (torch.where)"),
            OpDef("relu", 1, (), ("layout",), _infer_identity, "max(x, 0)"),
            OpDef("scale", 1, ("factor",), ("layout",), _infer_identity, "x * factor", ("factor",)),
            OpDef("offset", 1, ("value",), ("layout",), _infer_identity, "x + value", ("value",)),
            OpDef(
                "threshold",
                1,
                ("threshold",),
                ("layout",),
                _infer_identity,
                "x > threshold ? 1 : 0 (NIR Threshold, a spike without state)",
                ("threshold",),
            ),
            OpDef("constant", 0, ("value",), (), _infer_declared, "value, broadcast to the declared type", ("value",)),
            *(_neuron(definition) for definition in FAMILIES.values()),
            NeuronOp(
                "delay",
                0,
                ("source",),
                (),
                _infer_declared,
                """One-step delay: outputs its state, the value of node `source` at the previous step (zeros at
                the first step); the state is overwritten with the source's value right after the source runs.""",
                states=(("last", None),),
                spiking=False,
            ),
        )
    }
)


def float_or_param(definition: OpDef) -> tuple[str, ...]:
    """The attributes that hold a float or a per-element parameter: the op's `element_params`, and every parameter
    of a neuron (its `reset` is a word)."""
    if isinstance(definition, NeuronOp) and definition.name != "delay":
        return tuple(k for k in definition.required if k != "reset")
    return definition.element_params


def check_params(node: Node, ins: tuple[TensorType, ...], out: TensorType, params: Mapping[str, TensorType]) -> None:
    """Raises ShapeError unless every parameter the node reads (`params`: their types by name) is float32 of the
    shape its op's `params` rule gives for these operands. A kernel reads exactly that many elements, so any other
    shape would be read past its end, or read wrongly; attributes the rule names that take no float must be
    parameters."""
    definition = OPS[node.op]
    shapes = definition.params(node, ins, out)
    given = ", ".join(map(str, ins)) if ins else str(out)
    for key, value in node.attrs:
        if isinstance(value, ParamRef):
            if key not in shapes:
                raise ShapeError(f"attribute {key} of {node.op} cannot be a parameter, got @{value.name}")
            param = params.get(value.name)
            if param is None:
                raise ShapeError(f"attribute {key} refers to missing parameter @{value.name}")
            if param != (wanted := TensorType(shapes[key])):
                raise ShapeError(f"{key} @{value.name} is {param}, but a {node.op} of {given} reads {wanted}")
        elif key in shapes and key not in float_or_param(definition):
            raise ShapeError(f"{node.op} {key} must be a parameter, got {value!r}")


def neuron_op(op: str) -> NeuronOp | None:
    definition = OPS.get(op)
    return definition if isinstance(definition, NeuronOp) else None


def state_names(node: Node) -> tuple[str, ...]:
    """Names of the state values of a node, e.g. ("lif1.v", "lif1.i"); empty for stateless ops."""
    definition = neuron_op(node.op)
    return tuple(f"{node.name}.{s}" for s, _ in definition.states) if definition else ()
