"""Kernel descriptions with static shapes and their scheduled TVM PrimFuncs.

Each dataclass below describes one kernel instance (batch 1, fixed shapes). ``prim_func`` turns it into a
scheduled TVM PrimFunc that uses a plain C calling convention, so the generated ``model.c`` can call it directly:
``int32_t symbol(float* a, float* b, ...)`` returning 0, with no TVM runtime or TVM-FFI packed API involved.

Arguments are float32, except those a kernel's ``spikes`` names (and a pool's ``scratch`` when ``x`` is one): spike
tensors, one ``uint8_t`` 0 or 1 per element. Kernels read them as 0.0 / 1.0; neuron kernels write their spikes
``z`` as bytes; max pooling, row kernels and copies of spikes stay bytes throughout. ``AccumulateDenseKernel`` is
the dense layer of a spike operand: it adds the weight rows of the active inputs instead of multiplying. Conv and
dense kernels can run a neuron update as their epilogue (``neuron``: a fused neuron, see ``_NeuronEpilogue``).
Spikes may also be bit-packed (``packed``: the IR's "bits", ``masic.ir.graph.DTYPES``), ``uint32_t`` words of 32
spikes: a neuron kernel then packs its ``z`` and the accumulate-only kernel reads its ``x`` word by word.

Two constraints shape everything here:

* Kernels must never call ``__TVMBackendAllocWorkspace``: every buffer of 1 KiB or more that is not an argument
  (e.g. a padded copy of the input) is an explicit ``scratch`` argument that the memory planner places in the arena.
  Accumulator tiles stay small (well under 1 KiB) so LLVM keeps them on the stack / in registers.
* Neuron updates must be bit-exact against a float32 numpy implementation with the same operation order, so
  fused multiply-adds are blocked explicitly (see ``_no_contract``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tvm.script
from tvm import ir, s_tir, te, tirx
from tvm.s_tir.schedule import SBlockRV
from tvm.script import tirx as T

from masic.ir.graph import WORD_BITS, words
from masic.ir.ops import CONV_LAYOUT, weight_block

FLOAT = "float32"
SPIKE = "uint8"
BITS = "uint32"  # a word of 32 bit-packed spikes

# Accumulator tiles above this many floats would turn into workspace allocations (TVM heap-allocates internal
# buffers of 1 KiB or more); stay below it.
_MAX_TILE_FLOATS = 255
# Accumulator vectors per tile: enough independent FMAs to hide latency, few enough to stay in registers.
_MAX_ACC_VECTORS = 16
# Timesteps a batched dense kernel computes together (see `_dense_steps`).
_STEP_GROUP = 4
# Element-wise loops shorter than this many elements run on one thread: a parallel launch costs a few
# microseconds, more than the work it would share.
_PARALLEL_MIN_ELEMENTS = 1 << 15
# Likewise reductions (conv, dense, pooling) of fewer multiply-accumulates: waking the pool for a 64x8x8 max pool
# made it 30x slower than on one thread (bench/speed.py), while a 1024x1024 dense gains 2x from a second core.
_PARALLEL_MIN_WORK = 1 << 16
# The conv vectorised along output channels does about 4x the multiply-accumulates per microsecond on the small
# maps it runs (MobileNetV2's 1x1 convs of 2x2 maps: 1-5 us on one thread, 3x that on two on a busy machine).
_BLOCKED_PARALLEL_MIN_WORK = 1 << 18


def _pair_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """PyTorch's output-size formula for one spatial dimension (floor mode), ``padding`` counting both sides."""
    return (size + padding - dilation * (kernel - 1) - 1) // stride + 1


def _stored_shape(shape: tuple[int, int, int], block: int) -> tuple[int, ...]:
    """How a (C, H, W) activation is stored with channel block ``block``: as is (NCHW) for 1, else (C/c, H, W, c)
    (NCHW{c}c, ``masic.ir.ops.activation_block``)."""
    c, h, w = shape
    return shape if block == 1 else (c // block, h, w, block)


# --------------------------------------------------------------------------------------------------------------
# Kernel descriptions
# --------------------------------------------------------------------------------------------------------------


class _KernelArgs:
    """Argument bookkeeping shared by all kernels; each kernel defines ``arg_shapes`` and a ``spikes`` field (the
    arguments holding spike tensors)."""

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
        """Element type of an argument: uint32 words of bit-packed spikes, uint8 for spikes (the padded copy of
        spikes too), else float32."""
        if name in self.packed_args():
            return BITS
        return SPIKE if name in self.spikes or (name == "scratch" and "x" in self.spikes) else FLOAT

    def with_spikes(self, names: tuple[str, ...]) -> _KernelArgs:
        """The same kernel with the arguments `names` (in call order) holding spikes."""
        return dataclasses.replace(self, spikes=names)

    def arg_bytes(self, name: str) -> int:
        """Bytes the kernel reads or writes through an argument."""
        return math.prod(self.arg_shapes()[name]) * np.dtype(self.arg_dtype(name)).itemsize

    def scratch_bytes(self) -> int:
        """Bytes of the ``scratch`` workspace argument (0: the kernel takes none)."""
        return self.arg_bytes("scratch") if "scratch" in self.arg_shapes() else 0


class _WindowArgs(_KernelArgs):
    """Padding of a sliding-window kernel (conv, pooling): ``padding`` (rows, columns) on both sides, except that
    ``row_padding`` (top, bottom), when given, pads the rows (a row patch of an image pads only at its border).
    ``in_block`` > 1 reads ``x`` stored NCHW{in_block}c (``_stored_shape``); the padded copy (scratch) is NCHW."""

    in_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    row_padding: tuple[int, int] | None
    in_block: int

    def _check_in_block(self) -> None:
        if self.in_shape[0] % self.in_block:
            raise ValueError(f"{self.symbol}: NCHW{self.in_block}c splits {self.in_shape[0]} input channels")

    def pads(self) -> tuple[int, int, int]:
        """(top rows, bottom rows, columns on each side)."""
        top, bottom = self.row_padding or (self.padding[0], self.padding[0])
        return top, bottom, self.padding[1]

    def padded_shape(self) -> tuple[int, int, int] | None:
        """Shape of the padded input (the ``scratch`` argument), or None when nothing is padded."""
        (c, h, w), (top, bottom, side) = self.in_shape, self.pads()
        return (c, h + top + bottom, w + 2 * side) if top or bottom or side else None

    def _out_hw(self, dilation: tuple[int, int]) -> tuple[int, int]:
        (_, h, w), (top, bottom, side) = self.in_shape, self.pads()
        return (
            _pair_out(h, self.kernel[0], self.stride[0], top + bottom, dilation[0]),
            _pair_out(w, self.kernel[1], self.stride[1], 2 * side, dilation[1]),
        )


class _NeuronEpilogue(_KernelArgs):
    """A conv or dense kernel that can run a neuron update as its epilogue (a fused neuron, `Graph.epilogue`).

    With ``neuron`` (a ``NeuronKernel`` over the layer's outputs, its symbol empty) the kernel has no ``y``: after
    its own arguments come the neuron's except ``x`` (state, output, per-neuron parameters), each of the layer's
    output shape, and each output goes through the update while still in registers, computed exactly as the
    separate kernels would (the layer's sum, then the neuron's float32 operations in order).
    """

    neuron: NeuronKernel | None

    def _check_epilogue(self) -> None:
        """A neuron's steps run one after another, so a kernel computing several steps in one call takes none."""
        if self.neuron is not None and getattr(self, "steps", 1) > 1:
            raise ValueError(f"{self.symbol}: a neuron epilogue needs one step per call, not {self.steps}")

    def _with_epilogue(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """The layer's argument shapes with ``y`` replaced by the neuron's arguments, when it has one."""
        if self.neuron is None:
            return shapes
        out = shapes.pop("y")
        return shapes | {name: out for name in self.neuron.arg_names() if name != "x"}


@dataclass(frozen=True)
class Conv2dKernel(_WindowArgs, _NeuronEpilogue):
    """2-D convolution, NCHW without batch, weights in ``weight_layout``: OIHW as in PyTorch, or "OIHW{ob}o"
    (blocks of ob output channels innermost, ``masic.codegen.weights.stored_weight``), which selects the kernel
    vectorised along output channels.

    C signature: ``int32_t symbol(float* x, float* w, [float* b,] [float* scratch,] float* y)``.
    ``scratch`` (the zero-padded input) is present only when some padding is non-zero.
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

    def arg_dtype(self, name: str) -> str:
        """As every kernel's, but the padded input (scratch) is float32 also for spikes: each input spike is then
        converted once, not once per block of outputs and tap (vgg11's 128x8x8->256 conv of spikes: 215 us with a
        byte copy, against 121 us on float32 input)."""
        return FLOAT if name == "scratch" else super().arg_dtype(name)

    def __post_init__(self) -> None:
        channels = self.in_shape[0]
        if channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{self.symbol}: channels {channels}->{self.out_channels} not divisible by groups")
        if (self.out_channels // self.groups) % weight_block(self.weight_layout):
            raise ValueError(f"{self.symbol}: layout {self.weight_layout} splits a group's output channels")
        if min(self.out_shape()) <= 0:
            raise ValueError(f"{self.symbol}: empty output shape {self.out_shape()}")
        self._check_in_block()
        if self.out_block > 1 and self.out_block != weight_block(self.weight_layout):
            raise ValueError(f"{self.symbol}: NCHW{self.out_block}c output needs OIHW{self.out_block}o")

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
        """x (C,H,W), w (``weight_shape``), [b (O,)], [scratch: padded x], y (O,OH,OW) or the neuron's; x and y
        as stored (``_stored_shape``)."""
        shapes: dict[str, tuple[int, ...]] = {
            "x": _stored_shape(self.in_shape, self.in_block),
            "w": self.weight_shape(),
        }
        if self.bias:
            shapes["b"] = (self.out_channels,)
        if padded := self.padded_shape():
            shapes["scratch"] = padded
        shapes["y"] = _stored_shape(self.out_shape(), self.out_block)
        return self._with_epilogue(shapes)


class _StepArgs(_KernelArgs):
    """Arguments of a kernel that computes ``steps`` timesteps of a block in one call (a batched layer): each step
    has its own input and output argument."""

    steps: int

    def step_names(self, base: str) -> tuple[str, ...]:
        """The per-step arguments named `base`: itself for one step, base0 .. base{S-1} for more."""
        return (base,) if self.steps == 1 else tuple(f"{base}{t}" for t in range(self.steps))


@dataclass(frozen=True)
class DenseKernel(_StepArgs, _NeuronEpilogue):
    """Fully connected layer ``y = w @ x (+ b)``, w of shape (out, in) as torch.nn.Linear, for ``steps`` timesteps
    at once: each step has its own input and output, and the weights are read once for all of them.

    C signature: ``int32_t symbol(float* x, float* w, [float* b,] float* y)``, and with S = ``steps`` > 1
    ``int32_t symbol(float* x0, ..., float* x{S-1}, float* w, [float* b,] float* y0, ..., float* y{S-1})``.
    """

    symbol: str
    in_features: int
    out_features: int
    bias: bool = True
    steps: int = 1
    spikes: tuple[str, ...] = ()
    neuron: NeuronKernel | None = None  # one step per call only

    def __post_init__(self) -> None:
        self._check_epilogue()

    def out_shape(self) -> tuple[int]:
        """Output shape (out_features,)."""
        return (self.out_features,)

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x (in,) per step, w (out, in), [b (out,)], y (out,) per step or the neuron's."""
        xs = dict.fromkeys(self.step_names("x"), (self.in_features,))
        ys = dict.fromkeys(self.step_names("y"), self.out_shape())
        bias = {"b": (self.out_features,)} if self.bias else {}
        return self._with_epilogue({**xs, "w": (self.out_features, self.in_features), **bias, **ys})


@dataclass(frozen=True)
class AccumulateDenseKernel(_StepArgs, _NeuronEpilogue):
    """Dense layer of a spike operand, ``y = W x (+ b)`` with x in {0, 1}: for each active input k, row k of the
    transposed weight ``w`` (in, out), contiguous, is added into the outputs. No multiplications, and only the rows
    of active inputs are read, so it gains from low spike rates.

    With ``steps`` S > 1 one call computes S timesteps of a block and reads each weight row once for all of them:
    a row is read when any step's input is active and added into each active step's outputs.
    C signature: ``int32_t symbol(uint8_t* x, float* w, [float* b,] float* y)``, or for S > 1
    ``symbol(uint8_t* x0, ..., uint8_t* x{S-1}, float* w, [float* b,] float* y0, ..., float* y{S-1})``.
    With ``packed`` (one step only) x is bit-packed, ``uint32_t* x`` of ceil(in / 32) words: a zero word skips 32
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

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"{self.symbol}: steps must be at least 1, got {self.steps}")
        self._check_epilogue()
        if self.packed and self.steps > 1:  # the layout pass packs spikes only for layers of one step per call
            raise ValueError(f"{self.symbol}: bit-packed spikes are read one step per call")

    def packed_args(self) -> tuple[str, ...]:
        return ("x",) if self.packed else ()

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
        return self._with_epilogue({**xs, "w": (self.in_features, self.out_features), **bias, **ys})


@dataclass(frozen=True)
class Pool2dKernel(_WindowArgs):
    """Max, average or sum 2-D pooling with PyTorch semantics (ceil_mode=False; avg counts padding; max pads -inf;
    sum is NIR's SumPool2d, zero padding).

    C signature: ``int32_t symbol(float* x, [float* scratch,] float* y)``; ``scratch`` holds the padded input.
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
        """x (C,H,W) as stored (``_stored_shape``), [scratch: padded x], y (C,OH,OW)."""
        padded = self.padded_shape()
        x = _stored_shape(self.in_shape, self.in_block)
        return {"x": x, **({"scratch": padded} if padded else {}), "y": self.out_shape()}


@dataclass(frozen=True)
class _NeuronModel:
    """Static description of one neuron kind: state buffers, output buffer, parameter names."""

    state: tuple[str, ...]
    output: str
    params: tuple[str, ...]


NEURON_MODELS: dict[str, _NeuronModel] = {
    "lif": _NeuronModel(("v", "i"), "z", ("dt_tau_mem", "neg_dt_tau_syn", "v_leak", "v_th", "v_reset")),
    "lif_box": _NeuronModel(("v",), "z", ("dt_tau_mem", "v_leak", "v_th", "v_reset")),
    "lif_box_subtract": _NeuronModel(("v",), "z", ("dt_tau_mem", "v_leak", "v_th", "v_reset")),
    "li": _NeuronModel(("v", "i"), "out", ("dt_tau_mem", "neg_dt_tau_syn", "v_leak")),
    "li_box": _NeuronModel(("v",), "out", ("dt_tau_mem", "v_leak")),
    "iaf": _NeuronModel(("v",), "z", ("v_th", "v_reset")),
}


@dataclass(frozen=True)
class NeuronKernel(_KernelArgs):
    """Element-wise neuron update over ``n`` neurons; state is updated in place.

    ``params`` lists every parameter of the kind (see ``NEURON_MODELS``) exactly once: a float is baked in as a
    float32 constant, None makes it an extra per-neuron ``float*`` argument, appended in the order listed.
    C signature: ``int32_t symbol(float* x, <state...>, float* <z|out>, <per-neuron params...>)``, e.g. for "lif"
    ``symbol(x, v, i, z, ...)``. x and the output must not alias the state buffers. With ``probe`` (a state name)
    the output buffer receives that state's new value instead of the spikes. With ``packed`` the spikes are
    bit-packed: ``uint32_t* z`` of ceil(n / 32) words, neuron k's spike bit k % 32 of word k // 32.
    """

    symbol: str
    kind: str
    n: int
    params: tuple[tuple[str, float | None], ...]
    probe: str = ""
    spikes: tuple[str, ...] = ()
    packed: bool = False

    def __post_init__(self) -> None:
        if self.kind not in NEURON_MODELS:
            raise ValueError(f"{self.symbol}: unknown neuron kind {self.kind!r}")
        names = sorted(name for name, _ in self.params)
        if names != sorted(NEURON_MODELS[self.kind].params):
            raise ValueError(f"{self.symbol}: {self.kind} needs parameters {NEURON_MODELS[self.kind].params}")
        if self.probe and self.probe not in NEURON_MODELS[self.kind].state:
            raise ValueError(f"{self.symbol}: {self.kind} has no state {self.probe!r} to probe")
        if self.packed and (self.probe or NEURON_MODELS[self.kind].output != "z"):
            raise ValueError(f"{self.symbol}: only spikes are bit-packed, and {self.kind} outputs none here")

    def packed_args(self) -> tuple[str, ...]:
        return ("z",) if self.packed else ()

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every argument holds one float per neuron, but packed spikes ``z`` (ceil(n / 32) words)."""
        model = NEURON_MODELS[self.kind]
        per_neuron = (name for name, value in self.params if value is None)
        shapes = {name: (self.n,) for name in ("x", *model.state, model.output, *per_neuron)}
        return shapes | ({"z": (words(self.n),)} if self.packed else {})


@dataclass(frozen=True)
class ElementwiseAddKernel(_KernelArgs):
    """``y = a + b`` over n floats. C signature: ``int32_t symbol(float* a, float* b, float* y)``."""

    symbol: str
    n: int
    spikes: tuple[str, ...] = ()

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """a, b, y: (n,)."""
        return {"a": (self.n,), "b": (self.n,), "y": (self.n,)}


@dataclass(frozen=True)
class AdaptiveAvgPool2dKernel(_KernelArgs):
    """torch.nn.AdaptiveAvgPool2d: output cell (i, j) is the mean of input rows [floor(i*H/OH), ceil((i+1)*H/OH))
    and the same columns. For the windows that divide evenly, lowering uses ``Pool2dKernel`` instead.

    C signature: ``int32_t symbol(float* x, float* y)``.
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


@dataclass(frozen=True)
class RowsKernel(_KernelArgs):
    """Rows of (C, H_k, W) operands stacked: y holds rows [lo_k, hi_k) of x0, then those of x1, and so on. One
    operand makes a row crop (an image patch's input rows), whole operands the concat of row patches. Each
    channel's rows are contiguous, but a channel's block of rows is not, so this is no flat copy.

    C signature: ``int32_t symbol(float* x0, ..., float* y)``.
    """

    symbol: str
    in_shapes: tuple[tuple[int, int, int], ...]
    rows: tuple[tuple[int, int], ...]  # (lo, hi) taken from each operand
    spikes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.in_shapes) or not self.rows:
            raise ValueError(f"{self.symbol}: one row range per operand, and at least one operand")
        if any((c, w) != (self.in_shapes[0][0], self.in_shapes[0][2]) for c, _, w in self.in_shapes):
            raise ValueError(f"{self.symbol}: operands differ in channels or width: {self.in_shapes}")
        if any(not 0 <= lo < hi <= h for (lo, hi), (_, h, _) in zip(self.rows, self.in_shapes, strict=True)):
            raise ValueError(f"{self.symbol}: row ranges {self.rows} outside operands {self.in_shapes}")

    def out_shape(self) -> tuple[int, int, int]:
        """(C, total rows taken, W)."""
        c, _, w = self.in_shapes[0]
        return (c, sum(hi - lo for lo, hi in self.rows), w)

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x0 .. x{n-1} as given, y (C, rows, W)."""
        return {**{f"x{k}": shape for k, shape in enumerate(self.in_shapes)}, "y": self.out_shape()}


@dataclass(frozen=True)
class _ElementwiseFn:
    """An element-wise function: the names of its operands, and whether it takes a parameter ``p``."""

    operands: tuple[str, ...]
    param: bool
    body: Callable[..., ir.Expr]  # (operand expressions..., [p]) -> value


ELEMENTWISE_FNS: dict[str, _ElementwiseFn] = {
    "copy": _ElementwiseFn(("x",), False, lambda x: x),
    "fill": _ElementwiseFn((), True, lambda p: p),
    "scale": _ElementwiseFn(("x",), True, lambda x, p: x * p),
    "offset": _ElementwiseFn(("x",), True, lambda x, p: x + p),
    "threshold": _ElementwiseFn(("x",), True, lambda x, p: tirx.Select(x > p, _f32(1.0), _f32(0.0))),
    "relu": _ElementwiseFn(("x",), False, lambda x: tirx.max(x, _f32(0.0))),
    "sub": _ElementwiseFn(("a", "b"), False, lambda a, b: a - b),
    "mul": _ElementwiseFn(("a", "b"), False, lambda a, b: a * b),
    "select": _ElementwiseFn(("c", "a", "b"), False, lambda c, a, b: tirx.Select(c != _f32(0.0), a, b)),
}


@dataclass(frozen=True)
class ElementwiseKernel(_KernelArgs):
    """``y = fn(operands..., p)`` over n floats, one float32 rounding per operation (PyTorch's results exactly).

    ``fn`` is a key of ``ELEMENTWISE_FNS``. For functions with a parameter, ``constant`` bakes it in as a float32;
    None makes it a per-element ``float* p`` argument after the operands.
    C signature: ``int32_t symbol(float* <operands...>, [float* p,] float* y)``, e.g. ``scale(x, y)``.
    """

    symbol: str
    fn: str
    n: int
    constant: float | None = None
    spikes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.fn not in ELEMENTWISE_FNS:
            raise ValueError(f"{self.symbol}: unknown element-wise function {self.fn!r}")
        if self.constant is not None and not ELEMENTWISE_FNS[self.fn].param:
            raise ValueError(f"{self.symbol}: {self.fn} takes no parameter")

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every argument holds n floats."""
        fn = ELEMENTWISE_FNS[self.fn]
        param = ("p",) if fn.param and self.constant is None else ()
        return {name: (self.n,) for name in (*fn.operands, *param, "y")}


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


# --------------------------------------------------------------------------------------------------------------
# Shared helpers: plain C ABI and common schedule steps
# --------------------------------------------------------------------------------------------------------------


def _to_c_abi(func: tirx.PrimFunc, symbol: str, arg_names: Sequence[str], noalias: bool = True) -> tirx.PrimFunc:
    """Give a ``te.create_prim_func`` PrimFunc the plain C calling convention.

    Every BufferType parameter becomes a typed ``float*`` parameter plus a ``DeclBuffer`` over it (what the old
    MakeUnpackedAPI did); ``calling_conv: 1`` then makes MakePackedAPI leave the function alone, so LLVM emits
    ``int32_t symbol(float*, ...)`` with no TVM-FFI symbols. ``arg_names[k]`` names the pointer for the k-th
    buffer; buffers with the same name share one pointer (in-place update), and pointers appear in order of first
    use. Aliasing buffers require ``noalias=False``.
    """
    if len(arg_names) != len(func.params):
        raise ValueError(f"{symbol}: {len(arg_names)} names for {len(func.params)} buffers")
    pointers: dict[str, tirx.Var] = {}
    decls = []
    for name, buf in zip(arg_names, func.params, strict=True):
        if name not in pointers:
            pointers[name] = tirx.Var(name, ir.PointerType(ir.PrimType(buf.dtype)))
        decls.append(tirx.DeclBuffer(buf, data=pointers[name]))
    attrs = func.attrs if noalias else func.without_attr("tirx.noalias").attrs
    plain = tirx.PrimFunc(list(pointers.values()), tirx.SeqStmt([*decls, func.body]), ir.PrimType("int32"), attrs)
    return plain.with_attr({"calling_conv": 1, "global_symbol": symbol})


def _no_contract(product: ir.Expr) -> ir.Expr:
    """Stop LLVM from fusing ``product`` into a following add (FMA).

    TVM's LLVM code generator turns ``a + b * c`` into ``llvm.fmuladd`` and LLVM lowers that (and contracts
    plain fmul/fadd pairs) to ``vfmadd``/``fmla``, which rounds once instead of twice. The neuron updates must
    round after the multiply to match numpy (and PyTorch/Norse) bit for bit, since one ulp can flip a spike at
    threshold. ``llvm.arithmetic.fence`` is an identity that optimisations may not look through, so the
    multiply stays a separately rounded operation; it vectorises and costs nothing at run time.
    NB: in TVM 0.27 ``call_llvm_pure_intrin`` takes no ``num_signature`` argument any more.
    """
    return tirx.call_llvm_pure_intrin(FLOAT, "llvm.arithmetic.fence", product)


def _placeholder(k: Kernel, name: str) -> te.Tensor:
    """The tensor of argument ``name``, in its element type."""
    return te.placeholder(k.arg_shapes()[name], k.arg_dtype(name), name=name)


def _dtype(value: ir.Expr) -> str:
    """The element type of an expression (a tensor element, ``x[i]``, names it ``dtype``; other expressions ``ty``)."""
    return str(getattr(value, "dtype", None) or value.ty)


def _float(value: ir.Expr) -> ir.Expr:
    """A loaded element as float32: a spike's byte reads as 0.0 or 1.0."""
    return _as(FLOAT, value)


def _as(dtype: str, value: ir.Expr) -> ir.Expr:
    """``value`` stored as ``dtype``: a 0.0 / 1.0 spike as a byte."""
    return value if _dtype(value) == dtype else tirx.Cast(dtype, value)


def _f32(value: float) -> ir.Expr:
    """A float32 constant holding exactly ``np.float32(value)`` (rounded here, so that any constant folding TVM
    does in double precision starts from the float32 value)."""
    return tirx.const(float(np.float32(value)), FLOAT)


def _vector_tile(extent: int, lanes: int, limit: int | None = None) -> int:
    """The divisor of ``extent`` (at most 4 vectors wide, and at most ``limit``) that fills vector registers best,
    the widest on ties (wider tiles share each weight broadcast across more lanes: ~6% on conv 64->64 32x32 with 16
    lanes).

    Tiles must divide the loop: a split with a remainder leaves a predicate in the loop body, and TVM's vectorizer
    then scalarises the whole loop. A tile that is not a multiple of ``lanes`` (e.g. 28 columns with 16 lanes, or
    13 with 4) still vectorizes; LLVM splits it into full and partial vector operations.
    """
    divisors = [d for d in range(1, min(extent, 4 * lanes, limit or extent) + 1) if extent % d == 0]
    return max(divisors, key=lambda d: (d / (math.ceil(d / lanes) * lanes), d))


def _vectorize_flat(sch: s_tir.Schedule, block: SBlockRV, lanes: int, n: int) -> None:
    """Fuse all loops of an element-wise block, vectorize by a divisor tile, parallelise big loops."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    tile = _vector_tile(n, lanes)
    if tile == 1:
        return
    outer, inner = sch.split(fused, [None, tile])
    if n >= _PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)
    sch.vectorize(inner)


def _schedule_pad(sch: s_tir.Schedule, pad: SBlockRV, parallel: bool) -> None:
    """Padding writes its own buffer (inlining it into the consumer would block vectorisation): one channel per
    parallel task."""
    if parallel:
        sch.parallel(sch.get_loops(pad)[0])


def _schedule_tiled_reduction(
    sch: s_tir.Schedule,
    acc: SBlockRV,
    out: SBlockRV,
    lanes: int,
    parallel: bool,
) -> None:
    """Register-tiled schedule shared by conv2d and pooling.

    ``out`` is an element-wise epilogue (bias, divide, copy) over (C, H, W) reading ``acc``, a reduction over the
    same space. The output is tiled by ``tile_c`` channels x ``tile_x`` columns, sized to fill the vector
    registers without spilling and to divide the loops exactly. ``acc`` is computed per tile into a small buffer
    (compacted to tile size, so LLVM keeps it in registers), with the reduction loops outside the tile so each
    input vector and weight broadcast feeds several accumulators. The (channel-tile, row) loops run in parallel
    (when `parallel`); the column loop of the tile is vectorized.
    """
    c, h, w = sch.get_loops(out)
    channels, width = (int(sch.get(loop).extent) for loop in (c, w))
    tile_x = _vector_tile(width, lanes)
    vectors = math.ceil(tile_x / lanes)
    tile_c = _tile(channels, max(1, min(8, _MAX_ACC_VECTORS // vectors, _MAX_TILE_FLOATS // tile_x)))
    co, ci = sch.split(c, [None, tile_c])
    wo, wi = sch.split(w, [None, tile_x])
    sch.reorder(co, h, wo, ci, wi)
    rows = sch.fuse(co, h)
    if parallel:
        sch.parallel(rows)
    sch.vectorize(wi)
    sch.compute_at(acc, wo, preserve_unit_loops=True)
    acc_ci, acc_h, acc_wi, *reduction = sch.get_loops(acc)[2:]
    sch.reorder(*reduction, acc_ci, acc_h, acc_wi)
    sch.vectorize(acc_wi)
    sch.unroll(acc_ci)
    sch.decompose_reduction(acc, reduction[0])


def _tile(extent: int, preferred: int) -> int:
    """Largest tile <= preferred that divides ``extent`` (no predicated tail), or ``extent`` if smaller."""
    if extent <= preferred:
        return extent
    return max(t for t in range(1, preferred + 1) if extent % t == 0)


def _window_source(
    k: Conv2dKernel | Pool2dKernel, x: te.Tensor, fill: float
) -> tuple[te.Tensor, Callable[[ir.Expr, ir.Expr, ir.Expr], ir.Expr]]:
    """The tensor a sliding window reads, and its element (c, h, w): ``x`` itself (stored NCHW or, with
    ``k.in_block``, NCHW{c}c), or when ``k.pads()`` pads, ``x`` padded with ``fill`` into NCHW as its own stage
    (written to ``scratch``)."""

    def element(c: ir.Expr, h: ir.Expr, w: ir.Expr) -> ir.Expr:
        return x[c, h, w] if k.in_block == 1 else x[c // k.in_block, h, w, c % k.in_block]

    if not k.scratch_bytes():
        return x, element
    (_, h, w), (top, _, side) = k.in_shape, k.pads()
    # Spikes pad with 0, also for max pooling: every window holds an input element, and spikes are never below 0.
    dtype = k.arg_dtype("scratch")
    pad = _f32(fill) if dtype == FLOAT else tirx.const(0, dtype)

    def value(ci: tirx.Var, hi: tirx.Var, wi: tirx.Var) -> ir.Expr:
        inside = tirx.all(hi >= top, hi < h + top, wi >= side, wi < w + side)
        return tirx.if_then_else(inside, _as(dtype, element(ci, hi - top, wi - side)), pad)

    padded = te.compute(k.padded_shape(), value, name="pad")
    return padded, lambda c, hi, wi: padded[c, hi, wi]


# --------------------------------------------------------------------------------------------------------------
# Per-kind PrimFunc builders
# --------------------------------------------------------------------------------------------------------------


def _windowed(
    k: Conv2dKernel | Pool2dKernel,
    lanes: int,
    inputs: list[te.Tensor],
    src: te.Tensor,
    acc: te.Tensor,
    epilogue: Callable[[ir.Expr, tirx.Var], ir.Expr],
    window: int,
) -> tirx.PrimFunc:
    """Finish a sliding-window kernel (conv, pooling): ``y = epilogue(acc, channel)``, scheduled with
    ``_schedule_tiled_reduction``; ``src`` is the padded input (the ``scratch`` argument) unless it is ``x``;
    ``window`` is the number of terms each output sums."""
    neuron = k.neuron if isinstance(k, Conv2dKernel) else None
    outputs, names, block = _output_stage(k, k.out_shape(), lambda c, h, w: epilogue(acc[c, h, w], c), neuron)
    padded = src is not inputs[0]
    sch = s_tir.Schedule(te.create_prim_func([*inputs, *([src] if padded else []), *outputs]))
    parallel = math.prod(k.out_shape()) * window >= _PARALLEL_MIN_WORK
    if padded:
        _schedule_pad(sch, sch.get_sblock("pad"), parallel)
    _schedule_tiled_reduction(sch, sch.get_sblock("acc"), sch.get_sblock(block), lanes, parallel)
    args = [*(t.op.name for t in inputs), *(["scratch"] if padded else []), *names]
    return _to_c_abi(sch.mod["main"], k.symbol, args, noalias=neuron is None)


def _pixel_tile(out_hw: tuple[int, int], vectors: int, block: int) -> tuple[int, int]:
    """(rows, columns) of output pixels per register tile of the blocked conv: dividing the map, at most
    ``_MAX_ACC_VECTORS`` accumulator vectors of ``vectors`` each and ``_MAX_TILE_FLOATS`` floats; the most pixels
    (each weight vector loaded feeds one FMA per pixel), then the widest rows."""
    (oh, ow), most = out_hw, max(1, min(_MAX_ACC_VECTORS // vectors, _MAX_TILE_FLOATS // block))
    tiles = [(r, c) for r in range(1, oh + 1) if oh % r == 0 for c in range(1, ow + 1) if ow % c == 0 and r * c <= most]
    return max(tiles, key=lambda t: (t[0] * t[1], t[1]))


def _conv2d_blocked(k: Conv2dKernel, lanes: int) -> tirx.PrimFunc:
    """Direct convolution vectorised along output channels, for maps too narrow to fill a vector with columns.

    The weight is stored in blocks of ob output channels (``k.weight_layout`` "OIHW{ob}o"). Each task computes one
    block for a tile of output pixels: per input tap, one contiguous ob-wide weight load feeds one FMA per pixel of
    the tile, with the input pixel broadcast; the (pixels x ob) accumulators stay in registers over the whole
    reduction and are written once, to an NCHW or (``k.out_block``) NCHW{ob}c output.
    """
    o, block = k.out_channels, weight_block(k.weight_layout)
    (kh, kw), (sh, sw), (dh, dw) = k.kernel, k.stride, k.dilation
    cpg, blocks_per_group = k.in_shape[0] // k.groups, o // k.groups // block
    _, oh, ow = k.out_shape()
    x = _placeholder(k, "x")
    w = te.placeholder(k.weight_shape(), FLOAT, name="w")
    b = te.placeholder((o,), FLOAT, name="b")
    src, element = _window_source(k, x, 0.0)
    rc, rh, rw = te.reduce_axis((0, cpg), "rc"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")

    def conv(ob: tirx.Var, y: tirx.Var, xx: tirx.Var, oi: tirx.Var) -> ir.Expr:
        channel = rc if k.groups == 1 else (ob // blocks_per_group) * cpg + rc  # a block lies in one group
        tap = _float(element(channel, y * sh + rh * dh, xx * sw + rw * dw))
        return te.sum(tap * w[ob, rc, rh, rw, oi], axis=[rc, rh, rw])

    acc = te.compute((o // block, oh, ow, block), conv, name="acc")

    def epilogue(oc: ir.Expr, y: tirx.Var, xx: tirx.Var, oi: ir.Expr | None = None) -> ir.Expr:
        """Output channel ``oc`` (or, stored blocked, channel ``oi`` of block ``oc``) at (y, xx)."""
        ob, oi = (oc // block, oc % block) if oi is None else (oc, oi)
        value = acc[ob, y, xx, oi]
        return value + b[ob * block + oi] if k.bias else value

    out_shape = _stored_shape(k.out_shape(), k.out_block)
    outputs, names, block_name = _output_stage(k, out_shape, epilogue, k.neuron)
    inputs, padded = [x, w, *([b] if k.bias else [])], src is not x
    sch = s_tir.Schedule(te.create_prim_func([*inputs, *([src] if padded else []), *outputs]))
    parallel = math.prod(k.out_shape()) * cpg * kh * kw >= _BLOCKED_PARALLEL_MIN_WORK
    if padded:
        _schedule_pad(sch, sch.get_sblock("pad"), parallel)
    tile_h, tile_w = _pixel_tile((oh, ow), math.ceil(block / lanes), block)
    if k.out_block > 1:  # NCHW{ob}c: a pixel's block of outputs is one contiguous vector, stored whole
        co, h, wl, ci = sch.get_loops(sch.get_sblock(block_name))
        sch.vectorize(ci)
    else:  # NCHW: a pixel's outputs lie a map apart, stored one at a time
        c, h, wl = sch.get_loops(sch.get_sblock(block_name))
        co, ci = sch.split(c, [None, block])
    ho, hi = sch.split(h, [None, tile_h])
    wo, wi = sch.split(wl, [None, tile_w])
    sch.reorder(co, ho, wo, hi, wi, ci)
    tasks = sch.fuse(co, ho)
    if parallel:
        sch.parallel(tasks)
    # At a loop inside the parallel one, so that each task has its own accumulators (at the parallel loop itself
    # they would be allocated once, outside it, and shared by the threads)
    sch.compute_at(sch.get_sblock("acc"), wo, preserve_unit_loops=True)
    acc_block = sch.get_sblock("acc")
    acc_h, acc_w, acc_c, *reduction = sch.get_loops(acc_block)[-6:]  # inside the unit loop of the block
    sch.reorder(*reduction, acc_h, acc_w, acc_c)
    sch.vectorize(acc_c)
    sch.unroll(acc_w)
    sch.unroll(acc_h)
    sch.decompose_reduction(acc_block, reduction[0])
    args = [*(t.op.name for t in inputs), *(["scratch"] if padded else []), *names]
    return _to_c_abi(sch.mod["main"], k.symbol, args, noalias=k.neuron is None)


def _conv2d(k: Conv2dKernel, lanes: int) -> tirx.PrimFunc:
    """Direct convolution; per-tile accumulators, vectorized along output columns."""
    if weight_block(k.weight_layout) > 1:
        return _conv2d_blocked(k, lanes)
    o = k.out_channels
    (kh, kw), (sh, sw), (dh, dw) = k.kernel, k.stride, k.dilation
    cpg, opg = k.in_shape[0] // k.groups, o // k.groups
    x = _placeholder(k, "x")
    w = te.placeholder(k.weight_shape(), FLOAT, name="w")
    b = te.placeholder((o,), FLOAT, name="b")
    src, element = _window_source(k, x, 0.0)
    rc, rh, rw = te.reduce_axis((0, cpg), "rc"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")

    def conv(oc: tirx.Var, y: tirx.Var, xx: tirx.Var) -> ir.Expr:
        channel = rc if k.groups == 1 else (oc // opg) * cpg + rc
        tap = element(channel, y * sh + rh * dh, xx * sw + rw * dw)
        return te.sum(_float(tap) * w[oc, rc, rh, rw], axis=[rc, rh, rw])

    acc = te.compute(k.out_shape(), conv, name="acc")
    window = cpg * kh * kw
    if k.bias:
        return _windowed(k, lanes, [x, w, b], src, acc, lambda value, oc: value + b[oc], window)
    return _windowed(k, lanes, [x, w], src, acc, lambda value, oc: value, window)


def _dense(k: DenseKernel, lanes: int) -> tirx.PrimFunc:
    """Matrix-vector product with w rows contiguous.

    The reduction is split into ``lanes`` interleaved partial sums (``part``), so the inner loop is a vector
    multiply-add over contiguous weights; a tile of rows shares each vector load of x. The few partial sums are
    then added up per row.
    """
    n_in, n_out = k.in_features, k.out_features
    step = math.gcd(n_in, lanes)
    x = _placeholder(k, "x")
    w = te.placeholder((n_out, n_in), FLOAT, name="w")
    b = te.placeholder((n_out,), FLOAT, name="b")
    ko = te.reduce_axis((0, n_in // step), "ko")
    part = te.compute(
        (n_out, step),
        lambda j, lane: te.sum(_float(x[ko * step + lane]) * w[j, ko * step + lane], axis=ko),
        name="part",
    )
    lane = te.reduce_axis((0, step), "lane")
    acc = te.compute((n_out,), lambda j: te.sum(part[j, lane], axis=lane), name="acc")
    outputs, names, block = _output_stage(k, (n_out,), lambda j: acc[j] + b[j] if k.bias else acc[j], k.neuron)
    inputs = [x, w, *([b] if k.bias else [])]
    sch = s_tir.Schedule(te.create_prim_func([*inputs, *outputs]))
    jo, _ = sch.split(sch.get_loops(sch.get_sblock(block))[0], [None, _tile(n_out, 4)])
    if n_in * n_out >= _PARALLEL_MIN_WORK:
        sch.parallel(jo)
    part_block = sch.get_sblock("part")
    sch.compute_at(sch.get_sblock("acc"), jo, preserve_unit_loops=True)
    sch.compute_at(part_block, jo, preserve_unit_loops=True)
    ji, lane_loop, ko_loop = sch.get_loops(part_block)[-3:]
    sch.reorder(ko_loop, ji, lane_loop)
    sch.vectorize(lane_loop)
    sch.unroll(ji)
    sch.decompose_reduction(part_block, ko_loop)
    args = [*(t.op.name for t in inputs), *names]
    return _to_c_abi(sch.mod["main"], k.symbol, args, noalias=k.neuron is None)


def _script(k: Kernel, body: list[str], functions: dict[str, Callable[..., ir.Expr]] | None = None) -> tirx.PrimFunc:
    """The plain-C-ABI PrimFunc of a kernel written as TVMScript source (`body`: the lines of `main`, indented by 4,
    whose buffers are the kernel's arguments in their shapes and types), for loops a TE compute cannot say: one
    statement per step, or branches on data. `functions` are Python functions the script calls to build
    expressions while it is parsed."""
    params = ", ".join(f'{name}: T.Buffer({shape}, "{k.arg_dtype(name)}")' for name, shape in k.arg_shapes().items())
    source = "\n".join(["@T.prim_func(private=True)", f"def main({params}):", *body])
    func = tvm.script.from_source(source, extra_vars={"T": T, **(functions or {})})
    return _to_c_abi(func, k.symbol, k.arg_names())


def _dense_steps(k: DenseKernel, lanes: int) -> tirx.PrimFunc:
    """Matrix-vector products of several timesteps sharing one pass over the weights.

    Like ``_dense``: each output row accumulates ``lanes`` interleaved partial sums over contiguous weights, a tile
    of rows at a time, but every weight vector loaded feeds one accumulator per step, so a weight matrix larger
    than the caches is read from memory once per call rather than once per step. Steps go in groups of
    ``_STEP_GROUP`` with tiles of rows that make ``_MAX_ACC_VECTORS`` accumulators (each step's its own small
    buffer, kept in registers): each weight vector then feeds 4 steps and each input vector 4 rows, and a row tile
    is read again from L1 for the next group (1024->1024 over 16 steps: 2.3x faster than groups of 16 steps of
    single rows, whose 16 inputs overflow L1). The steps' inputs and outputs are separate arguments, so the kernel
    is written in TVMScript, generated here with one statement per step.
    """
    n_in, n_out, n_steps = k.in_features, k.out_features, k.steps
    step = math.gcd(n_in, lanes)
    group = min(n_steps, _STEP_GROUP)
    rows = _tile(n_out, max(1, _MAX_ACC_VECTORS // group))
    loop = "T.parallel" if n_in * n_out * n_steps >= _PARALLEL_MIN_WORK else "T.serial"
    row = f"jo * {rows} + ji"

    def x(t: int) -> str:  # spikes are bytes, read as 0.0 / 1.0
        load = f"x{t}[ko * {step} + lane]"
        return f"T.Cast('float32', {load})" if k.spikes else load

    lines = [
        "    T.func_attr({'tirx.noalias': True})",
        f"    for jo in {loop}({n_out // rows}):",
    ]
    for first in range(0, n_steps, group):
        steps = range(first, min(first + group, n_steps))
        lines += [f"        acc{t} = T.alloc_buffer(({rows}, {step}), 'float32')" for t in steps]
        lines += [f"        for ji in T.unroll({rows}):", f"            for lane in T.vectorized({step}):"]
        lines += [f"                acc{t}[ji, lane] = T.float32(0)" for t in steps]
        lines += [f"        for ko in range({n_in // step}):", f"            for ji in T.unroll({rows}):"]
        lines += [f"                for lane in T.vectorized({step}):"]
        term = f"w[{row}, ko * {step} + lane]"
        lines += [f"                    acc{t}[ji, lane] = acc{t}[ji, lane] + {x(t)} * {term}" for t in steps]
        lines += [f"        for ji in T.unroll({rows}):"]
        bias = f" + b[{row}]" if k.bias else ""
        for t in steps:
            total = " + ".join(f"acc{t}[ji, {lane}]" for lane in range(step))
            lines.append(f"            y{t}[{row}] = {total}{bias}")
    return _script(k, lines)


def _pool2d(k: Pool2dKernel, lanes: int) -> tirx.PrimFunc:
    """Max / average pooling sharing the conv schedule (tiled accumulators over the window)."""
    (kh, kw), (sh, sw) = k.kernel, k.stride
    x = _placeholder(k, "x")
    src, element = _window_source(k, x, -math.inf if k.kind == "max" else 0.0)
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    # The max of spikes is a spike (bytes throughout); sums count them as floats.
    reducer, read = (te.max, lambda e: e) if k.kind == "max" else (te.sum, _float)
    acc = te.compute(
        k.out_shape(),
        lambda ci, y, xx: reducer(read(element(ci, y * sh + rh, xx * sw + rw)), axis=[rh, rw]),
        name="acc",
    )
    if k.kind == "avg":
        # PyTorch divides the window sum by the window size (count_include_pad=True, no ceil mode).
        return _windowed(k, lanes, [x], src, acc, lambda value, ci: value / _f32(kh * kw), kh * kw)
    return _windowed(k, lanes, [x], src, acc, lambda value, ci: value, kh * kw)


def _largest_bin(size: int, out: int) -> int:
    """The largest of PyTorch's adaptive pooling bins [floor(i*size/out), ceil((i+1)*size/out)) along one axis."""
    return max(-(-(i + 1) * size // out) - i * size // out for i in range(out))


def _adaptive_avgpool2d(k: AdaptiveAvgPool2dKernel, lanes: int) -> tirx.PrimFunc:
    """Sum over the largest bin with the cells outside each bin masked, divided by the bin's size; the sum is a
    per-output scalar (``compute_at``), so no workspace is needed. These layers are small: channels run in
    parallel, nothing is vectorized."""
    _, h, w = k.in_shape
    oh, ow = k.output
    x = _placeholder(k, "x")
    kh, kw = _largest_bin(h, oh), _largest_bin(w, ow)
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")

    def bin_of(i: tirx.Var, n: int, o: int) -> tuple[ir.Expr, ir.Expr]:
        return tirx.floordiv(i * n, o), tirx.floordiv((i + 1) * n + o - 1, o)

    def total(ci: tirx.Var, i: tirx.Var, j: tirx.Var) -> ir.Expr:
        (h0, h1), (w0, w1) = bin_of(i, h, oh), bin_of(j, w, ow)
        inside = tirx.all(h0 + rh < h1, w0 + rw < w1)
        value = _float(x[ci, tirx.min(h0 + rh, h - 1), tirx.min(w0 + rw, w - 1)])
        return te.sum(tirx.Select(inside, value, _f32(0.0)), axis=[rh, rw])

    acc = te.compute(k.out_shape(), total, name="acc")

    def mean(ci: tirx.Var, i: tirx.Var, j: tirx.Var) -> ir.Expr:
        (h0, h1), (w0, w1) = bin_of(i, h, oh), bin_of(j, w, ow)
        return acc[ci, i, j] / tirx.Cast(FLOAT, (h1 - h0) * (w1 - w0))

    out = te.compute(k.out_shape(), mean, name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    loops = sch.get_loops(sch.get_sblock("y"))
    sch.compute_at(sch.get_sblock("acc"), loops[-1])
    if math.prod(k.out_shape()) * kh * kw >= _PARALLEL_MIN_WORK:
        sch.parallel(loops[0])
    return _to_c_abi(sch.mod["main"], k.symbol, k.arg_names())


# Neuron update rules: (x, state, params) -> {buffer name: new value}. Every arithmetic node is one float32
# operation in exactly the order of the reference formulas; products feeding an add go through _no_contract.
_Update = Callable[[ir.Expr, dict[str, ir.Expr], dict[str, ir.Expr]], dict[str, ir.Expr]]


def _spike(v1: ir.Expr, p: dict[str, ir.Expr]) -> tuple[ir.Expr, ir.Expr]:
    """Heaviside spike ``(v1 - v_th) > 0`` as 1.0/0.0, and the reset voltage."""
    fired = (v1 - p["v_th"]) > _f32(0.0)
    return tirx.Select(fired, _f32(1.0), _f32(0.0)), tirx.Select(fired, p["v_reset"], v1)


def _lif(x: ir.Expr, s: dict[str, ir.Expr], p: dict[str, ir.Expr]) -> dict[str, ir.Expr]:
    i1 = s["i"] + x
    v1 = s["v"] + _no_contract(p["dt_tau_mem"] * ((p["v_leak"] - s["v"]) + i1))
    z, v_new = _spike(v1, p)
    return {"z": z, "v": v_new, "i": i1 + _no_contract(p["neg_dt_tau_syn"] * i1)}


def _lif_box_v1(x: ir.Expr, s: dict[str, ir.Expr], p: dict[str, ir.Expr]) -> ir.Expr:
    return s["v"] + _no_contract(p["dt_tau_mem"] * ((x + p["v_leak"]) - s["v"]))


def _lif_box(x: ir.Expr, s: dict[str, ir.Expr], p: dict[str, ir.Expr]) -> dict[str, ir.Expr]:
    z, v_new = _spike(_lif_box_v1(x, s, p), p)
    return {"z": z, "v": v_new}


def _lif_box_subtract(x: ir.Expr, s: dict[str, ir.Expr], p: dict[str, ir.Expr]) -> dict[str, ir.Expr]:
    """LIF-box with reset by subtraction: a spike lowers v by v_th instead of setting it to v_reset."""
    v1 = _lif_box_v1(x, s, p)
    z, _ = _spike(v1, p)
    return {"z": z, "v": tirx.Select(z > _f32(0.0), v1 - p["v_th"], v1)}


def _li(x: ir.Expr, s: dict[str, ir.Expr], p: dict[str, ir.Expr]) -> dict[str, ir.Expr]:
    i1 = s["i"] + x
    v_new = s["v"] + _no_contract(p["dt_tau_mem"] * ((p["v_leak"] - s["v"]) + i1))
    return {"out": v_new, "v": v_new, "i": i1 + _no_contract(p["neg_dt_tau_syn"] * i1)}


def _li_box(x: ir.Expr, s: dict[str, ir.Expr], p: dict[str, ir.Expr]) -> dict[str, ir.Expr]:
    v_new = s["v"] + _no_contract(p["dt_tau_mem"] * ((p["v_leak"] - s["v"]) + x))
    return {"out": v_new, "v": v_new}


def _iaf(x: ir.Expr, s: dict[str, ir.Expr], p: dict[str, ir.Expr]) -> dict[str, ir.Expr]:
    z, v_new = _spike(s["v"] + x, p)
    return {"z": z, "v": v_new}


_NEURON_UPDATES: dict[str, _Update] = {
    "lif": _lif,
    "lif_box": _lif_box,
    "lif_box_subtract": _lif_box_subtract,
    "li": _li,
    "li_box": _li_box,
    "iaf": _iaf,
}


def _neuron_values(
    k: Kernel, neuron: NeuronKernel, x: ir.Expr, state: dict[str, ir.Expr], per_neuron: dict[str, ir.Expr]
) -> dict[str, ir.Expr]:
    """What a neuron update stores for input ``x``, in store order: its output (in the type of ``k``'s output
    argument), then each new state. Storing in this order updates state in place safely: the output and v read v
    and i, i reads only i, so no store feeds a later one."""
    model = NEURON_MODELS[neuron.kind]
    params = {name: per_neuron[name] if value is None else _f32(value) for name, value in neuron.params}
    new = _NEURON_UPDATES[neuron.kind](x, state, params)
    dtype = k.arg_dtype(model.output)
    output = new[neuron.probe or model.output]  # 1.0 / 0.0 spikes stay floats when packed (`_packed_spikes`)
    return {model.output: output if dtype == BITS else _as(dtype, output), **{name: new[name] for name in model.state}}


def _output_stage(
    k: Kernel, shape: tuple[int, ...], value: Callable[..., ir.Expr], neuron: NeuronKernel | None
) -> tuple[list[te.Tensor], list[str], str]:
    """The stage that stores a kernel's results, ``value(*index)`` at each index: as ``y``, or through ``neuron``'s
    update (an epilogue, or the neuron kernel itself). Returns the tensors that follow the kernel's inputs among
    the PrimFunc's buffers, their argument names for ``_to_c_abi``, and the block to schedule.

    TE has no in-place update, so each new state is a separate output buffer that shares its old state's argument
    name, and so its pointer (the PrimFunc must then be built without ``noalias``); see ``_neuron_values``."""
    if neuron is None:
        return [te.compute(shape, lambda *i: _as(k.arg_dtype("y"), value(*i)), name="y")], ["y"], "y"
    model = NEURON_MODELS[neuron.kind]
    state = {name: te.placeholder(shape, FLOAT, name=name) for name in model.state}
    per_neuron = {name: te.placeholder(shape, FLOAT, name=name) for name, v in neuron.params if v is None}

    def update(*index: tirx.Var) -> list[ir.Expr]:
        read = {name: buf[index] for name, buf in state.items()}
        params = {name: buf[index] for name, buf in per_neuron.items()}
        return list(_neuron_values(k, neuron, value(*index), read, params).values())

    output, *new_state = te.compute(shape, update, name="y")
    names = [*model.state, model.output, *per_neuron, *model.state]
    return [*state.values(), output, *per_neuron.values(), *new_state], names, "y_v0"


def _neuron(k: NeuronKernel, lanes: int) -> tirx.PrimFunc:
    """Element-wise neuron update, state updated in place (``_output_stage``).

    Packed spikes are a reduction over each word's 32 neurons, which cannot share a compute with the element-wise
    state update: the words are computed first, from the old state (the same float32 operations, so the same
    spikes), and the state is updated after them.
    """
    x = _placeholder(k, "x")
    if not k.packed:
        outputs, names, block = _output_stage(k, (k.n,), lambda j: _float(x[j]), k)
        sch = s_tir.Schedule(te.create_prim_func([x, *outputs]))
        _vectorize_flat(sch, sch.get_sblock(block), lanes, k.n)
        return _to_c_abi(sch.mod["main"], k.symbol, ["x", *names], noalias=False)
    model = NEURON_MODELS[k.kind]
    state = {name: te.placeholder((k.n,), FLOAT, name=name) for name in model.state}
    per_neuron = {name: te.placeholder((k.n,), FLOAT, name=name) for name, value in k.params if value is None}

    def new_values(j: ir.Expr) -> dict[str, ir.Expr]:
        read = {name: buf[j] for name, buf in state.items()}
        return _neuron_values(k, k, _float(x[j]), read, {name: buf[j] for name, buf in per_neuron.items()})

    output = _packed_spikes(k, lambda j: new_values(j)["z"])
    update = te.compute((k.n,), lambda j: [new_values(j)[name] for name in model.state], name="neuron")
    new_state = [update] if isinstance(update, te.Tensor) else list(update)
    args = [x, *state.values(), output, *per_neuron.values(), *new_state]
    names = ["x", *model.state, model.output, *per_neuron, *model.state]
    sch = s_tir.Schedule(te.create_prim_func(args))
    if k.n >= _PARALLEL_MIN_ELEMENTS:
        sch.parallel(sch.get_loops(sch.get_sblock("z"))[0])
    # a compute of several outputs names its blocks neuron_v0, neuron_v1, ... (one per state)
    _vectorize_flat(sch, sch.get_sblock("neuron" if len(new_state) == 1 else "neuron_v0"), lanes, k.n)
    return _to_c_abi(sch.mod["main"], k.symbol, names, noalias=False)


def _packed_spikes(k: NeuronKernel, spike: Callable[[ir.Expr], ir.Expr]) -> te.Tensor:
    """The words of a neuron kernel's packed spikes: bit b of word w is the spike (1.0 / 0.0) of neuron 32w + b,
    0 past the last neuron (whose index is clamped, so no load leaves the buffers). Bits are distinct, so their
    sum is their OR."""
    b = te.reduce_axis((0, WORD_BITS), "b")

    def word(w: tirx.Var) -> ir.Expr:
        j = w * WORD_BITS + b
        fired = tirx.all(j < k.n, spike(tirx.min(j, k.n - 1)) > _f32(0.0))
        one = tirx.const(1, BITS) << tirx.Cast(BITS, b)
        return te.sum(tirx.Select(fired, one, tirx.const(0, BITS)), axis=b)

    return te.compute((words(k.n),), word, name="z")


def _elementwise(k: ElementwiseKernel | ElementwiseAddKernel, lanes: int, fn: Callable[..., ir.Expr]) -> tirx.PrimFunc:
    """One vectorized element-wise output ``y`` from the other arguments, n elements each. Spike operands read as
    floats, except for a copy of spikes into spikes, which copies bytes."""
    *operands, out_name = k.arg_names()
    inputs = [_placeholder(k, name) for name in operands]
    dtype = k.arg_dtype(out_name)
    read = (lambda e: e) if dtype == SPIKE else _float
    out = te.compute((k.n,), lambda j: _as(dtype, fn(*(read(t[j]) for t in inputs))), name=out_name)
    sch = s_tir.Schedule(te.create_prim_func([*inputs, out]))
    _vectorize_flat(sch, sch.get_sblock(out_name), lanes, k.n)
    return _to_c_abi(sch.mod["main"], k.symbol, k.arg_names())


def _rows(k: RowsKernel, lanes: int) -> tirx.PrimFunc:
    """Each output row read from its operand: one branch per operand on the row (loop-invariant along the
    vectorized columns). Row indices are clamped into each operand so no branch can read out of bounds."""
    xs = [_placeholder(k, f"x{j}") for j in range(len(k.in_shapes))]
    ends = np.cumsum([hi - lo for lo, hi in k.rows]).tolist()
    starts = [0, *ends[:-1]]

    def value(c: tirx.Var, h: tirx.Var, w: tirx.Var) -> ir.Expr:
        expr = None
        for x, (lo, hi), start, end in reversed(list(zip(xs, k.rows, starts, ends, strict=True))):
            load = x[c, tirx.min(tirx.max(h - start + lo, lo), hi - 1), w]
            expr = load if expr is None else tirx.if_then_else(h < end, load, expr)
        return expr

    out = te.compute(k.out_shape(), lambda c, h, w: _as(k.arg_dtype("y"), value(c, h, w)), name="y")
    sch = s_tir.Schedule(te.create_prim_func([*xs, out]))
    c, h, w = sch.get_loops(sch.get_sblock("y"))
    if math.prod(k.out_shape()) >= _PARALLEL_MIN_ELEMENTS:
        sch.parallel(sch.fuse(c, h))
    tile = _vector_tile(k.out_shape()[2], lanes)
    if tile > 1:
        sch.vectorize(sch.split(w, [None, tile])[1])
    return _to_c_abi(sch.mod["main"], k.symbol, k.arg_names())


def _accumulate_dense(k: AccumulateDenseKernel, lanes: int) -> tirx.PrimFunc:
    """For each tile of outputs (in parallel when the layer is large): zero the tile's accumulators (one per step,
    small enough to stay on the stack), walk the inputs, and for an active one add its contiguous row of W^T into
    the accumulators of the steps where it is active (vectorized along the outputs); then add the bias and store.
    Over bit-packed spikes the inputs are walked word by word (`_walk_words`). On x86-64 (one thread, a C loop
    calling both kernels on 64 spike vectors in turn) bits were 2.4x faster than bytes on a 4096->4096 layer at rate
    0.05, 1.1x at rates 0.26 to 0.4 (fewer zero words to skip; each active input still costs a row), 0.95x on
    512->4096 at 0.44; bench/speed.py's part 3 times them at the models' rates.

    The loop over inputs branches on data, which a TE compute cannot say, so the kernel is TVMScript (generated
    for the static shapes and parsed); it has no scalar temporaries in vectorized loops (see the TVM notes).
    """
    n_in, n_out, steps = k.in_features, k.out_features, k.steps
    tile = _vector_tile(n_out, lanes, _MAX_TILE_FLOATS // steps)
    xs, ys = k.step_names("x"), k.step_names("y")
    loop = "T.parallel" if n_in * n_out >= _PARALLEL_MIN_WORK else "T.serial"
    out, bias = f"jo * {tile} + ji", f" + b[jo * {tile} + ji]" if k.bias else ""
    lines = [
        f"    for jo in {loop}({n_out // tile}):",
        f'        acc = T.alloc_buffer(({steps}, {tile}), "float32")',
        f"        for t, ji in T.grid({steps}, {tile}):",
        "            acc[t, ji] = T.float32(0)",
    ]
    if k.packed:
        lines += _walk_words(n_in, tile, out)
    else:
        lines.append(f"        for k in range({n_in}):")
        if steps > 1:  # the row is read once for every step in which its input is active
            lines.append(f"            if ({' | '.join(f'{x}[k]' for x in xs)}) != T.uint8(0):")
        indent = " " * (16 if steps > 1 else 12)
        for t, x in enumerate(xs):
            lines += [
                f"{indent}if {x}[k] != T.uint8(0):",
                f"{indent}    for ji in T.vectorized({tile}):",
                f"{indent}        acc[{t}, ji] = acc[{t}, ji] + w[k, {out}]",
            ]
    if k.neuron is None:
        for t, y in enumerate(ys):
            lines += [f"        for ji in T.vectorized({tile}):", f"            {y}[{out}] = acc[{t}, ji]{bias}"]
        return _script(k, lines)
    # The neuron epilogue: each stored value is `epilogue(name, input, loads of the state and per-neuron
    # parameters)`, the TIR expression _neuron_values builds, called while the script is parsed.
    model = NEURON_MODELS[k.neuron.kind]
    per_neuron = [name for name, value in k.neuron.params if value is None]
    loads = ", ".join(f"{name}[{out}]" for name in (*model.state, *per_neuron))

    def epilogue(name: str, x: ir.Expr, *loaded: ir.Expr) -> ir.Expr:
        state, params = loaded[: len(model.state)], loaded[len(model.state) :]
        values = _neuron_values(
            k, k.neuron, x, dict(zip(model.state, state, strict=True)), dict(zip(per_neuron, params, strict=True))
        )
        return values[name]

    lines.append(f"        for ji in T.vectorized({tile}):")
    for name in (model.output, *model.state):  # _neuron_values' store order
        lines.append(f'            {name}[{out}] = epilogue("{name}", acc[0, ji]{bias}, {loads})')
    return _script(k, lines, {"epilogue": epilogue})


def _walk_words(n_in: int, tile: int, out: str) -> list[str]:
    """The input loop of the accumulate-only kernel over bit-packed spikes ``x`` (one step): a zero word skips its
    32 inputs at once; a non-zero one is walked from its lowest set bit up (count trailing zeros, then clear that
    bit), so rows are added in increasing input order, as over bytes, and the sums are the same floats. The bits
    of the last word past the last input must be 0, as the "bits" dtype says: they would index rows past W^T."""
    lowest = 'T.Cast("int32", T.call_llvm_pure_intrin("uint32", "llvm.cttz", left[0], T.bool(True)))'
    return [
        '        left = T.alloc_buffer((1,), "uint32")',
        f"        for word in range({words(n_in)}):",
        "            left[0] = x[word]",
        "            while left[0] != T.uint32(0):",
        f"                for ji in T.vectorized({tile}):",
        f"                    acc[0, ji] = acc[0, ji] + w[word * {WORD_BITS} + {lowest}, {out}]",
        "                left[0] = left[0] & (left[0] - T.uint32(1))",
    ]


def prim_func(kernel: Kernel, lanes: int) -> tirx.PrimFunc:
    """The scheduled plain-C-ABI PrimFunc of ``kernel`` for a target with ``lanes`` float32 vector lanes."""
    match kernel:
        case Conv2dKernel():
            return _conv2d(kernel, lanes)
        case DenseKernel() if kernel.steps > 1:
            return _dense_steps(kernel, lanes)
        case DenseKernel():
            return _dense(kernel, lanes)
        case Pool2dKernel():
            return _pool2d(kernel, lanes)
        case NeuronKernel():
            return _neuron(kernel, lanes)
        case AccumulateDenseKernel():
            return _accumulate_dense(kernel, lanes)
        case ElementwiseAddKernel():
            return _elementwise(kernel, lanes, lambda a, b: a + b)
        case ElementwiseKernel():
            body = ELEMENTWISE_FNS[kernel.fn].body
            if kernel.constant is not None:
                constant = _f32(kernel.constant)
                return _elementwise(kernel, lanes, lambda *a: body(*a, constant))
            return _elementwise(kernel, lanes, body)
        case AdaptiveAvgPool2dKernel():
            return _adaptive_avgpool2d(kernel, lanes)
        case RowsKernel():
            return _rows(kernel, lanes)
    raise TypeError(f"not a kernel: {kernel!r}")


__all__ = [
    "ELEMENTWISE_FNS",
    "NEURON_MODELS",
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
    "prim_func",
]
