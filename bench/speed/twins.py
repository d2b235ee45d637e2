"""The kernels the speed benchmark times next to a model's own: for a fused kernel its separate layer and neuron
kernels (part 1b), for a kernel reading or writing channel-blocked activations its NCHW twin (part 1c), and for a
dense layer of spikes its multiplying twin and its accumulating kernels over bytes and bits (part 3)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bench.speed.common import measure
from bench.speed.harness import Library
from bench.speed.kernels import KernelEntry, kernel_arrays


def separate_twins(kernel) -> tuple[object, object]:
    """The two kernels a fused one replaces: the layer writing its output, and the neuron reading it."""
    layer = dataclasses.replace(
        kernel, symbol=f"{kernel.symbol}_layer", neuron=None, spikes=tuple(n for n in kernel.spikes if n != "z")
    )
    spikes = ("z",) if "z" in kernel.spikes else ()
    return layer, dataclasses.replace(kernel.neuron, symbol=f"{kernel.symbol}_neuron", spikes=spikes)


def fusion_bench(lib: Library, entries: list[KernelEntry], seconds: float) -> list[dict]:
    """Each fused kernel of the models against its two separate kernels (layer, then neuron), masic both."""
    rng = np.random.default_rng(0)
    rows = []
    for entry in (e for e in entries if getattr(e.kernel, "neuron", None) is not None):
        layer, neuron = separate_twins(entry.kernel)
        fused = measure(lib.runner(entry.kernel.symbol, kernel_arrays(entry.kernel, rng)), seconds)
        apart = [measure(lib.runner(k.symbol, kernel_arrays(k, rng)), seconds) for k in (layer, neuron)]
        rows.append(
            {
                "type": entry.kind,
                "shape": entry.shape,
                "calls": entry.calls,
                "fused_us": fused["best_ms"] * 1e3,
                "layer_us": apart[0]["best_ms"] * 1e3,
                "neuron_us": apart[1]["best_ms"] * 1e3,
                "unstored_bytes": math.prod(layer.arg_shapes()["y"]) * 4,
            }
        )
    return rows


def print_fusion(rows: list[dict], threads: int) -> None:
    print(f"\n== 1b. neuron epilogues: fused kernel vs the layer's and the neuron's own kernels, {threads} threads ==")
    print(f"{'type':<30}{'shape':<36}{'fused us':>10}{'layer us':>10}{'neuron us':>10}{'saved':>8}{'unstored KiB':>14}")
    for r in sorted(rows, key=lambda r: (r["type"], r["shape"])):
        apart = r["layer_us"] + r["neuron_us"]
        print(
            f"{r['type'][:29]:<30}{r['shape'][:35]:<36}{r['fused_us']:>10.1f}{r['layer_us']:>10.1f}"
            f"{r['neuron_us']:>10.1f}{1 - r['fused_us'] / apart:>8.0%}{r['unstored_bytes'] / 1024:>14.1f}"
        )
    print("(saved = 1 - fused / (layer + neuron); unstored = the layer's float32 output the fused kernel never writes)")


def nchw_twin(kernel) -> list:
    """For a conv or pool reading or writing a channel-blocked activation (NCHW{c}c), the same kernel on NCHW."""
    blocks = {name: getattr(kernel, name) for name in ("in_block", "out_block") if getattr(kernel, name, 1) > 1}
    return [dataclasses.replace(kernel, symbol=f"{kernel.symbol}_nchw", **dict.fromkeys(blocks, 1))] if blocks else []


def layout_bench(lib: Library, entries: list[KernelEntry], seconds: float) -> list[dict]:
    """Each kernel of the models that reads or writes a channel-blocked activation against its NCHW twin."""
    rng = np.random.default_rng(0)
    rows = []
    for entry in entries:
        for twin in nchw_twin(entry.kernel):
            blocked = measure(lib.runner(entry.kernel.symbol, kernel_arrays(entry.kernel, rng)), seconds)
            nchw = measure(lib.runner(twin.symbol, kernel_arrays(twin, rng)), seconds)
            reads, writes = getattr(entry.kernel, "in_block", 1), getattr(entry.kernel, "out_block", 1)
            stored = "->".join(f"NCHW{b}c" if b > 1 else "NCHW" for b in (reads, writes))
            times = {"blocked_us": blocked["best_ms"] * 1e3, "nchw_us": nchw["best_ms"] * 1e3}
            rows.append(
                {"type": entry.kind, "shape": entry.shape, "calls": dict(entry.calls), "stored": stored, **times}
            )
    return rows


def print_layouts(rows: list[dict], threads: int) -> None:
    print(f"\n== 1c. activation layouts: kernels reading or writing NCHW{{c}}c vs NCHW twins, {threads} threads ==")
    print(f"{'type':<24}{'shape':<36}{'layout (in->out)':<22}{'calls':>6}{'blocked us':>12}{'NCHW us':>10}")
    for r in sorted(rows, key=lambda r: (r["type"], r["shape"])):
        print(
            f"{r['type'][:23]:<24}{r['shape'][:35]:<36}{r['stored']:<22}{sum(r['calls'].values()):>6}"
            f"{r['blocked_us']:>12.2f}{r['nchw_us']:>10.2f}"
        )
    for model in sorted({model for r in rows for model in r["calls"]}):
        blocked, nchw = (sum(r[key] * r["calls"].get(model, 0) for r in rows) for key in ("blocked_us", "nchw_us"))
        print(f"{model}: these kernels take {blocked:.1f} us per inference, {nchw:.1f} us on NCHW")


def multiply_twin(kernel):
    """masic's multiply-accumulate dense kernel with the shape of an accumulate-only one, reading the same spikes
    as bytes."""
    from masic.codegen.kernels import DenseKernel

    symbol = f"{kernel.symbol}_multiply"  # of the layer alone, when a neuron is fused into it
    return DenseKernel(
        symbol, kernel.in_features, kernel.out_features, kernel.bias, kernel.steps, kernel.step_names("x")
    )


def storage_twins(kernel) -> list:
    """For a dense layer of spikes (accumulating, or multiplying in blocks of steps), masic's accumulate-only kernel
    of its shape for one step, reading the spikes as bytes and as bits."""
    from masic.codegen.kernels import AccumulateDenseKernel

    dense = type(kernel).__name__ in ("DenseKernel", "AccumulateDenseKernel")
    if not dense or kernel.arg_dtype(kernel.step_names("x")[0]) == "float32":  # not a dense layer of spikes
        return []
    shape = (kernel.in_features, kernel.out_features, kernel.bias)
    return [AccumulateDenseKernel(f"{kernel.symbol}_{kind}", *shape, packed=kind == "bits") for kind in ("u8", "bits")]


def twins(kernel) -> list:
    """The kernels parts 1b, 1c and 3 time next to a model's kernel: for dense layers of spikes, the multiplying twin
    of an accumulating one and the accumulating kernels over bytes and bits; for a fused kernel, its separate layer
    and neuron kernels; for a kernel reading or writing a channel-blocked activation, its NCHW twin."""
    multiply = [multiply_twin(kernel)] if type(kernel).__name__ == "AccumulateDenseKernel" else []
    separate = list(separate_twins(kernel)) if getattr(kernel, "neuron", None) else []
    return multiply + storage_twins(kernel) + separate + nchw_twin(kernel)
