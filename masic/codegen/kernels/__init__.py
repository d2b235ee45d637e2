"""Kernel descriptions: what each generated kernel computes, its static shapes and its C signature.

Each description is a frozen dataclass for one kernel instance (batch 1, fixed shapes); equal descriptions are one
kernel. Lowering (`masic.codegen.lower`) picks them, benchmarks and analyses read them, and `masic.codegen.tir`
turns each into a scheduled TVM PrimFunc with a plain C calling convention, `int32_t symbol(float* a, ...)`
returning 0, which the generated `model.c` calls directly. This package imports no TVM.

Arguments are float32, except those a kernel's `spikes` names (and a pool's padded copy of spikes, `scratch`):
spike tensors, one `uint8_t` 0 or 1 per element. Kernels read them as 0.0 / 1.0; neuron kernels write their spikes
`z` as bytes; max pooling, row kernels and copies of spikes stay bytes throughout. `AccumulateDenseKernel` is the
dense layer of a spike operand: it adds the weight rows of the active inputs instead of multiplying. Conv and dense
kernels take their weight `w` in its stored type (float32, float16, or int8 with a float32 `scale` per output
channel: `args.WeightArgs`, `masic.ir.weight_formats`) and can run a neuron update as their epilogue (`neuron`: a
fused neuron, `args.EpilogueArgs`). Spikes may also be bit-packed (`packed`: the IR's "bits",
`masic.ir.graph.DTYPES`), `uint32_t` words of 32 spikes: a neuron kernel then packs its `z` and the
accumulate-only kernel reads its `x` word by word.

- `args`: argument bookkeeping and the shared traits (sliding windows, timesteps per call, neuron epilogues);
- `layers`: convolution, dense (multiplying and accumulating), pooling;
- `pointwise`: neuron updates, element-wise functions, row copies.
"""

from masic.codegen.kernels.args import BITS, FLOAT, HALF, INT8, SPIKE, STORAGE, SUM
from masic.codegen.kernels.layers import (
    AccumulateDenseKernel,
    AdaptiveAvgPool2dKernel,
    Conv2dKernel,
    DenseKernel,
    Pool2dKernel,
)
from masic.codegen.kernels.pointwise import ElementwiseAddKernel, ElementwiseKernel, NeuronKernel, RowsKernel

Kernel = (
    Conv2dKernel
    | DenseKernel
    | AccumulateDenseKernel
    | Pool2dKernel
    | AdaptiveAvgPool2dKernel
    | NeuronKernel
    | ElementwiseAddKernel
    | ElementwiseKernel
    | RowsKernel
)

__all__ = [
    "BITS",
    "FLOAT",
    "HALF",
    "INT8",
    "SPIKE",
    "STORAGE",
    "SUM",
    "AccumulateDenseKernel",
    "AdaptiveAvgPool2dKernel",
    "Conv2dKernel",
    "DenseKernel",
    "ElementwiseAddKernel",
    "ElementwiseKernel",
    "Kernel",
    "NeuronKernel",
    "Pool2dKernel",
    "RowsKernel",
]
