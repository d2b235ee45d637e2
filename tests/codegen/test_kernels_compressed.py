"""Kernels over compressed weights (`masic.ir.weight_formats`): every layer kernel family and weight layout (dense
(out, in), accumulate-only "IO", conv OIHW and OIHW{ob}o with NCHW{c}c activations, several steps per call,
bit-packed spikes, fused neurons) with float16 and int8 weights, built for x86_64 and aarch64 (run under qemu).

Each compressed kernel is checked bit for bit:
- float16: against the same float32 kernel run on the float16 weights converted to float32 (a kernel converts each
  weight as it loads it, exactly, and then computes as over float32 weights);
- int8 over spikes: against the reference interpreter (`masic.ir.reference`, `int8_output`): the sum of q * x is an
  integer, so the kernel's int32 sum is exact, whatever the order;
- int8 over float32 activations: against the float32 kernel without bias run on float32(q) (the same float32 sums
  in the same order), then float32(sum) * scale + b in numpy;
- with a fused neuron: against the reference neuron update of the unfused compressed kernel's outputs.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from masic.targets import get_target

from masic.codegen.build import build_object, host_target
from masic.codegen.kernels import HALF, INT8, AccumulateDenseKernel, Conv2dKernel, DenseKernel, Kernel
from masic.codegen.weights import stored_weight
from masic.ir.graph import Node, pack_bits
from masic.ir.ops import OPS
from masic.ir.reference import Step
from masic.ir.weight_formats import dequantized, quantize
from tests.codegen.test_kernels import (
    Case,
    _accumulate_case,
    _check,
    _conv_case,
    _dense_case,
    _fused_cases,
    _in_stored_layouts,
    _spikes,
    run_on_aarch64,
    run_on_host,
)

IR_DTYPE = {HALF: "f16", INT8: "i8"}


def _stored(k: Kernel, logical: np.ndarray) -> np.ndarray:
    """A logical weight (dense (out, in), conv OIHW) as kernel `k` takes it."""
    if isinstance(k, AccumulateDenseKernel):
        return np.ascontiguousarray(logical.T)
    return np.ascontiguousarray(stored_weight(logical, k.weight_layout) if isinstance(k, Conv2dKernel) else logical)


def _logical(k: Kernel, w: np.ndarray) -> np.ndarray:
    """The inverse of `_stored`."""
    if isinstance(k, AccumulateDenseKernel):
        return w.T
    if isinstance(k, Conv2dKernel) and w.ndim == 5:  # (O/ob, I, kh, kw, ob)
        return w.transpose(0, 4, 1, 2, 3).reshape(k.out_channels, *w.shape[1:4])
    return w


def _per_output(k: Kernel, vector: np.ndarray) -> np.ndarray:
    """A per-output-channel vector broadcast to one step's output as the kernel stores it."""
    if not isinstance(k, Conv2dKernel):
        return vector
    full = np.broadcast_to(vector[:, None, None], k.out_shape())
    return stored_weight(full, f"NCHW{k.out_block}c") if k.out_block > 1 else full


def _steps(k: Kernel, base: str) -> tuple[str, ...]:
    """The per-step arguments named `base` (a conv has one step)."""
    return k.step_names(base) if hasattr(k, "step_names") else (base,)


def _outputs(k: Kernel) -> list[str]:
    """The arguments a layer kernel writes: each step's y, or its neuron's output and states."""
    if k.neuron is None:
        return list(_steps(k, "y"))
    return [k.neuron.definition.output, *k.neuron.definition.state_names]


def _compressed(case: Case, dtype: str, twin: Case | None = None) -> list[Case]:
    """`case`'s kernel with its weight stored as `dtype`, checked against a float32 twin (module docstring): the
    twin built here (returned first), or for a fused case the given unfused compressed case `twin`."""
    k = case.kernel
    stored, scale = quantize(_logical(k, case.args["w"]), IR_DTYPE[dtype])
    compressed = replace(k, symbol=f"{k.symbol}_{IR_DTYPE[dtype]}", weight_dtype=dtype)
    data = case.args | {"w": _stored(k, stored), "scale": scale}
    args = {name: data[name] for name in compressed.arg_names()}
    if twin is not None:  # fused: the neuron update of the unfused kernel's outputs
        return [replace(case, kernel=compressed, args=args, twin=twin)]
    as_float = _stored(k, dequantized(stored, None))  # float32(q) for int8
    if dtype == HALF:
        reference = replace(k, symbol=f"{compressed.symbol}_ref")
        twin = replace(case, kernel=reference, args=case.args | {"w": as_float}, expected=None)

        def same(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: outputs[name] for name in _outputs(k)}

        return [twin, replace(case, kernel=compressed, args=args, expected=None, twin=twin, expected_from_twin=same)]
    reference = replace(k, symbol=f"{compressed.symbol}_ref", bias=False)
    twin_args = {name: (as_float if name == "w" else case.args[name]) for name in reference.arg_names()}
    twin = replace(case, kernel=reference, args=twin_args, expected=None)
    per_scale, bias = _per_output(k, scale), _per_output(k, case.args.get("b", np.zeros_like(scale)))

    def scaled(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {name: outputs[name].astype(np.float32) * per_scale for name in _outputs(k)}
        return {name: value + bias if k.bias else value for name, value in out.items()}

    return [twin, replace(case, kernel=compressed, args=args, expected=None, twin=twin, expected_from_twin=scaled)]


def _interpreted_int8(case: Case) -> Case:
    """An int8 layer over spikes (one step per call) against the reference interpreter: conv2d or dense with the
    int8 weight, its scale and the bias, bit for bit."""
    k, a = case.kernel, case.args
    params = {"weight": _logical(k, a["w"]), "weight_scale": a["scale"], "bias": a.get("b")}
    if isinstance(k, Conv2dKernel):
        attrs = {"kernel": k.kernel, "stride": k.stride, "padding": k.padding, "row_padding": k.row_padding}
        node = Node("n", "conv2d", attrs=tuple((attrs | {"dilation": k.dilation, "groups": k.groups}).items()))
        inputs = [a["x"] if k.in_block == 1 else _unblocked(a["x"])]
    elif k.packed_args():
        node, inputs = Node("n", "dense"), [_unpacked(a["x"], k.in_features)]
    else:
        node, inputs = Node("n", "dense"), [a[name] for name in k.step_names("x")]

    def expected() -> dict[str, np.ndarray]:
        out = {}
        for y, x in zip(_steps(k, "y"), inputs, strict=True):
            value = OPS[node.op].interpret(node, Step([x], params.get, {}, x))
            out[y] = stored_weight(value, f"NCHW{k.out_block}c") if getattr(k, "out_block", 1) > 1 else value
        return out

    return replace(case, expected=expected, exact=True, twin=None, expected_from_twin=None)


def _unpacked(words: np.ndarray, n: int) -> np.ndarray:
    """Bit-packed spikes (bit b of word w: element 32 w + b) as bytes."""
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    return bits.reshape(-1)[:n].astype(np.uint8)


def _unblocked(x: np.ndarray) -> np.ndarray:
    """A (C/c, H, W, c) activation as (C, H, W)."""
    cb, h, w, c = x.shape
    return x.transpose(0, 3, 1, 2).reshape(cb * c, h, w)


def _layers(rng: np.random.Generator) -> list[Case]:
    """Unfused float32 layer cases of every family and layout, over float32 activations and over spikes."""
    convs = [
        Conv2dKernel("qconv_pad", (3, 16, 16), 8, (3, 3), padding=(1, 1)),
        Conv2dKernel("qconv_s2_nobias", (8, 15, 13), 16, (3, 3), stride=(2, 2), padding=(1, 1), bias=False),
        Conv2dKernel("qconv_dw", (16, 12, 12), 16, (3, 3), padding=(1, 1), groups=16),
        Conv2dKernel("qconv_b16", (24, 4, 4), 32, (3, 3), padding=(1, 1), weight_layout="OIHW16o"),
        Conv2dKernel("qconv_b4_g3", (9, 5, 5), 12, (2, 2), groups=3, bias=False, weight_layout="OIHW4o"),
        Conv2dKernel("qconv_spikes_pad", (5, 16, 16), 8, (3, 3), padding=(1, 1), spikes=("x",)),
        Conv2dKernel(
            "qconv_spikes_b16", (32, 8, 8), 16, (3, 3), padding=(1, 1), weight_layout="OIHW16o", spikes=("x",)
        ),
    ]
    cases = [_conv_case(rng, k) for k in convs]
    # A blocked int8 conv over spikes sums chunks of input channels in int16 on NEON: several chunks per group,
    # unpadded (the input read as is), with every spike on and every weight at 127 (the largest partial sums)
    largest = Conv2dKernel(
        "qconv_b16_largest", (128, 4, 4), 32, (3, 3), groups=2, weight_layout="OIHW16o", spikes=("x",)
    )
    case = _conv_case(rng, largest)
    cases.append(replace(case, args=case.args | {"x": np.ones_like(case.args["x"]), "w": np.ones_like(case.args["w"])}))
    # ... and so does a column conv: rows of the map in the register tile (9 rows: an odd tile), strided and dilated
    convs = [
        Conv2dKernel("qconv_spikes_s2_d2", (12, 17, 19), 8, (3, 3), (2, 2), (2, 2), (2, 2), spikes=("x",)),
        Conv2dKernel("qconv_spikes_largest", (64, 6, 8), 8, (3, 3), groups=2, spikes=("x",)),
    ]
    cases.append(_conv_case(rng, convs[0]))
    case = _conv_case(rng, convs[1])
    cases.append(replace(case, args=case.args | {"x": np.ones_like(case.args["x"]), "w": np.ones_like(case.args["w"])}))
    blocked = [  # channel-blocked activations in and out
        Conv2dKernel(
            "qconv_b16_nchw16c",
            (32, 8, 8),
            16,
            (3, 3),
            padding=(1, 1),
            weight_layout="OIHW16o",
            spikes=("x",),
            in_block=16,
            out_block=16,
        ),
        Conv2dKernel("qconv_b16_f_nchw16c", (24, 4, 4), 32, (3, 3), padding=(1, 1), weight_layout="OIHW16o"),
    ]
    blocked[1] = replace(blocked[1], in_block=8, out_block=16)
    cases += [_in_stored_layouts(_conv_case(rng, k)) for k in blocked]
    dense = [
        DenseKernel("qfc_100_10", 100, 10),
        DenseKernel("qfc_37_5", 37, 5, bias=False),
        DenseKernel("qfc_spikes", 100, 12, spikes=("x",)),
        DenseKernel("qfc_steps4", 100, 12, steps=4),
        DenseKernel("qfc_steps3_spikes", 37, 5, bias=False, steps=3, spikes=("x0", "x1", "x2")),
    ]
    # int8 over spikes sums in int16 on NEON, 16 lanes (8 when the inputs are a multiple of 8 only): one step, steps
    # in a group and beyond it
    dense += [
        DenseKernel("qfc_spikes_512", 512, 24, spikes=("x",)),
        DenseKernel("qfc_steps5_spikes_40", 40, 12, steps=5, spikes=tuple(f"x{t}" for t in range(5))),
    ]
    cases += [_dense_case(rng, k) for k in dense]
    # ... in chunks of 256 inputs per lane (4800 = 16 x 300: a chunk and a tail; 300 x 127 would overflow int16),
    # with every spike at 1 and every weight at +-127, the largest partial sums
    chunks = _dense_case(rng, DenseKernel("qfc_chunks", 4800, 6, steps=2, spikes=("x0", "x1")))
    signs = np.where(np.arange(6)[:, None] % 2 == 0, 1.0, -1.0).astype(np.float32)
    w = np.broadcast_to(signs, chunks.args["w"].shape).copy()
    cases.append(replace(chunks, args=chunks.args | {"x0": np.ones(4800, np.uint8), "w": w}))
    accumulate = [
        (AccumulateDenseKernel("qacc_100_10", 100, 10), [_spikes(rng, 100)]),
        (AccumulateDenseKernel("qacc_37_5_nobias", 37, 5, bias=False), [_spikes(rng, 37, rate=0.5)]),
        (AccumulateDenseKernel("qacc_ones", 48, 12), [np.ones(48, np.uint8)]),
        (AccumulateDenseKernel("qacc_4_steps", 64, 24, steps=4), [_spikes(rng, 64, rate=0.2) for _ in range(4)]),
    ]
    cases += [_accumulate_case(k, xs, rng) for k, xs in accumulate]
    # int8 partial sums in int16 over chunks of inputs: several chunks and a tail, and every weight at 127 (the
    # largest partial sums)
    chunks = AccumulateDenseKernel("qacc_600_2_steps", 600, 40, steps=2)
    cases.append(_accumulate_case(chunks, [_spikes(rng, 600, rate=0.5), np.ones(600, np.uint8)], rng))
    # wide tiles of outputs (128 on NEON), in parallel
    cases.append(_accumulate_case(AccumulateDenseKernel("qacc_wide", 700, 384), [_spikes(rng, 700)], rng))
    largest = _accumulate_case(AccumulateDenseKernel("qacc_largest", 700, 16), [np.ones(700, np.uint8)], rng)
    cases.append(replace(largest, args=largest.args | {"w": np.ones_like(largest.args["w"])}))
    bits = AccumulateDenseKernel("qacc_bits_1000_24", 1000, 24, packed=True)
    x = _spikes(rng, 1000, rate=0.1)
    case = _accumulate_case(replace(bits, packed=False), [x], rng)
    case = replace(case, kernel=bits, args=case.args | {"x": pack_bits(x)})
    return [*cases, case]


def _fused(rng: np.random.Generator) -> list[Case]:
    """Compressed layers with a neuron epilogue: (unfused compressed case, fused compressed case) pairs."""
    layers = [
        (Conv2dKernel("qfconv", (3, 16, 16), 8, (3, 3), padding=(1, 1)), "lif", {"v_th"}),
        (Conv2dKernel("qfconv_spikes", (8, 15, 13), 16, (3, 3), (2, 2), (1, 1), spikes=("x",)), "lif", set()),
        (
            Conv2dKernel(
                "qfconv_nchw16c", (8, 6, 5), 32, (3, 3), padding=(1, 1), weight_layout="OIHW16o", out_block=16
            ),
            "iaf",
            set(),
        ),
        (DenseKernel("qfdense", 100, 10), "li", {"dt_tau_mem"}),
        (AccumulateDenseKernel("qfacc", 64, 24), "lif", set()),
        (AccumulateDenseKernel("qfacc_bits", 70, 24, packed=True), "lsnn", {"beta"}),
    ]
    cases = []
    for layer, kind, per_neuron in layers:
        unfused, fused = _fused_cases(rng, layer, kind, per_neuron, spikes=kind != "li")
        for dtype in (HALF, INT8):
            reference, compressed = _compressed(unfused, dtype)
            compressed_fused = _compressed(fused, dtype, twin=compressed)
            cases += [reference, compressed, *compressed_fused]
    return cases


def _cases() -> list[Case]:
    rng = np.random.default_rng(19)
    cases = []
    for case in _layers(rng):
        cases += _compressed(case, HALF)
        twin, int8 = _compressed(case, INT8)
        cases += [twin, _interpreted_int8(int8) if case.kernel.spike_inputs() else int8]
    return cases + _fused(rng)


CASES = _cases()
CHECKED = [case for case in CASES if case.expected or case.twin]


pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture(scope="module")
def host_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_on_host(CASES, tmp_path_factory.mktemp("host"))


@pytest.fixture(scope="module")
def aarch64_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_on_aarch64(CASES, tmp_path_factory.mktemp("arm"))


def _exact(case: Case) -> Case:
    return replace(case, exact=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.kernel.symbol)
def test_host(case: Case, host_run: Path) -> None:
    _check(_exact(case), host_run)


@pytest.mark.slow
@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.kernel.symbol)
def test_aarch64(case: Case, aarch64_run: Path) -> None:
    _check(_exact(case), aarch64_run)


# What each target converts float16 weights with, vector instructions: x86-64's F16C (any x86-64 CPU since 2012;
# the x86_64 target tunes for the host CPU) and ARMv8's fcvtl
HALF_CONVERSION = {"x86_64": ("objdump", "vcvtph2ps"), "cortex-a72": ("aarch64-linux-gnu-objdump", "fcvtl")}
HALF_CONVERSION["cortex-a76"] = HALF_CONVERSION["cortex-a72"]


@pytest.mark.parametrize("target", HALF_CONVERSION)
def test_float16_weights_convert_in_vector_instructions_not_libcalls(target: str, tmp_path: Path) -> None:
    """The kernels convert float16 weights with the target's instructions: no call to a soft-float helper
    (__extendhfsf2, TVM's weak definition of which the object carries, would cost tens of instructions a weight)."""
    llvm = host_target() if target == "x86_64" else dict(get_target(target).llvm)
    layers = {type(c.kernel): c.kernel for c in CASES if c.kernel.weight_dtype == HALF}.values()
    assert {type(k) for k in layers} == {Conv2dKernel, DenseKernel, AccumulateDenseKernel}
    build_object(list(layers), llvm, tmp_path / "k.o")
    tool, instruction = HALF_CONVERSION[target]
    text = subprocess.run([tool, "-dr", str(tmp_path / "k.o")], capture_output=True, text=True, check=True).stdout
    assert instruction in text
    calls = [line for line in text.splitlines() if "extendhfsf2" in line and ("R_" in line or "call" in line)]
    assert not calls, calls[:3]
