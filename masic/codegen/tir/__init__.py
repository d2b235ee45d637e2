"""TIR builders: each kernel description (`masic.codegen.kernels`) as a scheduled TVM PrimFunc.

`prim_func(kernel, lanes)` gives the PrimFunc, with a plain C calling convention (`common.to_c_abi`), for a target
with `lanes` float32 vector lanes. Two constraints shape every builder:

* Kernels must never call `__TVMBackendAllocWorkspace`: every buffer of 1 KiB or more that is not an argument (e.g.
  a padded copy of the input) is an explicit `scratch` argument that the memory planner places in the arena.
  Accumulator tiles stay small (well under 1 KiB) so LLVM keeps them on the stack / in registers.
* Neuron updates and element-wise functions are the IR's own (`masic.ir.neurons`, `masic.ir.elementwise`), run
  by the TIR backend of their arithmetic (`arith`), so they are bit-exact against the reference interpreter.

Most kernels are TE computes scheduled with `tvm.s_tir.Schedule`; the schedules find their blocks by the names the
computes give them (`common.OUTPUT_BLOCK`, `common.ACC_BLOCK`, ...). Kernels whose loops a TE compute cannot say
(one statement per timestep, branches on data) are written with TVM's IR builder (`common.built`).

- `common`: C ABI, element types, tiles and parallel thresholds, the IR-builder frame;
- `arith`: the TIR backend of `masic.ir.arith`;
- `neuron`: neuron updates (the neuron kernel, packed spikes, the output stage that fuses a neuron into a layer);
- `window`: padding and the tiled schedule of sliding-window kernels;
- `conv`, `dense`, `pool`, `elementwise`: the kernels of each family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from tvm import tirx

from masic.codegen import kernels as K
from masic.codegen.tir.conv import conv2d
from masic.codegen.tir.dense import accumulate_dense, dense
from masic.codegen.tir.elementwise import elementwise, rows
from masic.codegen.tir.neuron import neuron
from masic.codegen.tir.pool import adaptive_avgpool2d, pool2d

# The builder of each kind of kernel description (the descriptions are final classes: no kind derives from another)
BUILDERS: Mapping[type[K.Kernel], Callable[..., tirx.PrimFunc]] = MappingProxyType(
    {
        K.Conv2dKernel: conv2d,
        K.DenseKernel: dense,
        K.AccumulateDenseKernel: accumulate_dense,
        K.Pool2dKernel: pool2d,
        K.AdaptiveAvgPool2dKernel: adaptive_avgpool2d,
        K.NeuronKernel: neuron,
        K.ElementwiseKernel: elementwise,
        K.ElementwiseAddKernel: elementwise,
        K.RowsKernel: rows,
    }
)


def prim_func(kernel: K.Kernel, lanes: int) -> tirx.PrimFunc:
    """The scheduled plain-C-ABI PrimFunc of `kernel` for a target with `lanes` float32 vector lanes."""
    builder = BUILDERS.get(type(kernel))
    if builder is None:
        raise TypeError(f"not a kernel: {kernel!r}")
    return builder(kernel, lanes)


__all__ = ["prim_func"]
