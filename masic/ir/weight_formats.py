"""Compressed weights: the formats a conv2d or dense weight may be stored in, and the arithmetic each implies.

- float32 ("f32"): as trained.
- float16 ("f16"): IEEE half, each element rounded to nearest (ties to even). Kernels convert each element back
  to float32, which is exact, and compute as for float32 weights.
- int8 ("i8"): symmetric, one scale per output channel o, stored float32 in the node's `weight_scale` parameter
  (shape (O,)): scale[o] = max_k |w[o, k]| / 127 (1 for a channel of zeros), q[o, k] = round(w[o, k] / scale[o])
  (ties to even), in [-127, 127]. A layer computes

      y[o] = float32(sum_k q[o, k] * x[k]) * scale[o] + b[o]      (float32 multiply, then float32 add)

  The sum over a spike operand (x in {0, 1}) is an integer: accumulated in int32 it is exact, the same in any
  order, so int8 layers over spikes give identical outputs on every target and in the interpreter. Over float32
  activations the sum is a float32 sum of x * q, rounded like any float32 layer's.

Biases, neuron parameters and state stay float32. `Graph.weights` holds the stored numbers (float16 or int8
arrays, in the logical layout), so a weight's bytes everywhere (budgets, slicing, streaming, weights.bin) are
its stored bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

# The names `masic compile --weights` takes, and the element type each stores a weight in.
FORMATS: Mapping[str, str] = MappingProxyType({"float32": "f32", "float16": "f16", "int8": "i8"})
FORMAT_OF_DTYPE: Mapping[str, str] = MappingProxyType({dtype: name for name, dtype in FORMATS.items()})
INT8_LEVELS = 127  # symmetric: -127..127, so negating a weight never overflows


def per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """Values per output channel (O,) shaped to broadcast along axis 0 of an array of `ndim` dimensions."""
    return values.reshape(-1, *(1,) * (ndim - 1))


def int8_scale(weight: np.ndarray) -> np.ndarray:
    """float32 scale per output channel (axis 0): the largest magnitude over 127, 1 for a channel of zeros."""
    largest = np.abs(weight.astype(np.float32)).reshape(weight.shape[0], -1).max(axis=1)
    scale = np.where(largest > 0, largest / np.float32(INT8_LEVELS), np.float32(1)).astype(np.float32)
    # Below float32's normal range the quotient rounds to a coarse grid, or to zero (then q = w / 0): one step up
    # keeps the largest weight within 127.5 scales, so q stays in range and every |w - q * scale| <= scale / 2.
    with np.errstate(divide="ignore"):
        coarse = largest.astype(np.float64) / scale > INT8_LEVELS + 0.5
    return np.where(coarse, np.nextafter(scale, np.float32(np.inf)), scale).astype(np.float32)


def quantize(weight: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A float32 weight (O, ...) stored as `dtype`: the stored array, and for "i8" its scale per output channel."""
    if dtype == "f32":
        return np.ascontiguousarray(weight, dtype=np.float32), None
    if dtype == "f16":
        return np.ascontiguousarray(weight, dtype=np.float16), None
    if dtype == "i8":
        scale = int8_scale(weight)
        per_row = per_channel(scale, weight.ndim).astype(np.float64)
        q = np.clip(np.rint(weight.astype(np.float64) / per_row), -INT8_LEVELS, INT8_LEVELS)
        return np.ascontiguousarray(q, dtype=np.int8), scale
    raise ValueError(f"weights cannot be stored as {dtype!r}; formats: {', '.join(FORMATS)}")


def dequantized(stored: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """The float32 weight a stored one stands for (q * scale per output channel for int8)."""
    if scale is None:
        return stored.astype(np.float32)
    return stored.astype(np.float32) * per_channel(scale, stored.ndim)


def int8_output(acc: np.ndarray, scale: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """An int8 layer's output from its sums of q * x (float64, exact for spikes; output channel first): rounded to
    float32, times the scale, plus the bias, each a float32 operation, as the kernels do it."""
    out = acc.astype(np.float32) * per_channel(scale, acc.ndim)
    return out if bias is None else out + per_channel(bias, acc.ndim).astype(np.float32)


@dataclass(frozen=True)
class WeightChoice:
    """The format each layer's weight is stored in (`FORMATS` names): `layers` by node name, else `default`."""

    default: str = "float32"
    layers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in (self.default, *(fmt for _, fmt in self.layers)):
            if name not in FORMATS:
                raise ValueError(f"unknown weight format {name!r}; formats: {', '.join(FORMATS)}")

    def of(self, node: str) -> str:
        return dict(self.layers).get(node, self.default)


FLOAT32_WEIGHTS = WeightChoice()  # every weight as trained
