"""Descriptions of the layer kernels: convolution, dense layers (multiplying, or accumulating the weight rows of
active spikes), pooling. Static shapes, batch 1; the C signature of each is in its docstring."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from masic.codegen.kernels.args import (
    EXACT_FLOAT_TERMS,
    FLOAT,
    SPIKE,
    EpilogueArgs,
    KernelArgs,
    StepArgs,
    WeightArgs,
    WindowArgs,
    stored_shape,
)
from masic.ir.graph import words
from masic.ir.shapes import CONV_LAYOUT, weight_block

if TYPE_CHECKING:
    from masic.codegen.kernels.pointwise import NeuronKernel


@dataclass(frozen=True)
class Conv2dKernel(WeightArgs, WindowArgs, EpilogueArgs):
    """2-D convolution, NCHW without batch, weights in `weight_layout`: OIHW as in PyTorch, or "OIHW{ob}o"
    (blocks of ob output channels innermost, `masic.codegen.weights.stored_weight`), which selects the kernel
    vectorised along output channels.

    C signature: `int32_t symbol(float* x, W* w, [float* scale,] [float* b,] [float* scratch,] float* y)`.
    `scratch` (the zero-padded input) is present only when some padding is non-zero. W is the weight's element
    type and `scale` is present for int8 weights only (`WeightArgs`), here and in the dense kernels.
    """

    symbol: str
    in_shape: tuple[int, int, int]
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = True
    row_padding: tuple[int, int] | None = None
    weight_layout: str = CONV_LAYOUT
    spikes: tuple[str, ...] = ()
    neuron: NeuronKernel | None = None
    in_block: int = 1
    out_block: int = 1  # > 1: y (or the neuron's arguments) stored NCHW{out_block}c, the weight blocked alike
    weight_dtype: str = FLOAT  # `WeightArgs`

    @property
    def window_op(self) -> str:
        return "conv2d"

    def __post_init__(self) -> None:
        channels = self.in_shape[0]
        if channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{self.symbol}: channels {channels}->{self.out_channels} not divisible by groups")
        if (self.out_channels // self.groups) % weight_block(self.weight_layout):
            raise ValueError(f"{self.symbol}: layout {self.weight_layout} splits a group's output channels")
        if min(self.out_shape()) <= 0:
            raise ValueError(f"{self.symbol}: empty output shape {self.out_shape()}")
        self._check_in_block()
        self._check_weight_dtype()
        if self.out_block > 1 and self.out_block != weight_block(self.weight_layout):
            raise ValueError(f"{self.symbol}: NCHW{self.out_block}c output needs OIHW{self.out_block}o")

    def spike_inputs(self) -> bool:
        return "x" in self.spikes

    def terms(self) -> int:
        return self.in_shape[0] // self.groups * self.kernel[0] * self.kernel[1]

    def float_sums_exact(self) -> bool:
        # Float32 sums: a weight converted once per tile, then the float32 conv's multiply-adds. int32 ones cost
        # more: x86-64's vpmulld is a slow multi-uop instruction (a blocked 256-channel 28x28 conv over spikes took
        # 1.6x float32's time with int32 sums, 1.08x with float32 ones); NEON's mla is as fast as fmla but the
        # widening of the weights and inputs takes instructions of its own.
        return self.terms() <= EXACT_FLOAT_TERMS

    def out_shape(self) -> tuple[int, int, int]:
        """Output shape (O, OH, OW) by PyTorch's formula."""
        return (self.out_channels, *self._out_hw(self.dilation))

    def weight_shape(self) -> tuple[int, ...]:
        """Stored weight shape: (O, C/groups, kh, kw), or (O/ob, C/groups, kh, kw, ob) blocked."""
        block = weight_block(self.weight_layout)
        if block == 1:
            return (self.out_channels, self.in_shape[0] // self.groups, *self.kernel)
        return (self.out_channels // block, self.in_shape[0] // self.groups, *self.kernel, block)

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x (C,H,W), w (`weight_shape`), [b (O,)], [scratch: padded x], y (O,OH,OW) or the neuron's; x and y
        as stored (`stored_shape`)."""
        shapes: dict[str, tuple[int, ...]] = {
            "x": stored_shape(self.in_shape, self.in_block),
            **self._weight_shapes(self.weight_shape(), self.out_channels),
        }
        if self.bias:
            shapes["b"] = (self.out_channels,)
        if padded := self.padded_shape():
            shapes["scratch"] = padded
        shapes["y"] = stored_shape(self.out_shape(), self.out_block)
        return self._with_epilogue(shapes)


@dataclass(frozen=True)
class DenseKernel(WeightArgs, StepArgs, EpilogueArgs):
    """Fully connected layer `y = w @ x (+ b)`, w of shape (out, in) as torch.nn.Linear, for `steps` timesteps
    at once: each step has its own input and output, and the weights are read once for all of them.

    C signature: `int32_t symbol(float* x, W* w, [float* scale,] [float* b,] float* y)`, and with S = `steps` > 1
    `int32_t symbol(float* x0, ..., float* x{S-1}, W* w, [float* scale,] [float* b,] float* y0, ..., float* y{S-1})`.
    """

    symbol: str
    in_features: int
    out_features: int
    bias: bool = True
    steps: int = 1
    spikes: tuple[str, ...] = ()
    neuron: NeuronKernel | None = None  # one step per call only
    weight_dtype: str = FLOAT  # `WeightArgs`

    def __post_init__(self) -> None:
        self._check_epilogue()
        self._check_weight_dtype()

    def spike_inputs(self) -> bool:
        return set(self.step_names("x")) <= set(self.spikes)

    def terms(self) -> int:
        return self.in_features

    def out_shape(self) -> tuple[int]:
        """Output shape (out_features,)."""
        return (self.out_features,)

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x (in,) per step, w (out, in), [b (out,)], y (out,) per step or the neuron's."""
        xs = dict.fromkeys(self.step_names("x"), (self.in_features,))
        ys = dict.fromkeys(self.step_names("y"), self.out_shape())
        bias = {"b": (self.out_features,)} if self.bias else {}
        w = self._weight_shapes((self.out_features, self.in_features), self.out_features)
        return self._with_epilogue({**xs, **w, **bias, **ys})


@dataclass(frozen=True)
class AccumulateDenseKernel(WeightArgs, StepArgs, EpilogueArgs):
    """Dense layer of a spike operand, `y = W x (+ b)` with x in {0, 1}: for each active input k, row k of the
    transposed weight `w` (in, out), contiguous, is added into the outputs. No multiplications, and only the rows
    of active inputs are read, so it gains from low spike rates.

    With `steps` S > 1 one call computes S timesteps of a block and reads each weight row once for all of them:
    a row is read when any step's input is active and added into each active step's outputs.
    C signature: `int32_t symbol(uint8_t* x, W* w, [float* scale,] [float* b,] float* y)`, or for S > 1
    `symbol(uint8_t* x0, ..., uint8_t* x{S-1}, W* w, [float* scale,] [float* b,] float* y0, ..., float* y{S-1})`.
    With `packed` (one step only) x is bit-packed, `uint32_t* x` of ceil(in / 32) words: a zero word skips 32
    inputs at once.
    """

    symbol: str
    in_features: int
    out_features: int
    bias: bool = True
    steps: int = 1
    neuron: NeuronKernel | None = None  # one step per call only
    spikes: tuple[str, ...] = ()  # besides the inputs, always spikes: a neuron epilogue's spike output
    packed: bool = False
    weight_dtype: str = FLOAT  # `WeightArgs`

    def __post_init__(self) -> None:
        self._check_weight_dtype()
        if self.steps < 1:
            raise ValueError(f"{self.symbol}: steps must be at least 1, got {self.steps}")
        self._check_epilogue()
        if self.packed and self.steps > 1:  # the layout pass packs spikes only for layers of one step per call
            raise ValueError(f"{self.symbol}: bit-packed spikes are read one step per call")

    def packed_args(self) -> tuple[str, ...]:
        return ("x",) if self.packed else ()

    def spike_inputs(self) -> bool:
        return True

    def terms(self) -> int:
        return self.in_features

    def arg_dtype(self, name: str) -> str:
        unpacked_inputs = name in self.step_names("x") and not self.packed
        return SPIKE if unpacked_inputs else super().arg_dtype(name)

    def with_spikes(self, names: tuple[str, ...]) -> AccumulateDenseKernel:
        if not self.packed and not set(self.step_names("x")) <= set(names):
            raise ValueError(f"{self.symbol}: reads spikes {self.step_names('x')}, got {names}")
        return dataclasses.replace(self, spikes=tuple(n for n in names if n not in self.step_names("x")))

    def out_shape(self) -> tuple[int]:
        """Output shape (out_features,) of each step."""
        return (self.out_features,)

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x (in,) per step (packed: (ceil(in / 32),) words), w (in, out), [b (out,)], y (out,) per step or the
        neuron's."""
        x_shape = (words(self.in_features),) if self.packed else (self.in_features,)
        xs = {name: x_shape for name in self.step_names("x")}
        bias = {"b": (self.out_features,)} if self.bias else {}
        ys = {name: self.out_shape() for name in self.step_names("y")}
        w = self._weight_shapes((self.in_features, self.out_features), self.out_features)
        return self._with_epilogue({**xs, **w, **bias, **ys})


@dataclass(frozen=True)
class Pool2dKernel(WindowArgs):
    """Max, average or sum 2-D pooling with PyTorch semantics (ceil_mode=False; avg counts padding; max pads -inf;
    sum is NIR's SumPool2d, zero padding).

    C signature: `int32_t symbol(float* x, [float* scratch,] float* y)`; `scratch` holds the padded input.
    """

    symbol: str
    kind: str
    in_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    row_padding: tuple[int, int] | None = None
    spikes: tuple[str, ...] = ()
    in_block: int = 1

    @property
    def window_op(self) -> str:
        return f"{self.kind}pool2d"

    def __post_init__(self) -> None:
        if self.kind not in ("max", "avg", "sum"):
            raise ValueError(f"{self.symbol}: unknown pooling kind {self.kind!r}")
        if min(self.out_shape()) <= 0:
            raise ValueError(f"{self.symbol}: empty output shape {self.out_shape()}")
        self._check_in_block()

    def out_shape(self) -> tuple[int, int, int]:
        """Output shape (C, OH, OW) by PyTorch's formula."""
        return (self.in_shape[0], *self._out_hw((1, 1)))

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x (C,H,W) as stored (`stored_shape`), [scratch: padded x], y (C,OH,OW)."""
        padded = self.padded_shape()
        x = stored_shape(self.in_shape, self.in_block)
        return {"x": x, **({"scratch": padded} if padded else {}), "y": self.out_shape()}


@dataclass(frozen=True)
class AdaptiveAvgPool2dKernel(KernelArgs):
    """torch.nn.AdaptiveAvgPool2d: output cell (i, j) is the mean of input rows [floor(i*H/OH), ceil((i+1)*H/OH))
    and the same columns. For the windows that divide evenly, lowering uses `Pool2dKernel` instead.

    C signature: `int32_t symbol(float* x, float* y)`.
    """

    symbol: str
    in_shape: tuple[int, int, int]
    output: tuple[int, int]
    spikes: tuple[str, ...] = ()

    def out_shape(self) -> tuple[int, int, int]:
        """Output shape (C, OH, OW)."""
        return (self.in_shape[0], *self.output)

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x (C,H,W), y (C,OH,OW)."""
        return {"x": self.in_shape, "y": self.out_shape()}
