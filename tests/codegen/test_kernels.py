"""End-to-end tests of the kernel code generator: build every kernel kind into one object, link it with a small
generated C harness and runtime/parallel.c, run it natively and (aarch64) under qemu, and compare with PyTorch
(conv, dense, pool), with the reference interpreter (the row patches' conv and pool padded at one border), or, bit
for bit, with a float32 numpy implementation (neurons, row crops and concats)."""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from masic.codegen.build import build_object, host_target
from masic.codegen.kernels import (
    AccumulateDenseKernel,
    AdaptiveAvgPool2dKernel,
    Conv2dKernel,
    DenseKernel,
    ElementwiseAddKernel,
    ElementwiseKernel,
    Kernel,
    NeuronKernel,
    Pool2dKernel,
    RowsKernel,
)
from masic.codegen.tir import prim_func
from masic.codegen.weights import stored_weight
from masic.ir.elementwise import FUNCTIONS
from masic.ir.graph import Node, TensorType, pack_bits
from masic.ir.neurons import FAMILIES, NeuronFamily
from masic.ir.ops import OPS
from masic.ir.reference import Step

RUNTIME = Path(__file__).resolve().parents[2] / "masic" / "codegen" / "runtime"
AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
NEURON_STEPS = 300

F = torch.nn.functional


@dataclass
class Case:
    """One kernel with its argument data: ``args`` holds the initial contents of every C argument (in call
    order); arguments named in ``stepped`` hold ``steps`` consecutive slices, one per call."""

    kernel: Kernel
    args: dict[str, np.ndarray]
    expected: Callable[[], dict[str, np.ndarray]] | None  # None: checked through the case it is the twin of
    steps: int = 1
    stepped: frozenset[str] = field(default_factory=frozenset)
    exact: bool = False
    twin: Case | None = None  # the run's case whose outputs `expected_from_twin` turns into this case's expectation
    expected_from_twin: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None


def _rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.uniform(-1.0, 1.0, size=shape) * scale).astype(np.float32)


def _spikes(rng: np.random.Generator, *shape: int, rate: float = 0.3) -> np.ndarray:
    return (rng.uniform(size=shape) < rate).astype(np.uint8)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32))


def _scratch(k: Kernel) -> np.ndarray:
    """The scratch argument's bytes, 0xFF (NaN as float32, 255 as a spike) so that an unwritten element shows."""
    return np.full(k.scratch_bytes(), 0xFF, np.uint8)


def _conv_case(rng: np.random.Generator, k: Conv2dKernel) -> Case:
    """A conv on random data against PyTorch: the weight drawn in OIHW, passed as ``k.weight_layout`` stores it;
    the input padded as ``k.pads()`` says (row patches pad their rows unevenly)."""
    x = _spikes(rng, *k.in_shape) if "x" in k.spikes else _rand(rng, *k.in_shape)
    shape = (k.out_channels, k.in_shape[0] // k.groups, *k.kernel)
    w = _rand(rng, *shape, scale=1 / math.sqrt(math.prod(shape[1:])))
    b = _rand(rng, k.out_channels)
    data = {"x": x, "w": stored_weight(w, k.weight_layout), "b": b, "scratch": _scratch(k)}
    args = {name: data.get(name, np.zeros(shape, np.float32)) for name, shape in k.arg_shapes().items()}

    def expected() -> dict[str, np.ndarray]:
        top, bottom, side = k.pads()
        padded = F.pad(_t(x)[None], (side, side, top, bottom))
        y = F.conv2d(padded, _t(w), _t(b) if k.bias else None, k.stride, 0, k.dilation, k.groups)
        return {"y": y[0].numpy()}

    return Case(k, args, expected)


def _dense_case(rng: np.random.Generator, k: DenseKernel) -> Case:
    """A dense kernel of one or more steps: each step's input x{t} and output y{t} its own argument."""
    xs = {
        name: _spikes(rng, k.in_features) if name in k.spikes else _rand(rng, k.in_features)
        for name in k.step_names("x")
    }
    w = _rand(rng, k.out_features, k.in_features, scale=1 / math.sqrt(k.in_features))
    b = _rand(rng, k.out_features)
    args = xs | {"w": w, "b": b} | {name: np.zeros(k.out_features, np.float32) for name in k.step_names("y")}

    def expected() -> dict[str, np.ndarray]:
        bias = _t(b) if k.bias else None
        return {y: F.linear(_t(x), _t(w), bias).numpy() for x, y in zip(xs.values(), k.step_names("y"), strict=True)}

    return Case(k, {name: args[name] for name in k.arg_names()}, expected)


def _pool_case(rng: np.random.Generator, k: Pool2dKernel) -> Case:
    x = _spikes(rng, *k.in_shape) if "x" in k.spikes else _rand(rng, *k.in_shape)
    args = {"x": x, "scratch": _scratch(k), "y": np.zeros(k.out_shape(), np.float32)}
    pool = {
        "max": F.max_pool2d,
        "avg": F.avg_pool2d,
        "sum": lambda *a: F.avg_pool2d(*a, divisor_override=1),  # NIR's SumPool2d
    }[k.kind]

    def expected() -> dict[str, np.ndarray]:
        return {"y": pool(_t(x)[None], k.kernel, k.stride, k.padding)[0].numpy()}

    return Case(k, {name: args[name] for name in k.arg_names()}, expected, exact="y" in k.spikes)


def _adaptive_case(rng: np.random.Generator, k: AdaptiveAvgPool2dKernel) -> Case:
    x = _spikes(rng, *k.in_shape) if "x" in k.spikes else _rand(rng, *k.in_shape)
    args = {"x": x, "y": np.zeros(k.out_shape(), np.float32)}
    return Case(k, args, lambda: {"y": F.adaptive_avg_pool2d(_t(x)[None], k.output)[0].numpy()})


# The neurons the cases run, by label: (family, modes)
NEURONS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "lif": ("lif", ()),
    "lif_box": ("lif_box", (("reset", "value"),)),
    "lif_box_subtract": ("lif_box", (("reset", "subtract"),)),
    "li": ("li", ()),
    "li_box": ("li_box", ()),
    "iaf": ("iaf", ()),
    "lsnn": ("lsnn", ()),
    "lif_ex": ("lif_ex", ()),
    "lif_adex": ("lif_adex", ()),
    "lif_refrac": ("lif_refrac", ()),
    "izhikevich": ("izhikevich", ()),
}


def _family(kind: str) -> NeuronFamily:
    return FAMILIES[NEURONS[kind][0]]


def _neuron_kernel(
    symbol: str, kind: str, n: int, params: tuple[tuple[str, float | None], ...], probe: str = "", spikes=()
) -> NeuronKernel:
    family, modes = NEURONS[kind]
    return NeuronKernel(symbol, family, n, params, probe, spikes, modes=modes)


def _neuron_reference(
    kind: str, x: np.ndarray, state: dict[str, np.ndarray], p: dict[str, np.ndarray], dtype: str = "f32"
) -> None:
    """The reference interpreter's neuron update (itself bit-exact against Norse); updates ``state`` and the output
    (of IR type `dtype`)."""
    family, modes = NEURONS[kind]
    node = Node("n", family, attrs=modes, type=TensorType(x.shape, dtype))
    x = x.astype(np.float32)
    state[FAMILIES[family].output] = OPS[family].interpret(node, Step([x], p.__getitem__, state, x))


NEURON_VALUES = {"dt_tau_mem": 0.1, "neg_dt_tau_syn": -0.2, "v_leak": 0.0, "v_th": 1.0, "v_reset": 0.0}
# the other families' parameters: adaptation that changes the rate, an exponential term near threshold, a refractory
# period of a few steps, an Izhikevich neuron scaled to threshold 1
NEURON_VALUES |= {"dt_tau_adapt": 0.05, "beta": 0.3, "delta_T": 0.5, "dt_tau_ada": 0.05, "adaptation_current": 0.5}
NEURON_VALUES |= {"adaptation_spike": 0.2, "rho_reset": 3.0, "dt_tau": 0.1, "sq": 0.04, "mn": -2.0, "bias": 0.5}
NEURON_VALUES |= {"dt_tau_a": 0.02, "u_gain": 0.2, "u_jump": 0.5, "v_rest": 0.0, "u_rest": 0.0}
# the input range (0 to twice this) that brings each kind's membranes around threshold
NEURON_DRIVE = {"lif_box": 10.0, "lif_box_subtract": 10.0, "li_box": 10.0, "iaf": 0.1, "izhikevich": 2.0}


def _neuron_case(
    rng: np.random.Generator,
    symbol: str,
    kind: str,
    n: int,
    per_neuron: set[str],
    probe: str = "",
    spikes: tuple[str, ...] = (),
) -> Case:
    """Inputs drive the membrane around threshold (v_th near 1, v_leak 0) so spikes are frequent and a one-ulp
    difference in v would flip some of them; per-neuron parameters vary slightly around NEURON_VALUES. With
    `probe`, the output buffer holds that state after each step instead of the spikes. `spikes` names the arguments
    (x, z) that hold spikes as bytes."""
    names = _family(kind).params
    params = tuple((p, None if p in per_neuron else NEURON_VALUES[p]) for p in names)
    k = _neuron_kernel(symbol, kind, n, params, probe, spikes)
    drive = NEURON_DRIVE.get(kind, 0.5)
    x = (rng.uniform(0.0, 2.0 * drive, size=(NEURON_STEPS, n))).astype(np.float32)
    if "x" in spikes:
        x = _spikes(rng, NEURON_STEPS, n)
    params = {
        p: (np.float32(NEURON_VALUES[p]) * rng.uniform(0.9, 1.1, n)).astype(np.float32)
        if p in per_neuron
        else np.float32(NEURON_VALUES[p])
        for p in names
    }
    model = _family(kind)
    init = {name: _rand(rng, n, scale=0.5) for name in model.state_names}
    args = {
        "x": x,
        **init,
        model.output: np.zeros((NEURON_STEPS, n), np.float32),
        **{p: params[p] for p in per_neuron},
    }

    def expected() -> dict[str, np.ndarray]:
        state = {name: value.copy() for name, value in init.items()}
        outputs = []
        dtype = "spike" if model.output in spikes else "f32"
        for step in range(NEURON_STEPS):
            _neuron_reference(kind, x[step], state, params, dtype)
            outputs.append(state[probe].copy() if probe else state[model.output])
        return {model.output: np.stack(outputs), **{name: state[name] for name in model.state_names}}

    return Case(
        k, {name: args[name] for name in k.arg_names()}, expected, NEURON_STEPS, frozenset({"x", model.output}), True
    )


# numpy float32 versions of the element-wise functions (what PyTorch computes), by function name
ELEMENTWISE_REFERENCE = {
    "copy": lambda x: x,
    "fill": lambda p: p,
    "scale": lambda x, p: x * p,
    "offset": lambda x, p: x + p,
    "threshold": lambda x, p: (x > p).astype(np.float32),
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "select": lambda c, a, b: np.where(c != 0, a, b),
}
# The functions the export frontend maps (issue 18): their cases draw from their own generator, so that the cases
# built after the element-wise ones keep their inputs
EXPORT_REFERENCE = {
    "div": lambda a, b: a / b,
    "div_by": lambda x, p: x / p,
    "div_into": lambda x, p: p / x,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "clamp_min": np.maximum,
    "clamp_max": np.minimum,
    "ge": lambda a, b: (a >= b).astype(np.float32),
    "le": lambda a, b: (a <= b).astype(np.float32),
    "eq": lambda a, b: (a == b).astype(np.float32),
    "ge_value": lambda x, p: (x >= p).astype(np.float32),
    "le_value": lambda x, p: (x <= p).astype(np.float32),
    "eq_value": lambda x, p: (x == p).astype(np.float32),
    "exp": np.exp,
    "sigmoid": lambda x: np.float32(1) / (np.float32(1) + np.exp(-x)),
}
APPROXIMATE = ("exp", "sigmoid")  # neither numpy nor LLVM rounds exp correctly (masic.ir.arith): within 2 ulps


def _elementwise_cases(rng: np.random.Generator) -> list[Case]:
    """Every element-wise function, with its parameter baked in and per element, bit-exact against numpy (exp and
    sigmoid within tolerance)."""
    n = 1001
    a, b = _rand(rng, n), _rand(rng, n)
    add = ElementwiseAddKernel("add_1001", n)
    cases = [Case(add, {"a": a, "b": b, "y": np.zeros(n, np.float32)}, lambda: {"y": a + b}, exact=True)]
    # add: ElementwiseAddKernel, above
    assert set(ELEMENTWISE_REFERENCE) | set(EXPORT_REFERENCE) == set(FUNCTIONS) - {"add"}
    cases += _function_cases(rng, ELEMENTWISE_REFERENCE, n)
    return cases + _function_cases(np.random.default_rng(18), EXPORT_REFERENCE, n)


def _function_cases(rng: np.random.Generator, references: dict, n: int) -> list[Case]:
    cases = []
    for fn, spec in ((fn, FUNCTIONS[fn]) for fn in references):
        operands = {name: _rand(rng, n) for name in spec.operands}
        if fn == "select":
            operands["c"] = (operands["c"] > 0).astype(np.float32)
        for constant in (0.37, None) if spec.param else (None,):
            kernel = ElementwiseKernel(f"{fn}_{'const' if constant is not None else 'param'}_{n}", fn, n, constant)
            p = np.float32(constant) if constant is not None else _rand(rng, n)
            args = {**operands, **({"p": p} if "p" in kernel.arg_names() else {}), "y": np.zeros(n, np.float32)}
            inputs = [*operands.values(), *([p] if spec.param else [])]
            want = np.broadcast_to(references[fn](*inputs), (n,)).astype(np.float32)
            cases.append(Case(kernel, args, lambda want=want: {"y": want}, exact=fn not in APPROXIMATE))
    return cases


def _interpreted(case: Case) -> Case:
    """A conv or pool case expecting the reference interpreter's result (PyTorch pads both sides alike)."""
    k, a = case.kernel, case.args
    attrs = {"kernel": k.kernel, "stride": k.stride, "padding": k.padding, "row_padding": k.row_padding}
    if isinstance(k, Conv2dKernel):
        node = Node("n", "conv2d", attrs=tuple((attrs | {"dilation": k.dilation, "groups": k.groups}).items()))
        params = {"weight": a["w"], "bias": a.get("b")}
    else:
        node, params = Node("n", f"{k.kind}pool2d", attrs=tuple(attrs.items())), {}
    return replace(case, expected=lambda: {"y": OPS[node.op].interpret(node, Step([a["x"]], params.get, {}, a["x"]))})


def _patch_cases(rng: np.random.Generator, big: bool) -> list[Case]:
    """What row patches (passes/patch_rows.py) run: convolutions and pools whose rows are padded at one border
    only (`row_padding`), and row crops and concats, which are exact copies."""
    windows = [
        Conv2dKernel("conv_rows_top", (3, 9, 10), 4, (3, 3), padding=(1, 1), row_padding=(1, 0)),
        Conv2dKernel(
            "conv_rows_dw_s2", (6, 8, 9), 6, (3, 3), stride=(2, 2), padding=(1, 1), groups=6, row_padding=(0, 1)
        ),
        Conv2dKernel(
            "conv_rows_dil", (4, 11, 12), 5, (3, 3), padding=(2, 1), dilation=(2, 1), bias=False, row_padding=(0, 2)
        ),
        Conv2dKernel("conv_rows_inner", (2, 7, 6), 3, (3, 3), padding=(1, 0), row_padding=(0, 0)),  # no scratch
        Pool2dKernel("maxpool_rows_top", "max", (4, 9, 9), (3, 3), (2, 2), (1, 1), (1, 0)),
        Pool2dKernel("avgpool_rows_bottom", "avg", (3, 8, 7), (2, 2), (1, 1), (1, 0), (0, 1)),
        Pool2dKernel("sumpool_rows", "sum", (3, 8, 7), (3, 3), (1, 2), (1, 1), (0, 1)),
    ]
    cases = [_interpreted(_conv_case(rng, k) if isinstance(k, Conv2dKernel) else _pool_case(rng, k)) for k in windows]
    rows = [
        RowsKernel("crop_rows", ((3, 20, 17),), ((5, 12),)),
        RowsKernel("concat_rows", ((3, 4, 17), (3, 5, 17), (3, 2, 17)), ((0, 4), (0, 5), (0, 2))),
        RowsKernel("gather_rows", ((2, 6, 8), (2, 7, 8)), ((1, 3), (2, 7))),
    ]
    if big:  # above the parallel threshold
        rows.append(RowsKernel("concat_rows_big", ((32, 30, 112), (32, 26, 112)), ((0, 30), (0, 26))))
    for k in rows:
        parts = {f"x{j}": _rand(rng, *shape) for j, shape in enumerate(k.in_shapes)}
        want = np.concatenate([x[:, lo:hi] for x, (lo, hi) in zip(parts.values(), k.rows, strict=True)], axis=1)
        args = {**parts, "y": np.zeros(k.out_shape(), np.float32)}
        cases.append(Case(k, args, lambda want=want: {"y": want}, exact=True))
    assert [c.kernel.scratch_bytes() > 0 for c in cases[:4]] == [True, True, True, False]
    return cases


def _accumulate_case(k: AccumulateDenseKernel, xs: list[np.ndarray], rng: np.random.Generator) -> Case:
    """The accumulate-only dense kernel on the spike inputs `xs` (one per step), against float64 W x + b; its weight
    argument is W transposed."""
    w = _rand(rng, k.out_features, k.in_features, scale=1 / math.sqrt(k.in_features))
    b = _rand(rng, k.out_features)
    args = {**dict(zip(k.step_names("x"), xs, strict=True)), "w": np.ascontiguousarray(w.T), "b": b}
    args |= {y: np.full(k.out_features, np.nan, np.float32) for y in k.step_names("y")}

    def expected() -> dict[str, np.ndarray]:
        bias = b.astype(np.float64) if k.bias else 0.0
        return {
            y: (w.astype(np.float64) @ x + bias).astype(np.float32) for y, x in zip(k.step_names("y"), xs, strict=True)
        }

    return Case(k, {name: args[name] for name in k.arg_names()}, expected)


def _spike_cases(rng: np.random.Generator, big: bool) -> list[Case]:
    """Kernels with spike arguments (bytes): reading them as floats, writing them, copying them; and the
    accumulate-only dense kernel for random, all-zero and all-one spikes, one step and four."""
    cases = [
        _conv_case(rng, Conv2dKernel("conv_spikes_pad", (3, 16, 16), 8, (3, 3), padding=(1, 1), spikes=("x",))),
        _conv_case(rng, Conv2dKernel("conv_spikes", (5, 7, 21), 3, (3, 3), spikes=("x",))),
        _dense_case(rng, DenseKernel("fc_spikes", 100, 10, spikes=("x",))),
        _pool_case(
            rng, Pool2dKernel("maxpool_spikes_pad", "max", (8, 16, 16), (3, 3), (2, 2), (1, 1), spikes=("x", "y"))
        ),
        _pool_case(rng, Pool2dKernel("maxpool_spikes", "max", (3, 7, 9), (2, 2), (2, 2), spikes=("x", "y"))),
        _pool_case(rng, Pool2dKernel("avgpool_spikes_pad", "avg", (4, 9, 11), (3, 3), (1, 2), (1, 1), spikes=("x",))),
        _adaptive_case(rng, AdaptiveAvgPool2dKernel("adaptive_spikes", (6, 10, 13), (3, 4), spikes=("x",))),
        _neuron_case(rng, "lif_spikes_out", "lif", 1003, {"v_th"}, spikes=("z",)),
        _neuron_case(rng, "iaf_spikes_in_out", "iaf", 333, set(), spikes=("x", "z")),
        _neuron_case(rng, "lif_box_probe_spikes_in", "lif_box", 64, set(), probe="v", spikes=("x",)),
    ]
    n = 1001
    a, b, x = _spikes(rng, n), _rand(rng, n), _spikes(rng, n)
    add = ElementwiseAddKernel("add_spikes", n, spikes=("a",))
    cases.append(Case(add, {"a": a, "b": b, "y": np.zeros(n, np.float32)}, lambda: {"y": a + b}, exact=True))
    copy = ElementwiseKernel("copy_spikes", "copy", n, spikes=("x", "y"))
    cases.append(Case(copy, {"x": x, "y": np.zeros(n, np.uint8)}, lambda: {"y": x}, exact=True))
    scale = ElementwiseKernel("scale_spikes", "scale", n, 2.5, spikes=("x",))
    cases.append(Case(scale, {"x": x, "y": np.zeros(n, np.float32)}, lambda: {"y": x * np.float32(2.5)}, exact=True))
    rows = RowsKernel("concat_rows_spikes", ((3, 4, 17), (3, 5, 17)), ((0, 4), (1, 5)), spikes=("x0", "x1", "y"))
    parts = {"x0": _spikes(rng, 3, 4, 17), "x1": _spikes(rng, 3, 5, 17)}
    want = np.concatenate([parts["x0"], parts["x1"][:, 1:]], axis=1)
    cases.append(Case(rows, {**parts, "y": np.zeros(rows.out_shape(), np.uint8)}, lambda: {"y": want}, exact=True))
    accumulate = [
        (AccumulateDenseKernel("acc_dense_100_10", 100, 10), [_spikes(rng, 100)]),
        (AccumulateDenseKernel("acc_dense_37_5_nobias", 37, 5, bias=False), [_spikes(rng, 37, rate=0.5)]),
        (AccumulateDenseKernel("acc_dense_zeros", 48, 12), [np.zeros(48, np.uint8)]),
        (AccumulateDenseKernel("acc_dense_ones", 48, 12), [np.ones(48, np.uint8)]),
        (
            AccumulateDenseKernel("acc_dense_4_steps", 64, 24, steps=4),
            [_spikes(rng, 64, rate=0.2), np.zeros(64, np.uint8), np.ones(64, np.uint8), _spikes(rng, 64, rate=0.1)],
        ),
    ]
    if big:  # above the parallel threshold
        accumulate.append((AccumulateDenseKernel("acc_dense_big", 4096, 1000), [_spikes(rng, 4096, rate=0.14)]))
        accumulate.append(
            (AccumulateDenseKernel("acc_dense_big_4", 1024, 512, steps=4), [_spikes(rng, 1024) for _ in range(4)])
        )
    return cases + [_accumulate_case(k, xs, rng) for k, xs in accumulate] + _bit_cases(rng, big)


# (kernel over bytes, its twin over bit-packed spikes): same data, and `test_bits_match_bytes` compares their outputs
BIT_TWINS: list[tuple[str, str]] = []


def _bits_twin(case: Case) -> Case:
    """The same kernel with its spikes bit-packed (`packed`) and the same data: spike inputs packed per step,
    packed outputs filled with ones (the kernel must clear a word's unused bits)."""
    kernel = replace(case.kernel, symbol=f"{case.kernel.symbol}_bits", packed=True)
    BIT_TWINS.append((case.kernel.symbol, kernel.symbol))
    steps = case.steps
    args = {}
    for name, value in case.args.items():
        if name not in kernel.packed_args():
            args[name] = value
        elif name == "x":
            args[name] = np.stack([pack_bits(v) for v in value.reshape(steps, -1)]).reshape(-1)
        else:
            args[name] = np.full((steps, *kernel.arg_shapes()[name]), 0xFFFFFFFF, np.uint32).reshape(-1)

    def expected() -> dict[str, np.ndarray]:
        want = case.expected()
        for name in set(want) & set(kernel.packed_args()):
            want[name] = np.stack([pack_bits(v) for v in want[name].reshape(steps, -1)]).reshape(-1)
        return want

    return replace(case, kernel=kernel, args=args, expected=expected)


def _bit_cases(rng: np.random.Generator, big: bool) -> list[Case]:
    """Neuron kernels packing their spikes (n around one word) and accumulate-only dense layers reading bits (odd
    sizes, no bias, no spikes, all spikes, whole words), each with its twin over bytes."""
    neurons = [("lif", 1), ("lif", 31), ("iaf", 32), ("lif_box_subtract", 33), ("lif", 1000), ("lif_box", 1000)]
    neurons += [("lsnn", 70), ("lif_refrac", 64)]  # temporaries beside packing
    if big:  # words packed in parallel
        neurons.append(("lif", 40000))
    cases = [_neuron_case(rng, f"{kind}_{n}_z", kind, n, {"v_th"}, spikes=("z",)) for kind, n in neurons]
    dense = [
        (AccumulateDenseKernel("acc_bits_100_10", 100, 10), _spikes(rng, 100)),
        (AccumulateDenseKernel("acc_bits_37_5_nobias", 37, 5, bias=False), _spikes(rng, 37, rate=0.5)),
        (AccumulateDenseKernel("acc_bits_zeros", 48, 12), np.zeros(48, np.uint8)),
        (AccumulateDenseKernel("acc_bits_ones", 48, 12), np.ones(48, np.uint8)),
        (AccumulateDenseKernel("acc_bits_1000_24", 1000, 24), _spikes(rng, 1000, rate=0.1)),
    ]
    if big:  # above the parallel threshold
        dense.append((AccumulateDenseKernel("acc_bits_big", 4096, 1000), _spikes(rng, 4096, rate=0.14)))
    cases += [_accumulate_case(k, [x], rng) for k, x in dense]
    return [twin for case in cases for twin in (case, _bits_twin(case))]


def _stored_activation(array: np.ndarray, block: int) -> np.ndarray:
    """A (C, H, W) activation as a kernel with channel block ``block`` stores it (NCHW, or NCHW{block}c)."""
    return stored_weight(array, f"NCHW{block}c") if block > 1 else array


def _in_stored_layouts(case: Case) -> Case:
    """A conv or pool case with ``x`` passed, and ``y`` expected, as its kernel stores them (``in_block``,
    ``out_block``): the same values in another order."""
    k = case.kernel
    args = case.args | {"x": _stored_activation(case.args["x"], k.in_block)}

    def expected() -> dict[str, np.ndarray]:
        return {"y": _stored_activation(case.expected()["y"], getattr(k, "out_block", 1))}

    return replace(case, args=args, expected=expected)


def _layout_cases(rng: np.random.Generator, big: bool) -> list[Case]:
    """Convs and pools reading channel-blocked inputs (padded: through the NCHW scratch; unpadded: directly) and
    blocked convs writing channel-blocked outputs, of floats and of spikes, grouped and strided."""
    convs = [
        Conv2dKernel("conv_b16_nchw16c", (24, 4, 4), 32, (3, 3), padding=(1, 1), weight_layout="OIHW16o", in_block=8),
        Conv2dKernel("conv_b32_s2_nchw32c", (8, 9, 7), 64, (3, 3), (2, 2), (1, 1), weight_layout="OIHW32o"),
        Conv2dKernel("conv_b4_g3_nchw4c", (9, 5, 5), 12, (2, 2), groups=3, bias=False, weight_layout="OIHW4o"),
        Conv2dKernel("conv_cols_in16", (16, 6, 20), 8, (3, 3), in_block=16),
        Conv2dKernel("conv_pad_in4_spikes", (8, 16, 16), 8, (3, 3), padding=(1, 1), spikes=("x",), in_block=4),
        Conv2dKernel(
            "conv_b16_spikes_nchw16c", (32, 8, 8), 16, (3, 3), padding=(1, 1), weight_layout="OIHW16o", spikes=("x",)
        ),
    ]
    blocks = {"conv_b16_nchw16c": 16, "conv_b32_s2_nchw32c": 32, "conv_b4_g3_nchw4c": 4, "conv_b16_spikes_nchw16c": 16}
    convs = [replace(k, out_block=blocks.get(k.symbol, 1)) for k in convs]
    convs[2], convs[5] = replace(convs[2], in_block=3), replace(convs[5], in_block=16)
    if big:
        big_conv = Conv2dKernel("conv_big_nchw16c", (256, 4, 4), 512, (3, 3), padding=(1, 1), weight_layout="OIHW16o")
        convs.append(replace(big_conv, in_block=16, out_block=16))
    pools = [
        Pool2dKernel("maxpool_in16", "max", (32, 8, 8), (2, 2), (2, 2), in_block=16),
        Pool2dKernel(
            "maxpool_pad_in8_spikes", "max", (8, 16, 16), (3, 3), (2, 2), (1, 1), spikes=("x", "y"), in_block=8
        ),
        Pool2dKernel("avgpool_pad_in4", "avg", (4, 9, 11), (3, 3), (1, 2), (1, 1), in_block=4),
    ]
    cases = [_conv_case(rng, k) for k in convs] + [_pool_case(rng, k) for k in pools]
    return [_in_stored_layouts(case) for case in cases]


FUSED_STEPS = 8


def _fused_cases(
    rng: np.random.Generator, layer: Kernel, kind: str, per_neuron: set[str], probe: str = "", spikes: bool = False
) -> list[Case]:
    """A layer kernel (conv, dense, accumulate-only dense) with a neuron epilogue, run for FUSED_STEPS steps, and
    its twin without one on the same inputs (built and run, not checked itself): the fused kernel's output and
    state must equal, bit for bit, the reference neuron update of the twin's outputs, the synaptic input the
    separate kernels would pass. `spikes`: the neuron writes its spikes as bytes."""
    model, shapes = _family(kind), layer.arg_shapes()
    out_shape = shapes["y"]
    params = tuple((p, None if p in per_neuron else NEURON_VALUES[p]) for p in model.params)
    inputs = ("x",) if layer.arg_dtype("x") == "uint8" else ()
    neuron = _neuron_kernel("", kind, math.prod(out_shape), params, probe)
    fused = replace(layer, symbol=f"{layer.symbol}_{kind}", neuron=neuron)
    fused = fused.with_spikes((*inputs, "z") if spikes else inputs)
    x = _spikes(rng, FUSED_STEPS, *shapes["x"]) if inputs else _rand(rng, FUSED_STEPS, *shapes["x"])
    if layer.packed_args():  # words of bit-packed spikes
        x = np.stack([pack_bits(_spikes(rng, layer.in_features)) for _ in range(FUSED_STEPS)])
    drive = {"lif_box": 10, "lif_box_subtract": 10, "lif": 5, "izhikevich": 30}.get(kind, 2)  # to threshold
    outputs = getattr(layer, "out_channels", None) or layer.out_features
    w = _rand(rng, *shapes["w"], scale=drive / math.sqrt(math.prod(shapes["w"]) / outputs))
    data = {"x": x, "w": w, "b": _rand(rng, *shapes.get("b", (0,))), "scratch": _scratch(layer)}
    data |= {p: (NEURON_VALUES[p] * rng.uniform(0.9, 1.1, out_shape)).astype(np.float32) for p in per_neuron}
    data |= {name: _rand(rng, *out_shape, scale=0.5) for name in model.state_names}
    out = np.zeros((FUSED_STEPS, *out_shape), np.float32)
    twin = Case(layer, {name: data.get(name, out) for name in shapes}, None, FUSED_STEPS, frozenset({"x", "y"}))

    def from_twin(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state = {name: data[name].copy() for name in model.state_names}
        constants = {p: np.float32(NEURON_VALUES[p]) for p in model.params} | {p: data[p] for p in per_neuron}
        steps = []
        for y in outputs["y"]:
            _neuron_reference(kind, y, state, constants, "spike" if spikes else "f32")
            steps.append(state[probe].copy() if probe else state[model.output])
        return {model.output: np.stack(steps), **{name: state[name] for name in model.state_names}}

    args = {name: data.get(name, out) for name in fused.arg_names()}
    return [twin, Case(fused, args, None, FUSED_STEPS, frozenset({"x", model.output}), True, twin, from_twin)]


def _all_fused_cases(rng: np.random.Generator, big: bool) -> list[Case]:
    """Each kernel that takes a neuron epilogue: column and blocked convs (padded, strided), dense, and
    accumulate-only dense over bytes and over bits, with spiking and non-spiking neurons, per-neuron parameters
    and a probe."""
    cases = [
        *_fused_cases(rng, Conv2dKernel("fconv", (3, 16, 16), 8, (3, 3), padding=(1, 1)), "lif", {"v_th"}, spikes=True),
        *_fused_cases(
            rng,
            Conv2dKernel("fconv_b16", (24, 4, 4), 32, (3, 3), padding=(1, 1), weight_layout="OIHW16o"),
            "iaf",
            set(),
        ),
        *_fused_cases(
            rng,
            Conv2dKernel("fconv_s2", (8, 15, 13), 16, (3, 3), stride=(2, 2), padding=(1, 1), bias=False, spikes=("x",)),
            "lif_box_subtract",
            {"v_th"},
            spikes=True,
        ),
        *_fused_cases(rng, Conv2dKernel("fconv_probe", (5, 7, 21), 3, (1, 1)), "lif", set(), probe="v"),
        *_fused_cases(  # stored NCHW16c: the neuron's state and parameters too
            rng,
            Conv2dKernel("fconv_nchw16c", (8, 6, 5), 32, (3, 3), padding=(1, 1), weight_layout="OIHW16o", out_block=16),
            "lif",
            {"v_th"},
            spikes=True,
        ),
        *_fused_cases(rng, DenseKernel("fdense", 100, 10), "li", {"dt_tau_mem"}),
        *_fused_cases(rng, DenseKernel("fdense_spikes", 37, 5, bias=False, spikes=("x",)), "li_box", set()),
        *_fused_cases(rng, AccumulateDenseKernel("facc", 64, 24), "lif", set(), spikes=True),
        *_fused_cases(rng, AccumulateDenseKernel("facc_nobias", 37, 5, bias=False), "iaf", {"v_reset"}),
        *_fused_cases(rng, AccumulateDenseKernel("facc_bits", 70, 24, packed=True), "li", set()),
        # temporaries in an epilogue, and a family's per-neuron parameters and states beside the layer's arguments
        *_fused_cases(rng, DenseKernel("fdense_lsnn", 48, 20), "lsnn", {"beta"}, spikes=True),
        *_fused_cases(rng, DenseKernel("fdense_lsnn_probe", 16, 32), "lsnn", set(), probe="v"),
        *_fused_cases(rng, Conv2dKernel("fconv_adex", (3, 9, 9), 8, (3, 3), padding=(1, 1)), "lif_adex", set()),
        *_fused_cases(rng, AccumulateDenseKernel("facc_izhikevich", 40, 16), "izhikevich", {"u_gain"}, spikes=True),
    ]
    if big:  # above the parallel thresholds
        big_conv = Conv2dKernel("fconv_big", (64, 32, 32), 64, (3, 3), padding=(1, 1))
        cases += _fused_cases(rng, big_conv, "lif", set(), spikes=True)
        cases += _fused_cases(rng, AccumulateDenseKernel("facc_big", 1024, 1024), "lif", {"v_th"}, spikes=True)
        cases += _fused_cases(rng, DenseKernel("fdense_big", 1024, 512), "lif", set())
    return cases


def _cases(big: bool) -> list[Case]:
    """All cases; ``big`` adds the large shapes (host only: they are slow under qemu)."""
    rng = np.random.default_rng(0)
    convs = [
        Conv2dKernel("conv_pad", (3, 16, 16), 8, (3, 3), padding=(1, 1)),
        Conv2dKernel("conv_s2_nobias", (8, 15, 13), 16, (3, 3), stride=(2, 2), padding=(1, 1), bias=False),
        Conv2dKernel("conv_dil", (4, 20, 20), 6, (3, 5), padding=(2, 1), dilation=(2, 2)),
        Conv2dKernel("conv_dw", (16, 12, 12), 16, (3, 3), padding=(1, 1), groups=16),
        Conv2dKernel("conv_grouped", (8, 10, 9), 12, (2, 2), stride=(2, 1), groups=4, bias=False),
        Conv2dKernel("conv_1x1", (5, 7, 21), 3, (1, 1)),
        # vectorised along output channels (weights blocked): a whole vector, two, a part of one, groups
        Conv2dKernel("conv_b16", (24, 4, 4), 32, (3, 3), padding=(1, 1), weight_layout="OIHW16o"),
        Conv2dKernel("conv_b32_s2", (8, 9, 7), 64, (3, 3), stride=(2, 2), padding=(1, 1), weight_layout="OIHW32o"),
        Conv2dKernel("conv_b12_dil", (5, 11, 6), 24, (3, 2), padding=(2, 1), dilation=(2, 2), weight_layout="OIHW12o"),
        Conv2dKernel("conv_b4_g3", (9, 5, 5), 12, (2, 2), groups=3, bias=False, weight_layout="OIHW4o"),
        Conv2dKernel("conv_b8_1x1", (16, 2, 2), 24, (1, 1), weight_layout="OIHW8o"),
        Conv2dKernel(
            "conv_b16_rows", (16, 6, 4), 16, (3, 3), padding=(1, 1), row_padding=(0, 1), weight_layout="OIHW16o"
        ),
    ]
    dense = [DenseKernel("fc_100_10", 100, 10), DenseKernel("fc_37_5", 37, 5, bias=False)]
    # several steps in one call (a batched layer): more steps than one group of accumulators, odd sizes, no bias
    dense += [DenseKernel("fc_steps4", 100, 12, steps=4), DenseKernel("fc_steps3", 37, 5, bias=False, steps=3)]
    dense.append(DenseKernel("fc_steps20", 64, 24, steps=20))
    pools = [
        Pool2dKernel("maxpool_pad", "max", (8, 16, 16), (3, 3), (2, 2), (1, 1)),
        Pool2dKernel("maxpool_odd", "max", (3, 7, 9), (2, 2), (2, 2)),
        Pool2dKernel("avgpool", "avg", (8, 16, 16), (2, 2), (2, 2)),
        Pool2dKernel("avgpool_pad", "avg", (4, 9, 11), (3, 3), (1, 2), (1, 1)),
        Pool2dKernel("sumpool", "sum", (16, 16, 16), (2, 2), (2, 2)),
        Pool2dKernel("sumpool_pad", "sum", (3, 9, 7), (3, 2), (2, 2), (1, 1)),
    ]
    adaptive = [
        AdaptiveAvgPool2dKernel("adaptive_uneven", (6, 10, 13), (3, 4)),
        AdaptiveAvgPool2dKernel("adaptive_up", (512, 1, 1), (7, 7)),  # VGG's classifier input on 32x32 images
        AdaptiveAvgPool2dKernel("adaptive_mixed", (4, 5, 9), (7, 2)),
    ]
    if big:
        convs.append(Conv2dKernel("conv_big", (64, 32, 32), 64, (3, 3), padding=(1, 1)))
        convs.append(Conv2dKernel("conv_big_b16", (256, 4, 4), 512, (3, 3), padding=(1, 1), weight_layout="OIHW16o"))
        dense += [DenseKernel("fc_big", 4096, 1000), DenseKernel("fc_big_steps4", 4096, 1000, steps=4)]
    cases = [_conv_case(rng, k) for k in convs] + [_dense_case(rng, k) for k in dense]
    cases += [_pool_case(rng, k) for k in pools] + [_adaptive_case(rng, k) for k in adaptive]
    neurons = [
        ("lif", 1003, {"v_th"}),
        ("lif_box", 517, set()),
        ("lif_box_subtract", 300, {"v_th"}),
        ("li", 64, {"dt_tau_mem", "v_leak"}),
        ("li_box", 100, set()),
        ("iaf", 333, {"v_th", "v_reset"}),
        # families whose states read each other (copied into temporaries first), and an exp term
        ("lsnn", 300, {"beta"}),
        ("lif_ex", 257, set()),
        ("lif_adex", 129, {"adaptation_spike"}),
        ("lif_refrac", 200, {"rho_reset"}),
        ("izhikevich", 100, {"u_jump"}),
    ]
    cases.append(_neuron_case(rng, "lif_box_probe_v_257", "lif_box", 257, set(), probe="v"))
    cases.append(_neuron_case(rng, "lsnn_probe_theta_64", "lsnn", 64, set(), probe="theta"))
    cases.append(_neuron_case(rng, "lsnn_probe_v_32", "lsnn", 32, set(), probe="v"))
    if big:
        neurons.append(("lif", 40000, set()))  # above the parallel threshold
    cases += [_neuron_case(rng, f"{kind}_{n}", kind, n, per) for kind, n, per in neurons]
    cases += _elementwise_cases(rng) + _patch_cases(rng, big) + _spike_cases(rng, big) + _layout_cases(rng, big)
    return cases + _all_fused_cases(rng, big)


def _harness_source(cases: list[Case]) -> str:
    """C program that, for each case, loads every argument from DIR/<symbol>.<arg>.bin, calls the kernel
    ``steps`` times (advancing the stepped arguments), and writes every argument back to DIR/<symbol>.<arg>.out."""
    lines = [
        "#include <stdint.h>",
        "#include <stdio.h>",
        "#include <stdlib.h>",
        "#include <string.h>",
        '#include "masic_model.h"',
        "static char path[4096];",
        "static char *load(const char *dir, const char *name, size_t n) {",
        "  char *p = malloc(n);",
        '  snprintf(path, sizeof path, "%s/%s.bin", dir, name);',
        '  FILE *f = fopen(path, "rb");',
        "  if (!p || !f || fread(p, 1, n, f) != n) { perror(path); exit(2); }",
        "  fclose(f);",
        "  return p;",
        "}",
        "static void save(const char *dir, const char *name, const char *p, size_t n) {",
        '  snprintf(path, sizeof path, "%s/%s.out", dir, name);',
        '  FILE *f = fopen(path, "wb");',
        "  if (!f || fwrite(p, 1, n, f) != n) { perror(path); exit(2); }",
        "  fclose(f);",
        "}",
    ]
    for case in cases:  # float or uint8_t pointers: the harness passes bytes
        lines.append(f"int32_t {case.kernel.symbol}({', '.join('void*' for _ in case.args)});")
    lines += ["int main(int argc, char **argv) {", "  if (argc != 2 || masic_parallel_init(2) != 0) return 2;"]
    for case in cases:
        sym = case.kernel.symbol
        lines.append("  {")
        call = []
        for j, name in enumerate(case.args):
            nbytes = _arg_data(case, name).nbytes
            lines.append(f'    char *a{j} = load(argv[1], "{sym}.{name}", {nbytes});')
            stride = nbytes // case.steps if name in case.stepped else 0
            call.append(f"a{j} + s * {stride}")
        lines.append(f"    for (int s = 0; s < {case.steps}; s++)")
        lines.append(f"      if ({sym}({', '.join(call)}) != 0) return 3;")
        for j, name in enumerate(case.args):
            lines.append(f'    save(argv[1], "{sym}.{name}", a{j}, {_arg_data(case, name).nbytes});')
            lines.append(f"    free(a{j});")
        lines.append("  }")
    lines += ["  masic_parallel_shutdown();", "  return 0;", "}"]
    return "\n".join(lines) + "\n"


def _arg_data(case: Case, name: str) -> np.ndarray:
    """An argument's initial contents in the kernel's element type (scratch: raw bytes)."""
    value = case.args[name]
    return value if name == "scratch" else np.ascontiguousarray(value, dtype=case.kernel.arg_dtype(name))


def _run(cases: list[Case], target: dict, compiler: list[str], runner: list[str], work: Path) -> Path:
    """Builds the kernels into work/kernels.o, links and runs the harness; returns ``work`` (holding the outputs)."""
    build_object([c.kernel for c in cases], target, work / "kernels.o")
    (work / "main.c").write_text(_harness_source(cases))
    for case in cases:
        for name in case.args:
            _arg_data(case, name).tofile(work / f"{case.kernel.symbol}.{name}.bin")
    exe = work / "prog"
    link = [*compiler, "-O2", "-std=c11", "-Wall", "-Werror", f"-I{RUNTIME}", str(work / "main.c")]
    link += [str(work / "kernels.o"), str(RUNTIME / "parallel.c"), "-o", str(exe), "-lpthread", "-lm"]
    subprocess.run(link, check=True)
    subprocess.run([*runner, str(exe), str(work)], check=True, timeout=300)
    return work


HOST_CASES = _cases(big=True)
AARCH64_CASES = _cases(big=False)
CHECKED_HOST_CASES = [case for case in HOST_CASES if case.expected or case.twin]  # twins are checked via their pair
CHECKED_AARCH64_CASES = [case for case in AARCH64_CASES if case.expected or case.twin]


pytestmark = pytest.mark.usefixtures("fresh_cache")


def run_on_host(cases: list[Case], work: Path) -> Path:
    return _run(cases, host_target(), ["cc"], [], work)


def run_on_aarch64(cases: list[Case], work: Path) -> Path:
    """The cases built with the cross toolchain and run under qemu-aarch64, which scripts/setup.sh installs."""
    if not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")):
        pytest.fail("aarch64 cross toolchain or qemu-aarch64 missing: run scripts/setup.sh")
    return _run(cases, AARCH64, ["aarch64-linux-gnu-gcc", "-static"], ["qemu-aarch64"], work)


@pytest.fixture(scope="module")
def host_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_on_host(HOST_CASES, tmp_path_factory.mktemp("host"))


@pytest.fixture(scope="module")
def aarch64_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_on_aarch64(AARCH64_CASES, tmp_path_factory.mktemp("arm"))


def _outputs(case: Case, work: Path) -> dict[str, np.ndarray]:
    """Every argument of a case after the run, shaped as its initial contents."""
    return {
        name: np.fromfile(work / f"{case.kernel.symbol}.{name}.out", case.kernel.arg_dtype(name)).reshape(a.shape)
        for name, a in case.args.items()
        if name != "scratch"
    }


def _check(case: Case, work: Path) -> None:
    sym = case.kernel.symbol
    expected = case.expected_from_twin(_outputs(case.twin, work)) if case.twin else case.expected()
    for name, want in expected.items():
        got = np.fromfile(work / f"{sym}.{name}.out", case.kernel.arg_dtype(name)).reshape(want.shape)
        if case.exact:
            mismatch = np.flatnonzero(got.ravel() != want.ravel())
            assert mismatch.size == 0, f"{sym}.{name}: {mismatch.size} of {got.size} values differ"
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=sym)
        neuron = case.kernel if isinstance(case.kernel, NeuronKernel) else getattr(case.kernel, "neuron", None)
        spikes = name == "z" and not (neuron.probe or case.kernel.packed_args())  # packed: its twin's bytes count
        if spikes:  # the inputs must exercise the threshold
            assert 0.02 < want.mean() < 0.98, f"{sym}: spike rate {want.mean()}"


@pytest.mark.slow
@pytest.mark.parametrize("case", CHECKED_HOST_CASES, ids=lambda c: c.kernel.symbol)
def test_host(case: Case, host_run: Path) -> None:
    _check(case, host_run)


@pytest.mark.slow
@pytest.mark.parametrize("case", CHECKED_AARCH64_CASES, ids=lambda c: c.kernel.symbol)
def test_aarch64(case: Case, aarch64_run: Path) -> None:
    _check(case, aarch64_run)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["host_run", "aarch64_run"])
def test_bits_match_bytes(run: str, request: pytest.FixtureRequest) -> None:
    """A kernel over bit-packed spikes computes exactly what its twin over bytes does: the neuron kernel's words
    are its twin's bytes packed by numpy (and the same states), the accumulate-only kernel's sums the same floats."""
    work = request.getfixturevalue(run)
    cases = {c.kernel.symbol: c for c in (HOST_CASES if run == "host_run" else AARCH64_CASES)}
    twins = [(cases[a], cases[b]) for a, b in dict.fromkeys(BIT_TWINS) if b in cases]  # big ones: host only
    assert len(twins) >= 10
    for byte_case, bit_case in twins:
        byte_symbol, bit_symbol = byte_case.kernel.symbol, bit_case.kernel.symbol
        for name in bit_case.expected():
            got = np.fromfile(work / f"{bit_symbol}.{name}.out", bit_case.kernel.arg_dtype(name))
            twin = np.fromfile(work / f"{byte_symbol}.{name}.out", byte_case.kernel.arg_dtype(name))
            if name in bit_case.kernel.packed_args():
                twin = np.stack([pack_bits(v) for v in twin.reshape(bit_case.steps, -1)]).reshape(-1)
            np.testing.assert_array_equal(got, twin, err_msg=f"{bit_symbol}.{name}")


def _symbols(obj: Path, *flags: str) -> set[str]:
    out = subprocess.run(["nm", *flags, str(obj)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.mark.slow
@pytest.mark.parametrize("run", ["host_run", "aarch64_run"])
def test_objects_need_no_runtime_but_parallel_launch(run: str, request: pytest.FixtureRequest) -> None:
    """Kernels must not call the TVM runtime (workspace allocation, packed API, error reporting): the only hook
    is the weak __TVMBackendParallelLaunch slot, which runtime/parallel.c fills. LLVM may turn copy and fill
    loops into the C library's memcpy / memset, and exp into its expf, which the static link provides."""
    obj = request.getfixturevalue(run) / "kernels.o"
    assert _symbols(obj, "-u") <= {"memcpy", "memset", "expf"}  # exp: the C library's expf (the link has -lm)
    symbols = _symbols(obj)
    assert "__TVMBackendParallelLaunch" in symbols
    assert not {s for s in symbols if "Workspace" in s or s.startswith("TVMFFI")}


@pytest.mark.slow
def test_build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second build of the same kernels is served from the cache (no LLVM), byte for byte."""
    import tvm

    monkeypatch.setenv("MASIC_CACHE_DIR", str(tmp_path / "cache"))
    kernels = [ElementwiseKernel("cached_scale", "scale", 64, 2.0), ElementwiseAddKernel("cached_add", 64)]
    build_object(kernels, host_target(), tmp_path / "a.o")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt despite a cache hit")

    monkeypatch.setattr(tvm.tirx, "build", fail)
    build_object(kernels, host_target(), tmp_path / "b.o")
    assert (tmp_path / "a.o").read_bytes() == (tmp_path / "b.o").read_bytes()
    with pytest.raises(AssertionError, match="rebuilt"):
        build_object([ElementwiseKernel("cached_scale", "scale", 64, 3.0)], host_target(), tmp_path / "c.o")


@pytest.mark.parametrize(
    ("kernel", "shape"),
    [
        (Conv2dKernel("c", (3, 16, 16), 8, (3, 3), padding=(1, 1)), (8, 16, 16)),
        (Conv2dKernel("c", (8, 15, 13), 16, (3, 3), stride=(2, 2), padding=(1, 1)), (16, 8, 7)),
        (Conv2dKernel("c", (4, 20, 20), 6, (3, 5), padding=(2, 1), dilation=(2, 2)), (6, 20, 14)),
        (Pool2dKernel("p", "max", (8, 16, 16), (3, 3), (2, 2), (1, 1)), (8, 8, 8)),
        (Pool2dKernel("p", "avg", (3, 7, 9), (2, 2), (2, 2)), (3, 3, 4)),
    ],
)
def test_out_shape_matches_torch(kernel: Conv2dKernel | Pool2dKernel, shape: tuple[int, int, int]) -> None:
    x = torch.zeros(1, *kernel.in_shape)
    if isinstance(kernel, Conv2dKernel):
        w = torch.zeros(kernel.weight_shape())
        y = F.conv2d(x, w, None, kernel.stride, kernel.padding, kernel.dilation, kernel.groups)
    else:
        y = F.max_pool2d(x, kernel.kernel, kernel.stride, kernel.padding)
    assert kernel.out_shape() == shape == tuple(y.shape[1:])


def test_arg_names_and_scratch() -> None:
    conv = Conv2dKernel("c", (3, 16, 16), 8, (3, 3), padding=(1, 1))
    assert conv.arg_names() == ("x", "w", "b", "scratch", "y")
    assert conv.scratch_bytes() == 3 * 18 * 18 * 4
    bare = Conv2dKernel("c", (3, 16, 16), 8, (3, 3), bias=False)
    assert (bare.arg_names(), bare.scratch_bytes()) == (("x", "w", "y"), 0)
    assert DenseKernel("d", 10, 5, bias=False).arg_names() == ("x", "w", "y")
    assert DenseKernel("d", 10, 5, steps=2).arg_names() == ("x0", "x1", "w", "b", "y0", "y1")
    assert Pool2dKernel("p", "avg", (3, 8, 8), (2, 2), (2, 2)).arg_names() == ("x", "y")
    lif = NeuronKernel(
        "n",
        "lif",
        10,
        (("v_th", None), ("dt_tau_mem", 0.1), ("v_reset", None), ("neg_dt_tau_syn", -0.2), ("v_leak", 0.0)),
    )
    assert lif.arg_names() == ("x", "v", "i", "z", "v_th", "v_reset")
    assert NeuronKernel("n", "li_box", 4, (("dt_tau_mem", 0.1), ("v_leak", 0.0))).arg_names() == ("x", "v", "out")
    with pytest.raises(ValueError, match="needs parameters"):
        NeuronKernel("n", "iaf", 4, (("v_th", 1.0),))
    with pytest.raises(ValueError, match="groups"):
        Conv2dKernel("c", (3, 8, 8), 4, (3, 3), groups=2)


POOL_STRESS = r"""
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include "masic_model.h"
typedef struct { void *sync_handle; int num_task; } Env;
typedef int (*Lambda)(int, Env *, void *);
extern int (*__TVMBackendParallelLaunch)(Lambda, void *, int);
static atomic_int hits[64];
static atomic_int stop;
static int count(int task, Env *env, void *data) {
  (void)data;
  if (task < 0 || task >= env->num_task) return 7;
  atomic_fetch_add(&hits[task], 1);
  return 0;
}
static int nested(int task, Env *env, void *data) {  /* a launch inside a task runs serially */
  return __TVMBackendParallelLaunch(count, data, 3) + count(task, env, data);
}
static void *spin(void *arg) {  /* takes a core, as the loading thread does when weights stream */
  (void)arg;
  while (!atomic_load(&stop)) {
  }
  return NULL;
}
static int fail(int task, Env *env, void *data) { (void)env; (void)data; return task == 1 ? 5 : 0; }
int main(void) {
  if (masic_parallel_init(0) != 0 || masic_parallel_num_threads() < 1) return 2;
  int p = masic_parallel_num_threads(), own = p > 1 ? 4 * p : 1, expect[64] = {0};
  pthread_t busy;
  if (pthread_create(&busy, NULL, spin, NULL) != 0) return 2;
  for (int round = 0; round < 20000; round++) {
    int n = round % 7;  /* 0 leaves the cut to the pool: four tasks per thread */
    if (__TVMBackendParallelLaunch(count, NULL, n) != 0) return 3;
    for (int t = 0; t < (n ? n : own); t++) expect[t]++;
  }
  atomic_store(&stop, 1);
  pthread_join(busy, NULL);
  if (__TVMBackendParallelLaunch(nested, NULL, 0) != 0) return 4;
  for (int t = 0; t < 3; t++) expect[t] += own;
  for (int t = 0; t < own; t++) expect[t]++;
  for (int t = 0; t < 64; t++)
    if (atomic_load(&hits[t]) != expect[t]) { printf("task %d: %d != %d\n", t, atomic_load(&hits[t]), expect[t]); return 5; }
  if (__TVMBackendParallelLaunch(fail, NULL, 4) != 5) return 7;
  masic_parallel_shutdown();
  return masic_parallel_init(3) == 0 && __TVMBackendParallelLaunch(count, NULL, 0) == 0 ? 0 : 8;
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("threads", ["native", "qemu"])
def test_parallel_pool(threads: str, tmp_path: Path) -> None:
    """runtime/parallel.c under stress: every task runs exactly once per launch for any num_task while another
    thread takes a core, nested launches run serially, task errors propagate, and the pool can be restarted."""
    (tmp_path / "stress.c").write_text(POOL_STRESS)
    compiler, runner = (["cc"], []) if threads == "native" else (["aarch64-linux-gnu-gcc", "-static"], ["qemu-aarch64"])
    if not shutil.which(compiler[0]) or (runner and not shutil.which(runner[0])):
        pytest.fail(f"{compiler[0]} or {runner} missing: run scripts/setup.sh")
    exe = tmp_path / "stress"
    flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME}"]
    subprocess.run(
        [*compiler, *flags, str(tmp_path / "stress.c"), str(RUNTIME / "parallel.c"), "-o", str(exe), "-lpthread"],
        check=True,
    )
    subprocess.run([*runner, str(exe)], check=True, timeout=120)


@pytest.mark.parametrize(
    ("kernel", "parallel"),
    [
        (DenseKernel("d", 1024, 1024), True),
        (DenseKernel("d", 256, 64), False),
        (DenseKernel("d", 1024, 256, steps=4), True),
        (DenseKernel("d", 64, 64, steps=4), False),
        (Conv2dKernel("c", (1, 28, 28), 32, (5, 5)), True),
        (Conv2dKernel("c", (1, 8, 8), 16, (3, 3), padding=(1, 1)), False),
        (Conv2dKernel("c", (96, 2, 2), 576, (1, 1), weight_layout="OIHW16o"), False),  # 4 us on one thread
        (Conv2dKernel("c", (256, 4, 4), 512, (3, 3), padding=(1, 1), weight_layout="OIHW16o"), True),
        (Pool2dKernel("p", "max", (64, 8, 8), (2, 2), (2, 2)), False),
        (Pool2dKernel("p", "max", (64, 32, 32), (2, 2), (2, 2)), True),
    ],
)
def test_only_kernels_with_enough_work_wake_the_thread_pool(kernel, parallel: bool) -> None:
    """A parallel launch wakes the pool, which costs more than a small kernel's whole work."""
    assert ("T.parallel" in prim_func(kernel, 8).script()) == parallel
