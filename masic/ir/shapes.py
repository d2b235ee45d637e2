"""The shape rules of the ops (`masic.ir.ops`), and the attribute readers and window arithmetic they share with the
passes, the interpreter and the kernel descriptions.

A shape rule gives a node's type from its operands' types, checking every attribute they must agree with, and raises
`ShapeError` naming what does not fit; a parameter rule gives the shape of each parameter a node reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from math import prod

from masic.ir.node import ACTIVATION_LAYOUT, SPIKE_DTYPES, Node, TensorType


class ShapeError(ValueError):
    """An op's operands or attributes do not fit together."""


ShapeRule = Callable[[Node, tuple[TensorType, ...]], TensorType]
# The shape of each parameter a node may read, by attribute, given its operands' types and its own type
ParamRule = Callable[[Node, tuple[TensorType, ...], TensorType], Mapping[str, tuple[int, ...]]]


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


def infer_identity(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    """Element-wise: the operand's shape, float32 whatever the operand's type."""
    return TensorType(ins[0].shape)


def infer_spiking(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    """A spiking neuron: the operand's shape; spikes (bytes or bits) when declared so (not when probing a state, a
    float)."""
    spikes = node.type is not None and node.type.dtype in SPIKE_DTYPES and node.attr("probe") is None
    return TensorType(ins[0].shape, node.type.dtype if spikes else "f32")


def infer_declared(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if node.type is None:
        raise ShapeError(f"{node.op} nodes must declare their type")
    if not all(_integer(d) and d >= 1 for d in node.type.shape):
        raise ShapeError(f"{node.op} declares {node.type}: every dimension must be a positive integer")
    return node.type


def infer_conv2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
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


def conv2d_params(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """Weight (O, C/groups, kh, kw) as torch.nn.Conv2d, in the graph's OIHW whatever weights.bin stores; bias and
    an int8 weight's scale (O,)."""
    out_c = out.shape[0]
    weight = (out_c, ins[0].shape[0] // node.attr("groups"), *node.attr("kernel"))
    return {"weight": weight, "bias": (out_c,), "weight_scale": (out_c,)}


def infer_pool2d(node: Node, ins: tuple[TensorType, ...], keeps_type: bool = False) -> TensorType:
    """Pooling over windows; the output keeps its operand's type when `keeps_type` (the maximum of spikes is a
    spike), else float32."""
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
    return TensorType((c, oh, ow), ins[0].dtype if keeps_type else "f32")


def infer_dense(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 1:
        raise ShapeError(f"dense expects a flat input, got {ins[0]} (insert a flatten)")
    if ins[0].shape[0] != _count(node, "in_features"):
        raise ShapeError(f"dense expects {node.attr('in_features')} input features, got {ins[0].shape[0]}")
    return TensorType((_count(node, "out_features"),))


def dense_params(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """Weight (out, in) as torch.nn.Linear, whatever weights.bin stores; bias and an int8 weight's scale (out,)."""
    return {"weight": (out.shape[0], ins[0].shape[0]), "bias": out.shape, "weight_scale": out.shape}


def infer_batchnorm2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"batchnorm2d expects a (C,H,W) input, got {ins[0]}")
    if not isinstance(node.attr("eps"), float):
        raise ShapeError(f"batchnorm2d eps must be a float, got {node.attr('eps')!r}")
    return TensorType(ins[0].shape)


def batchnorm2d_params(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """One value per channel."""
    return dict.fromkeys(("mean", "var", "gamma", "beta"), out.shape[:1])


def infer_flatten(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    return TensorType((prod(ins[0].shape),), ins[0].dtype)


def infer_reshape(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    shape = node.attr("shape")
    if not (isinstance(shape, tuple) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ShapeError(f"reshape needs a shape of positive integers, got {shape!r}")
    if prod(shape) != ins[0].numel:
        raise ShapeError(f"cannot reshape {ins[0]} to {shape}: {prod(shape)} elements for {ins[0].numel}")
    return TensorType(shape, ins[0].dtype)


def infer_adaptive_pool2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"pooling expects a (C,H,W) input, got {ins[0]}")
    oh, ow = _pair(node, "output")
    return TensorType((ins[0].shape[0], oh, ow))


def infer_concat(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
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


def infer_crop_rows(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"crop_rows expects a (C,H,W) input, got {ins[0]}")
    c, h, w = ins[0].shape
    lo, hi = _pair(node, "rows", 0)
    if not 0 <= lo < hi <= h:
        raise ShapeError(f"crop_rows rows [{lo},{hi}) are not a non-empty range of the {h} rows of {ins[0]}")
    return TensorType((c, hi - lo, w), ins[0].dtype)


def infer_same(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    """Element-wise over operands of one shape (of either type): float32. Nothing broadcasts: the interpreter
    would, but the kernels read every operand element by element over the output."""
    if any(t.shape != ins[0].shape for t in ins):
        raise ShapeError(f"operands must have equal shapes, got {', '.join(map(str, ins))}")
    return TensorType(ins[0].shape)
