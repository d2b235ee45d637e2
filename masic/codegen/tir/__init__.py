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

from tvm import tirx

from masic.codegen import kernels as K
from masic.codegen.tir.conv import conv2d
from masic.codegen.tir.dense import accumulate_dense, dense
from masic.codegen.tir.elementwise import elementwise, rows
from masic.codegen.tir.neuron import neuron
from masic.codegen.tir.pool import adaptive_avgpool2d, pool2d


def prim_func(kernel: K.Kernel, lanes: int) -> tirx.PrimFunc:
    """The scheduled plain-C-ABI PrimFunc of `kernel` for a target with `lanes` float32 vector lanes."""
    match kernel:
        case K.Conv2dKernel():
            return conv2d(kernel, lanes)
        case K.DenseKernel():
            return dense(kernel, lanes)
        case K.AccumulateDenseKernel():
            return accumulate_dense(kernel, lanes)
        case K.Pool2dKernel():
            return pool2d(kernel, lanes)
        case K.AdaptiveAvgPool2dKernel():
            return adaptive_avgpool2d(kernel, lanes)
        case K.NeuronKernel():
            return neuron(kernel, lanes)
        case K.ElementwiseKernel() | K.ElementwiseAddKernel():
            return elementwise(kernel, lanes)
        case K.RowsKernel():
            return rows(kernel, lanes)
    raise TypeError(f"not a kernel: {kernel!r}")


__all__ = ["prim_func"]
