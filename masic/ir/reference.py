"""The reference implementation of each op in numpy: what the interpreter (`masic.ir.interpret`) runs, as the op
table's `interpret` hook of every op (`masic.ir.ops`).

Neuron updates are their families' own (`masic.ir.neurons`) and element-wise ops the functions of
`masic.ir.elementwise`, both run by the numpy backend of `masic.ir.arith`: float32, one rounding per operation, as
the kernels, which run the same definitions. Convolutions, dense layers and pooling sums accumulate in float64 and
round once, so they are at least as accurate as any float32 kernel they are compared with; with int8 weights
(`masic.ir.weight_formats`) the rounded sum is then scaled and the bias added in float32, as their kernels do (over
spikes the sum is an exact integer, so those layers match their kernels bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from masic.ir import arith
from masic.ir.elementwise import ElementwiseFn
from masic.ir.neurons import NeuronFamily
from masic.ir.node import Node
from masic.ir.shapes import adaptive_bins, row_padding
from masic.ir.weight_formats import int8_output

F32 = np.float32


@dataclass(frozen=True)
class Step:
    """What an op reads at one step: its operands (spikes as 0.0 / 1.0 when it outputs float32), its parameters by
    attribute (`param`: an array, a float32 for a float attribute, None when absent), its state arrays by name
    (updated in place), and the sample the input presents."""

    operands: list[np.ndarray]
    param: Callable[[str], np.ndarray | np.float32 | None]
    state: dict[str, np.ndarray]
    sample: np.ndarray


Implementation = Callable[[Node, Step], np.ndarray]


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """(C, OH, OW, kh, kw) view of the windows of an already padded (C, H, W) array."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    view = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    return view[:, ::sh, ::sw, ::dh, ::dw]


def _pad(x: np.ndarray, node: Node, value: float) -> np.ndarray:
    """The input of a conv or pooling node with its padding: `row_padding` rows above and below, if given."""
    pw = node.attr("padding")[1]
    return np.pad(x, ((0, 0), row_padding(node), (pw, pw)), constant_values=value)


def sample(node: Node, step: Step) -> np.ndarray:
    return step.sample


def delayed(node: Node, step: Step) -> np.ndarray:
    """A delay outputs its state, its source's value at the previous step."""
    return step.state["last"].copy()


def conv2d(node: Node, step: Step) -> np.ndarray:
    (x,), p = step.operands, step.param
    weight, bias, groups = p("weight"), p("bias"), node.attr("groups")
    padded = _pad(x, node, 0.0)
    windows = _windows(padded, node.attr("kernel"), node.attr("stride"), node.attr("dilation"))
    c_in, out_c = x.shape[0] // groups, weight.shape[0] // groups
    out = np.empty((weight.shape[0], *windows.shape[1:3]), dtype=np.float64)
    for g in range(groups):
        w = weight[g * out_c : (g + 1) * out_c].astype(np.float64)
        win = windows[g * c_in : (g + 1) * c_in].astype(np.float64)
        out[g * out_c : (g + 1) * out_c] = np.einsum("chwij,ocij->ohw", win, w)
    if (scale := p("weight_scale")) is not None:  # int8 (masic.ir.weight_formats)
        return int8_output(out, scale, bias)
    if bias is not None:
        out += bias.astype(np.float64)[:, None, None]
    return out.astype(F32)


def dense(node: Node, step: Step) -> np.ndarray:
    (x,), p = step.operands, step.param
    out = p("weight").astype(np.float64) @ x.astype(np.float64)
    bias = p("bias")
    if (scale := p("weight_scale")) is not None:  # int8 (masic.ir.weight_formats)
        return int8_output(out, scale, bias)
    return (out if bias is None else out + bias.astype(np.float64)).astype(F32)


def pool2d(reduction: str, node: Node, step: Step) -> np.ndarray:
    """Pooling by `reduction` ("max", "avg" counting padding, "sum") over windows."""
    (x,) = step.operands
    is_max = reduction == "max"
    # Spikes pad with 0: every window holds an input element (masic.ir.shapes), and spikes are never below 0.
    padded = _pad(x, node, -np.inf if is_max and x.dtype == F32 else 0.0)
    windows = _windows(padded, node.attr("kernel"), node.attr("stride"), (1, 1))
    if is_max:
        return windows.max(axis=(3, 4)).astype(x.dtype)
    reduce = np.mean if reduction == "avg" else np.sum
    return reduce(windows.astype(np.float64), axis=(3, 4)).astype(F32)


def adaptive_avgpool2d(node: Node, step: Step) -> np.ndarray:
    (x,) = step.operands
    (oh, ow), (_, h, w) = node.attr("output"), x.shape
    out = np.empty((x.shape[0], oh, ow), dtype=F32)
    for i, (h0, h1) in enumerate(adaptive_bins(h, oh)):
        for j, (w0, w1) in enumerate(adaptive_bins(w, ow)):
            out[:, i, j] = x[:, h0:h1, w0:w1].astype(np.float64).mean(axis=(1, 2))
    return out


def batchnorm2d(node: Node, step: Step) -> np.ndarray:
    (x,), p = step.operands, step.param
    scale = 1.0 / np.sqrt(p("var").astype(np.float64) + node.attr("eps"))
    gamma, beta = p("gamma"), p("beta")
    if gamma is not None:
        scale = scale * gamma
    y = (x - p("mean").astype(np.float64)[:, None, None]) * scale[:, None, None]
    return (y if beta is None else y + beta[:, None, None]).astype(F32)


def view(node: Node, step: Step) -> np.ndarray:
    """Flatten and reshape: the operand's elements in the node's shape."""
    return step.operands[0].reshape(node.type.shape)


def concat(node: Node, step: Step) -> np.ndarray:
    return np.concatenate(step.operands, axis=node.attr("axis", 0))


def crop_rows(node: Node, step: Step) -> np.ndarray:
    lo, hi = node.attr("rows")
    return step.operands[0][:, lo:hi].copy()


def neuron(family: NeuronFamily, node: Node, step: Step) -> np.ndarray:
    """One update of a neuron family (`masic.ir.neurons`) with the numpy backend; updates the state arrays in place,
    returns the output (the probed state's new value, if the node probes one)."""
    new = family.step(
        arith.numpy(step.operands[0]),
        {name: arith.numpy(array) for name, array in step.state.items()},
        {name: arith.numpy(step.param(name)) for name in family.params},
        {name: node.attr(name) for name in family.mode_names},
    )
    for name in family.state_names:
        step.state[name][...] = new[name].value
    output = new[node.attr("probe") or family.output].value
    return np.asarray(output).astype(node.type.np_dtype)


def elementwise(function: ElementwiseFn, key: str | None, node: Node, step: Step) -> np.ndarray:
    """An element-wise function (`masic.ir.elementwise`) of the operands, and of the parameter in attribute `key`
    if it takes one, with the numpy backend: float32, one rounding per operation as in PyTorch."""
    args = [arith.numpy(x) for x in step.operands] + ([arith.numpy(step.param(key))] if key else [])
    return np.broadcast_to(function.body(*args).value, node.type.shape).astype(F32)
