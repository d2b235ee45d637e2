"""The IR's nodes and the types of their values: element types, `TensorType`, `ParamRef` and `Node`.

They sit below the op table (`masic.ir.ops`) and its shape rules (`masic.ir.shapes`), which read nodes and make
types, and below the graph (`masic.ir.graph`), which asks the op table about its nodes and exports them with the
graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from math import prod
from types import MappingProxyType

import numpy as np

# Element types: "spike" holds 0 or 1, one byte each (what spiking neurons output and max pools, views, crops,
# concats and delays of spikes pass on); "bits" holds 0 or 1 too, bit-packed (the layout pass's choice for spikes
# that only accumulating dense layers read): element k is bit k % 32 of the little-endian 32-bit word k // 32,
# the last word's unused bits zero. "f16" (IEEE half) and "i8" (symmetric int8 with a float32 scale per output
# channel) are compressed weights only (`masic.ir.weight_formats`). Everything else is float32. The numpy type is
# an element's as the interpreter holds it (bits unpacked, one uint8 0/1 each); `TensorType.nbytes` is what the
# arena stores.
DTYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        "f32": np.dtype(np.float32),
        "spike": np.dtype(np.uint8),
        "bits": np.dtype(np.uint8),
        "f16": np.dtype(np.float16),
        "i8": np.dtype(np.int8),
    }
)
SPIKE_DTYPES = ("spike", "bits")  # the element types holding spikes
WEIGHT_DTYPES = ("f32", "f16", "i8")  # the element types a conv2d or dense weight may be stored in
ACTIVATION_LAYOUT = "NCHW"  # how a value is stored unless its producer's `layout` attribute says otherwise
WORD_BITS = 32  # elements per word of a "bits" value


def words(numel: int) -> int:
    """32-bit words holding `numel` bit-packed elements."""
    return -(-numel // WORD_BITS)


def pack_bits(values: np.ndarray) -> np.ndarray:
    """The "bits" storage of 0/1 values (any shape, flattened): little-endian uint32 words, unused bits zero."""
    flat = np.asarray(values).reshape(-1).astype(bool)
    padded = np.zeros(words(flat.size) * WORD_BITS, dtype=bool)
    padded[: flat.size] = flat
    return np.packbits(padded, bitorder="little").view("<u4")


def unpack_bits(stored: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The 0/1 values (uint8, `shape`) of "bits" storage (uint32 words, or their bytes)."""
    as_bytes = np.ascontiguousarray(stored).view(np.uint8)
    return np.unpackbits(as_bytes, bitorder="little")[: prod(shape)].reshape(shape)


@dataclass(frozen=True)
class TensorType:
    """Shape (per sample, no batch dimension) and element type of a value."""

    shape: tuple[int, ...]
    dtype: str = "f32"

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        if self.dtype == "bits":
            return 4 * words(self.numel)
        return self.numel * DTYPES[self.dtype].itemsize

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class ParamRef:
    """A reference from a node attribute to a graph parameter (weights, biases, per-neuron constants)."""

    name: str

    def __str__(self) -> str:
        return f"@{self.name}"


AttrValue = int | float | str | bool | tuple[int, ...] | ParamRef


@dataclass(frozen=True)
class Node:
    """One op. `loc` names where it came from in the source model (module path and type), for diagnostics."""

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    type: TensorType | None = None
    loc: str = ""

    def attr(self, key: str, default: AttrValue | None = None) -> AttrValue | None:
        return dict(self.attrs).get(key, default)

    def param_refs(self) -> Iterator[tuple[str, ParamRef]]:
        for key, value in self.attrs:
            if isinstance(value, ParamRef):
                yield key, value

    def with_attrs(self, **changes: AttrValue | None) -> Node:
        """A copy with attributes replaced, added, or removed (value None)."""
        merged = dict(self.attrs)
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return replace(self, attrs=tuple(merged.items()))

    def describe(self) -> str:
        origin = f" (from {self.loc})" if self.loc else ""
        return f"node %{self.name} ({self.op}){origin}"
