"""Part 1 of the speed benchmark: every distinct kernel of the compiled models, timed in C (masic) and in PyTorch's
own process, by shape and by type, weighted by the calls per inference of the models that use it."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.speed.common import KERNEL_TARGET, NEURON_DEFAULTS, SPIKE_RATE, geomean, measure, run_worker
from bench.speed.harness import Library


@dataclass
class KernelEntry:
    kernel: object  # a masic.codegen.kernels Kernel, symbol bench_kN
    kind: str  # the type the tables group by
    shape: str
    calls: dict[str, int] = field(default_factory=dict)  # kernel source -> calls per inference
    masic: dict | None = None
    torch: dict | None = None  # PyTorch: the op; for neurons Norse's functional step
    plain: dict | None = None  # neurons only: the same update in plain eager tensor ops
    masic1: dict | None = None  # the same on one thread
    torch1: dict | None = None
    plain1: dict | None = None

    def ratio(self) -> float | None:
        return self.masic["best_ms"] / self.torch["best_ms"] if self.masic and self.torch else None

    def ratio1(self) -> float | None:
        return self.masic1["best_ms"] / self.torch1["best_ms"] if self.masic1 and self.torch1 else None


def neuron_label(k) -> str:
    """A neuron kernel's family and the values of its modes, e.g. "lif_box subtract"."""
    return " ".join([k.family, *(value for _, value in k.modes)])


def kernel_type(k, ops: set[str]) -> str:
    from masic.codegen import kernels as described

    neuron = getattr(k, "neuron", None)
    if neuron is not None:  # a neuron update fused into the layer's kernel
        return f"{kernel_type(dataclasses.replace(k, neuron=None), ops)} + {neuron_label(neuron)}"
    match k:
        case described.Conv2dKernel():
            if k.groups > 1:
                base = "conv2d depthwise" if k.groups == k.in_shape[0] == k.out_channels else "conv2d grouped"
            else:
                base = "conv2d 1x1" if k.kernel == (1, 1) else "conv2d"
            return base + (" strided" if k.stride != (1, 1) else "")
        case described.DenseKernel():
            return "dense"
        case described.AccumulateDenseKernel():
            return "dense of spikes (accumulate)"
        case described.Pool2dKernel():
            return f"{k.kind}pool2d"
        case described.AdaptiveAvgPool2dKernel():
            return "adaptive_avgpool2d"
        case described.NeuronKernel():
            return f"neuron {neuron_label(k)}"
        case described.ElementwiseAddKernel():
            return "add (residual)"
        case described.ElementwiseKernel():
            return f"copy ({'/'.join(sorted(ops))})" if k.fn == "copy" else k.fn
        case described.RowsKernel():
            return "rows (crop/concat)"
    return type(k).__name__


def shape_label(k) -> str:
    name = type(k).__name__
    if name == "Conv2dKernel":
        (c, h, w), (kh, kw) = k.in_shape, k.kernel
        text = f"{c}x{h}x{w}->{k.out_channels} k{kh}x{kw} s{k.stride[0]} p{k.padding[0]}"
        text += f" g{k.groups}" if k.groups > 1 else ""
        text += f" rows{k.row_padding}" if k.row_padding else ""
        return text + (f" {k.weight_layout}" if k.weight_layout != "OIHW" else "")
    packed = " bits" if getattr(k, "packed", False) else ""  # spikes read or written bit-packed
    if name in ("DenseKernel", "AccumulateDenseKernel"):
        steps = f" x{k.steps} steps" if k.steps > 1 else ""
        return f"{k.in_features}->{k.out_features}" + ("" if k.bias else " (no bias)") + steps + packed
    if name == "Pool2dKernel":
        (c, h, w), (kh, _) = k.in_shape, k.kernel
        return f"{c}x{h}x{w} k{kh} s{k.stride[0]} p{k.padding[0]}" + (f" rows{k.row_padding}" if k.row_padding else "")
    if name == "AdaptiveAvgPool2dKernel":
        c, h, w = k.in_shape
        return f"{c}x{h}x{w}->{k.output[0]}x{k.output[1]}"
    if name == "NeuronKernel":
        per_neuron = [p for p, v in k.params if v is None]
        return f"n={k.n}" + (f" per-neuron {','.join(per_neuron)}" if per_neuron else "") + packed
    if name == "RowsKernel":
        c, rows, w = k.out_shape()
        return f"{len(k.in_shapes)} part(s) -> {c}x{rows}x{w}"
    return f"n={k.n}"


def calls_per_inference(graph, calls) -> tuple[Counter, Counter]:
    """Calls per inference of each kernel symbol and of each node: `calls` is one block, the last block may be
    partial (its calls for steps past the end are skipped, as in model.c)."""
    per_symbol, per_node = Counter(), Counter()
    block = graph.schedule.block
    for first in range(0, graph.timesteps, block):
        steps = min(block, graph.timesteps - first)
        for call in calls:
            if call.step < steps:
                per_symbol[call.symbol] += 1
                per_node[call.node.name] += 1
    return per_symbol, per_node


def collect_kernels(graphs: dict[str, object]) -> tuple[list[KernelEntry], dict[str, dict[str, KernelEntry]], dict]:
    """The distinct kernels of all graphs (by signature); per graph, the entry of each node and of each artifact
    kernel symbol (keys "node:NAME" and "symbol:NAME"); and each node's calls per inference."""
    from masic.codegen.lower import lower

    entries: dict[object, KernelEntry] = {}
    node_entry: dict[str, dict[str, KernelEntry]] = {}
    node_calls: dict[str, Counter] = {}
    for label, graph in graphs.items():
        kernels, calls = lower(graph)
        per_symbol, node_calls[label] = calls_per_inference(graph, calls)
        ops: dict[str, set[str]] = {}
        for call in calls:
            ops.setdefault(call.symbol, set()).add(call.node.op)
        by_symbol = {}
        for k in kernels:
            key = dataclasses.replace(k, symbol="")
            if key not in entries:
                bench_kernel = dataclasses.replace(k, symbol=f"bench_k{len(entries)}")
                entries[key] = KernelEntry(bench_kernel, kernel_type(k, ops[k.symbol]), shape_label(k))
            entry = entries[key]
            entry.calls[label] = entry.calls.get(label, 0) + per_symbol[k.symbol]
            by_symbol[k.symbol] = entry
        node_entry[label] = {f"node:{call.node.name}": by_symbol[call.symbol] for call in calls}
        node_entry[label] |= {f"symbol:{symbol}": entry for symbol, entry in by_symbol.items()}
    return list(entries.values()), node_entry, node_calls


def kernel_arrays(kernel, rng: np.random.Generator, x: np.ndarray | None = None) -> list[np.ndarray]:
    """One array per C argument in its type: per-neuron parameters at neutral values, x if given, spikes (bytes,
    or bit-packed words: of the accumulate kernel's inputs or the neuron kernel's outputs) random at SPIKE_RATE,
    the rest random floats."""
    from masic.ir.graph import pack_bits

    params = dict(getattr(getattr(kernel, "neuron", None) or kernel, "params", ()))
    arrays = []
    for name, shape in kernel.arg_shapes().items():
        dtype = np.dtype(kernel.arg_dtype(name))
        spikes = kernel.in_features if name == "x" and dtype == np.uint32 else getattr(kernel, "n", 0)
        if name in params:
            arrays.append(np.full(shape, NEURON_DEFAULTS[name], dtype=np.float32))
        elif name == "x" and x is not None:
            arrays.append(pack_bits(x) if dtype == np.uint32 else np.ascontiguousarray(x.reshape(shape), dtype=dtype))
        elif dtype == np.uint8:
            arrays.append((rng.random(shape) < SPIKE_RATE).astype(np.uint8))
        elif dtype == np.uint32:  # a word's bits past the last spike stay 0
            arrays.append(pack_bits(rng.random(spikes) < SPIKE_RATE))
        else:
            arrays.append(rng.standard_normal(shape, dtype=np.float32))
    return arrays


def time_masic_kernels(lib: Library, entries: list[KernelEntry], seconds: float, suffix: str) -> None:
    """Sets entry.masic (suffix "") or entry.masic1 (suffix "1")."""
    rng = np.random.default_rng(0)
    for k, entry in enumerate(entries):
        arrays = kernel_arrays(entry.kernel, rng)
        setattr(entry, f"masic{suffix}", measure(lib.runner(entry.kernel.symbol, arrays), seconds))
        print(f"\r  masic kernels, {lib.threads} thread(s): {k + 1}/{len(entries)}", end="", flush=True)
    print()


def time_torch_kernels(entries: list[KernelEntry], threads: int, seconds: float, work: Path, suffix: str) -> None:
    """Sets entry.torch and entry.plain (suffix "") or entry.torch1 and entry.plain1 (suffix "1")."""
    print(f"  PyTorch kernels, {threads} thread(s), own process ...", flush=True)
    request = work / f"torch_kernels_{threads}t.json"
    specs = [{"cls": type(e.kernel).__name__, **dataclasses.asdict(e.kernel)} for e in entries]
    request.write_text(json.dumps({"threads": threads, "seconds": seconds, "kernels": specs}))
    run_worker("torch-kernels", request)
    for entry, result in zip(entries, json.loads(request.with_suffix(".out.json").read_text()), strict=True):
        setattr(entry, f"torch{suffix}", result["torch"])
        setattr(entry, f"plain{suffix}", result.get("plain"))


def type_summary(entries: list[KernelEntry]) -> list[dict]:
    """Per kernel type: shapes, geometric mean and worst masic / torch, and masic / torch weighted by calls per
    inference (the time the models spend in that type, masic's against PyTorch's); the weighted figure on one
    thread too, when measured."""
    rows = []
    for kind in sorted({e.kind for e in entries}):
        group = [e for e in entries if e.kind == kind and e.ratio() is not None]
        if not group:
            continue
        worst = max(group, key=lambda e: e.ratio())

        def weighted(masic: str, torch: str, group: list[KernelEntry] = group) -> float | None:
            if any(getattr(e, masic) is None or getattr(e, torch) is None for e in group):
                return None
            ours = sum(getattr(e, masic)["best_ms"] * sum(e.calls.values()) for e in group)
            return ours / sum(getattr(e, torch)["best_ms"] * sum(e.calls.values()) for e in group)

        rows.append(
            {
                "type": kind,
                "shapes": len(group),
                "geomean": geomean([e.ratio() for e in group]),
                "worst": worst.ratio(),
                "worst_shape": worst.shape,
                "weighted": weighted("masic", "torch"),
                "slower_shapes": sum(e.ratio() > KERNEL_TARGET for e in group),
                "weighted_1thread": weighted("masic1", "torch1"),
                "weighted_best_config": best_config(group),
                "geomean_1thread": geomean([e.ratio1() for e in group]) if all(e.ratio1() for e in group) else None,
            }
        )
    return rows


def best_config(group: list[KernelEntry]) -> float | None:
    """Weighted masic / torch with each side's better time over the thread counts measured."""
    if any(e.masic1 is None or e.torch1 is None for e in group):
        return None
    ours = sum(min(e.masic["best_ms"], e.masic1["best_ms"]) * sum(e.calls.values()) for e in group)
    return ours / sum(min(e.torch["best_ms"], e.torch1["best_ms"]) * sum(e.calls.values()) for e in group)


def us(stats: dict | None) -> str:
    return f"{1e3 * stats['best_ms']:>10.2f}" if stats else f"{'-':>10}"


def ratio_text(ours: dict | None, theirs: dict | None) -> str:
    return f"{ours['best_ms'] / theirs['best_ms']:>7.2f}" if ours and theirs else f"{'-':>7}"


def print_kernels(entries: list[KernelEntry], summary: list[dict], threads: int) -> None:
    print("\n== 1. kernels: masic (TVM, timed in C) vs PyTorch eager (own process): best of batches, us per call ==")
    head = f"{'type':<22}{'shape':<36}{'calls/inference':<24}"
    print(f"{'':<82}{f'---- {threads} threads ----':^27}{'- neurons: plain -':^17}{'---- 1 thread ----':^27}")
    print(
        head + f"{'masic':>10}{'torch':>10}{'ratio':>7}{'plain':>10}{'ratio':>7}{'masic':>10}{'torch':>10}{'ratio':>7}"
    )
    for entry in sorted(entries, key=lambda e: (e.kind, e.shape)):
        calls = " ".join(f"{m}:{n}" for m, n in entry.calls.items())
        calls = calls if len(calls) <= 23 else calls[:20] + "..."
        line = f"{entry.kind[:21]:<22}{entry.shape[:35]:<36}{calls:<24}"
        line += us(entry.masic) + us(entry.torch) + ratio_text(entry.masic, entry.torch)
        line += us(entry.plain) + ratio_text(entry.masic, entry.plain)
        line += us(entry.masic1) + us(entry.torch1) + ratio_text(entry.masic1, entry.torch1)
        print(line + ("  <" if entry.ratio() > KERNEL_TARGET else ""))
    print("(ratio = masic / torch, < marks ratio > 1; neurons: torch = Norse's functional step, plain = the family's")
    print(" update in eager tensor ops, ratio = masic / plain; calls/inference per model: T x calls per step)")
    print(f"\nper type: masic / torch, {threads} threads unless marked (target <= {KERNEL_TARGET:g} for every type)")
    print(
        f"{'type':<24}{'shapes':>7}{'geomean':>9}{'weighted':>10}{'worst':>8}  {'worst shape':<36}{'slower':>7}"
        f"{'weighted 1t':>12}{'geomean 1t':>11}{'best config':>12}"
    )
    for row in summary:
        mark = "  MISS" if row["weighted"] > KERNEL_TARGET or row["worst"] > KERNEL_TARGET else ""
        one = [row["weighted_1thread"], row["geomean_1thread"], row["weighted_best_config"]]
        print(
            f"{row['type']:<24}{row['shapes']:>7}{row['geomean']:>9.2f}{row['weighted']:>10.2f}{row['worst']:>8.2f}  "
            f"{row['worst_shape'][:35]:<36}{row['slower_shapes']:>7}"
            + "".join(
                f"{v:>{w}.2f}" if v is not None else f"{'-':>{w}}" for v, w in zip(one, (12, 11, 12), strict=True)
            )
            + mark
        )
    print("(weighted: sum over shapes of time x calls per inference; slower: shapes with ratio > 1; MISS: a shape or")
    print(" the weighted figure above 1; best config: weighted, each side's better time over 1 and --threads threads)")
