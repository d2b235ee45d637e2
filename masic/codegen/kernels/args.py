"""What every kernel description shares: its C arguments (names, shapes, element types) and the traits some
kernels have (a sliding window over a padded input, several timesteps per call, a neuron epilogue)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from masic.ir.graph import TensorType
from masic.ir.ops import scratch_type
from masic.ir.shapes import window_out

if TYPE_CHECKING:
    from masic.codegen.kernels.pointwise import NeuronKernel

FLOAT = "float32"
SPIKE = "uint8"
BITS = "uint32"  # a word of 32 bit-packed spikes
HALF = "float16"  # a weight stored as IEEE half
INT8 = "int8"  # a weight stored as int8, with a float32 scale per output channel
SUM = "int32"  # the sums of an int8 layer over spikes
# IR element type -> a kernel argument's element type
STORAGE = {"f32": FLOAT, "spike": SPIKE, "bits": BITS, "f16": HALF, "i8": INT8}
WEIGHT_STORAGE = (FLOAT, HALF, INT8)  # the element types a layer kernel's weight may have
EXACT_FLOAT_TERMS = (1 << 24) // 127  # whole-number terms of at most 127 whose float32 sums are exact


def stored_shape(shape: tuple[int, int, int], block: int) -> tuple[int, ...]:
    """How a (C, H, W) activation is stored with channel block `block`: as is (NCHW) for 1, else (C/c, H, W, c)
    (NCHW{c}c, `masic.ir.ops.activation_block`)."""
    c, h, w = shape
    return shape if block == 1 else (c // block, h, w, block)


class KernelArgs:
    """Argument bookkeeping shared by all kernels; each kernel defines `arg_shapes` and a `spikes` field (the
    arguments holding spike tensors)."""

    symbol: str
    spikes: tuple[str, ...]

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every C pointer argument, keyed by name, in call order."""
        raise NotImplementedError

    def arg_names(self) -> tuple[str, ...]:
        """Names of the C pointer arguments, in call order."""
        return tuple(self.arg_shapes())

    def packed_args(self) -> tuple[str, ...]:
        """The arguments holding bit-packed spikes (words of 32), none unless a kernel says otherwise."""
        return ()

    def arg_dtype(self, name: str) -> str:
        """Element type of an argument: uint32 words of bit-packed spikes, uint8 for spikes, else float32."""
        if name in self.packed_args():
            return BITS
        return SPIKE if name in self.spikes else FLOAT

    def with_spikes(self, names: tuple[str, ...]) -> KernelArgs:
        """The same kernel with the arguments `names` (in call order) holding spikes."""
        return dataclasses.replace(self, spikes=names)

    def arg_bytes(self, name: str) -> int:
        """Bytes the kernel reads or writes through an argument."""
        return math.prod(self.arg_shapes()[name]) * np.dtype(self.arg_dtype(name)).itemsize

    def scratch_bytes(self) -> int:
        """Bytes of the `scratch` workspace argument (0: the kernel takes none)."""
        return self.arg_bytes("scratch") if "scratch" in self.arg_shapes() else 0


class WindowArgs(KernelArgs):
    """Padding of a sliding-window kernel (conv, pooling): `padding` (rows, columns) on both sides, except that
    `row_padding` (top, bottom), when given, pads the rows (a row patch of an image pads only at its border).
    `in_block` > 1 reads `x` stored NCHW{in_block}c (`stored_shape`). A padded input is first copied into the
    `scratch` argument, NCHW, in the type `masic.ir.ops.scratch_type` gives (the planner sizes it by that rule
    too)."""

    in_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    row_padding: tuple[int, int] | None
    in_block: int

    @property
    def window_op(self) -> str:
        """The IR op the kernel computes (a window op, `OpDef.window`)."""
        raise NotImplementedError

    def _check_in_block(self) -> None:
        if self.in_shape[0] % self.in_block:
            raise ValueError(f"{self.symbol}: NCHW{self.in_block}c splits {self.in_shape[0]} input channels")

    def pads(self) -> tuple[int, int, int]:
        """(top rows, bottom rows, columns on each side)."""
        top, bottom = self.row_padding or (self.padding[0], self.padding[0])
        return top, bottom, self.padding[1]

    def _scratch(self) -> TensorType | None:
        operand = TensorType(self.in_shape, "spike" if "x" in self.spikes else "f32")
        return scratch_type(self.window_op, operand, self.pads())

    def padded_shape(self) -> tuple[int, int, int] | None:
        """Shape of the padded input (the `scratch` argument), or None when nothing is padded."""
        scratch = self._scratch()
        return None if scratch is None else scratch.shape

    def arg_dtype(self, name: str) -> str:
        if name == "scratch":
            return STORAGE[self._scratch().dtype]
        return super().arg_dtype(name)

    def _out_hw(self, dilation: tuple[int, int]) -> tuple[int, int]:
        (_, h, w), (top, bottom, side) = self.in_shape, self.pads()
        return (
            window_out(h, self.kernel[0], self.stride[0], top + bottom, dilation[0]),
            window_out(w, self.kernel[1], self.stride[1], 2 * side, dilation[1]),
        )


class WeightArgs(KernelArgs):
    """A layer kernel (conv, dense) whose weight `w` is stored as `weight_dtype` (`masic.ir.weight_formats`):
    float32, float16 (converted to float32 as it is loaded) or int8, which adds the float32 argument `scale`, one
    per output channel, right after `w`. Over float32 activations an int8 layer sums x * float32(q) in float32.
    Over spikes its sums of q are whole numbers, exact in any order: in int32 (`integer_sums`), or in float32 where
    every sum stays below 2^24 in magnitude (`EXACT_FLOAT_TERMS` terms of at most 127), which a kernel vectorises
    as it does float32 sums (a conv: float32 multiply-adds take 4 lanes of NEON, as int32 ones, and need no
    widening). Either way the output is float32(sum) * scale, rounded on its own, plus the bias."""

    weight_dtype: str

    def _check_weight_dtype(self) -> None:
        if self.weight_dtype not in WEIGHT_STORAGE:
            raise ValueError(f"{self.symbol}: weights cannot be {self.weight_dtype}; kernels take {WEIGHT_STORAGE}")

    def spike_inputs(self) -> bool:
        """Whether the layer's inputs (every step's) are spikes."""
        raise NotImplementedError

    def terms(self) -> int:
        """The terms each output's sum adds."""
        raise NotImplementedError

    def float_sums_exact(self) -> bool:
        """Whether a float32 sum of int8 weights over spikes is exact (below 2^24 whatever the order): the kernels
        that gain from it (convs) then sum in float32."""
        return False

    @property
    def integer_sums(self) -> bool:
        """Whether the sums are int32 (int8 weights over spikes, unless float32 ones are exact and preferred)."""
        return self.weight_dtype == INT8 and self.spike_inputs() and not self.float_sums_exact()

    @property
    def sum_dtype(self) -> str:
        return SUM if self.integer_sums else FLOAT

    def _weight_shapes(self, shape: tuple[int, ...], out_channels: int) -> dict[str, tuple[int, ...]]:
        """w's shape, and int8's scale (O,) after it."""
        return {"w": shape, **({"scale": (out_channels,)} if self.weight_dtype == INT8 else {})}

    def arg_dtype(self, name: str) -> str:
        if name == "w":
            return self.weight_dtype
        return FLOAT if name == "scale" else super().arg_dtype(name)


class StepArgs(KernelArgs):
    """Arguments of a kernel that computes `steps` timesteps of a block in one call (a batched layer): each step
    has its own input and output argument."""

    steps: int

    def step_names(self, base: str) -> tuple[str, ...]:
        """The per-step arguments named `base`: itself for one step, base0 .. base{S-1} for more."""
        return (base,) if self.steps == 1 else tuple(f"{base}{t}" for t in range(self.steps))


class EpilogueArgs(KernelArgs):
    """A conv or dense kernel that can run a neuron update as its epilogue (a fused neuron, `Graph.epilogue`).

    With `neuron` (a `NeuronKernel` over the layer's outputs, its symbol empty) the kernel has no `y`: after its own
    arguments come the neuron's except `x` (state, output, per-neuron parameters), each of the layer's output
    shape, and each output goes through the update while still in registers, computed exactly as the separate
    kernels would (the layer's sum, then the neuron's float32 operations in order).
    """

    neuron: NeuronKernel | None

    def _check_epilogue(self) -> None:
        """A neuron's steps run one after another, so a kernel computing several steps in one call takes none."""
        if self.neuron is not None and getattr(self, "steps", 1) > 1:
            raise ValueError(f"{self.symbol}: a neuron epilogue needs one step per call, not {self.steps}")

    def _with_epilogue(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """The layer's argument shapes with `y` replaced by the neuron's arguments, when it has one."""
        if self.neuron is None:
            return shapes
        out = shapes.pop("y")
        return shapes | {name: out for name in self.neuron.arg_names() if name != "x"}
