"""Part 3 of the speed benchmark: spike rates on the benchmark input (the reference interpreter), the plans' bytes
with spikes as float32, bytes and bits, and accumulate-only kernels of spikes against masic's."""

from __future__ import annotations

from collections import Counter

import numpy as np

from bench.speed.common import measure
from bench.speed.harness import Library
from bench.speed.kernels import KernelEntry, kernel_arrays
from bench.speed.twins import multiply_twin, separate_twins, storage_twins


def record_values(graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every value of every step, (T, *shape), from the reference interpreter (`masic.ir.interpret.run`)."""
    from masic.ir.interpret import run

    log: dict[str, list[np.ndarray]] = {}
    # name: a masic.ir.names.BufferId, logged by its text
    run(graph, x, on_value=lambda name, value: log.setdefault(str(name), []).append(np.array(value, dtype=np.float32)))
    return {name: np.stack(arrays) for name, arrays in log.items()}


def spike_values(graph, values: dict[str, np.ndarray]) -> set[str]:
    """Values that hold spikes: those the planned graph types as spikes (spiking neurons' outputs, and what max
    pools, views, crops, concats and delays pass on of them), and, from what the interpreter recorded, those that
    are 0 or 1 throughout and either come from an element-wise op of one operand (a NIR threshold, a relu of spikes)
    or are computed from spikes alone without weights (an average pooling of spikes that stays 0/1)."""
    from masic.ir.graph import SPIKE_DTYPES
    from masic.ir.ops import OPS

    # The recorded values decide beyond the declared types (a relu of spikes, an average pooling that stays 0/1),
    # as the published tables of part 3 were made; the op table's `passes_spikes` covers only the declared ones.
    spikes: set[str] = set()
    for node in graph.nodes:
        binary = node.name in values and bool(np.isin(values[node.name], (0.0, 1.0)).all())
        from_spikes = bool(node.inputs) and all(v in spikes for v in node.inputs) and not node.param_refs()
        if node.type.dtype in SPIKE_DTYPES or (binary and (OPS[node.op].layout_carrier or from_spikes)):
            spikes.add(node.name)
    return spikes


MEMORY = ("f32", "u8", "bit")  # the plans part 3 compares (see activation_bytes)


def plan_bytes(graph) -> dict:
    """A plan's arena, lower bound, sum of activation buffers and peak of live activations (the plan's own
    lifetimes, `masic.analysis.liveness.peak_live`), and its buffers' bytes by kind."""
    from masic.analysis.liveness import peak_live

    by_kind = Counter()
    for buffer in graph.plan.buffers:
        by_kind[buffer.kind] += buffer.size
    activations = [buffer for buffer in graph.plan.buffers if buffer.kind == "activation"]
    return {
        "arena": graph.plan.arena_bytes,
        "lower_bound": graph.plan.lower_bound,
        "activation": by_kind["activation"],
        "peak_live": peak_live(activations, 1)[0],
        "by_kind": dict(by_kind),
    }


def activation_bytes(graph, u8_graph, f32_graph) -> dict:
    """The plan's bytes by plan ("bit": the plan `masic compile` makes, spikes bit-packed where the layout pass
    packs them and one byte each elsewhere; "u8": the same graph with every spike one byte, `plan_graph(...,
    spikes="bytes")`; "f32": the model planned with every value float32), and the bytes of the spike tensors with
    storage of their own (views share it) in each."""
    from masic.ir.graph import SPIKE_DTYPES
    from masic.ir.ops import OPS

    owned = [n for n in graph.nodes if n.type.dtype in SPIKE_DTYPES and not OPS[n.op].view]
    memory = {"f32": plan_bytes(f32_graph), "u8": plan_bytes(u8_graph), "bit": plan_bytes(graph)}
    memory["f32"]["spikes"] = sum(4 * n.type.numel for n in owned)
    memory["u8"]["spikes"] = sum(n.type.numel for n in owned)
    memory["bit"]["spikes"] = sum(n.type.nbytes for n in owned)
    return memory | {"spike_tensors": len(owned), "bit_packed": sum(n.type.dtype == "bits" for n in owned)}


def spike_report(graph, x: np.ndarray, u8_graph, f32_graph) -> dict:
    """Spike rates of the spiking layers and of the inputs of convs and dense layers, and the activation bytes
    (`u8_graph`: the same graph with every spike one byte, `f32_graph`: the model planned without the spike
    dtype)."""
    from masic.ir.ops import neuron_op

    values = record_values(graph, x)
    spikes = spike_values(graph, values)
    layers = []
    for node in graph.nodes:
        # a layer that makes spikes: a neuron, or an op whose operands are not all spikes (a NIR threshold)
        if node.name in spikes and (neuron_op(node.op) or not all(v in spikes for v in node.inputs)):
            v = values[node.name]
            per_step = (v != 0).reshape(len(v), -1).mean(axis=1)
            layers.append(
                {
                    "layer": node.name,
                    "op": node.op,
                    "neurons": node.type.numel,
                    "rate": float(per_step.mean()),
                    "per_step": per_step.round(4).tolist(),
                }
            )
    consumers = []
    for node in graph.nodes:
        if node.op in ("conv2d", "dense"):
            v = values[node.inputs[0]]
            binary = bool(np.isin(v, (0.0, 1.0)).all())
            consumers.append(
                {
                    "node": node.name,
                    "op": node.op,
                    "input": node.inputs[0],
                    "spikes": node.inputs[0] in spikes and binary,
                    "rate": float((v != 0).mean()),
                }
            )
    return {"layers": layers, "consumers": consumers, "memory": activation_bytes(graph, u8_graph, f32_graph)}


def accumulate_bench(lib: Library, entry: KernelEntry, rate: float, seconds: float) -> dict | None:
    """masic's conv / dense kernel (for dense layers of spikes its accumulate-only kernel, and its multiplying
    twin) against the accumulate-only C prototype on the same random spikes at `rate`; a fused kernel's layer
    without its neuron."""
    from masic.codegen.weights import stored_weight

    k = entry.kernel if getattr(entry.kernel, "neuron", None) is None else separate_twins(entry.kernel)[0]
    name = type(k).__name__
    if (name == "Conv2dKernel" and k.groups != 1) or getattr(k, "steps", 1) > 1:
        return None
    rng = np.random.default_rng(1)
    shapes = k.arg_shapes()
    x = (rng.random(k.in_shape if name == "Conv2dKernel" else k.in_features) < rate).astype(np.float32)
    # the prototype reads and writes NCHW; masic's conv may read and write blocks of channels (NCHW{c}c)
    in_block, out_block = getattr(k, "in_block", 1), getattr(k, "out_block", 1)
    arrays = kernel_arrays(k, rng, stored_weight(x, f"NCHW{in_block}c") if in_block > 1 else x)
    args = dict(zip(shapes, arrays, strict=True))
    bias = args.get("b", np.zeros(1, dtype=np.float32))
    y = np.zeros_like(args["y"])
    if name in ("DenseKernel", "AccumulateDenseKernel"):
        wt = args["w"] if name == "AccumulateDenseKernel" else np.ascontiguousarray(args["w"].T)
        dims = np.array([k.in_features, k.out_features, int(k.bias)], dtype=np.int32)
        events = np.zeros(k.in_features, dtype=np.int32)
        proto = ("acc_dense", [x, wt, bias, y, dims, events])
    else:
        weight = args["w"]
        if weight.ndim == 5:  # stored in blocks of output channels (OIHW{ob}o, masic.codegen.weights): OIHW again
            weight = weight.transpose(0, 4, 1, 2, 3).reshape(k.out_channels, *weight.shape[1:4])
        wt = np.ascontiguousarray(weight.transpose(1, 2, 3, 0))
        (c, h, w), (o, oh, ow) = k.in_shape, k.out_shape()
        top, _, side = k.pads()
        dims = [c, h, w, o, *k.kernel, *k.stride, top, side, *k.dilation, oh, ow, int(k.bias)]
        events = np.zeros(3 * c * h * w, dtype=np.int32)
        acc = np.zeros(oh * ow * o, dtype=np.float32)
        proto = ("acc_conv2d", [x, wt, bias, y, np.array(dims, dtype=np.int32), events, acc])
    lib.call(k.symbol, arrays)
    lib.call(*proto)
    expected = args["y"]
    if out_block > 1:  # (C/c, H, W, c) in the prototype's order, (C/c, c, H, W): NCHW
        expected = expected.transpose(0, 3, 1, 2).reshape(y.shape)
    error = float(np.abs(y - expected).max() / max(1e-6, float(np.abs(expected).max())))
    if error > 1e-4:
        raise AssertionError(f"accumulate-only prototype disagrees with {entry.shape}: relative error {error:.2e}")
    timings = {
        "masic": measure(lib.runner(k.symbol, arrays), seconds),
        "accumulate": measure(lib.runner(*proto), seconds),
        "max_rel_error": error,
    }
    if name == "AccumulateDenseKernel":
        twin = [x.astype(np.uint8), np.ascontiguousarray(args["w"].T), *([bias] if k.bias else []), np.zeros_like(y)]
        timings["multiply"] = measure(lib.runner(multiply_twin(entry.kernel).symbol, twin), seconds)
    return timings


def storage_bench(lib: Library, entry: KernelEntry, rate: float, seconds: float) -> dict | None:
    """For a dense layer of spikes, the accumulate-only kernel of one step reading random spikes at `rate` as bytes
    and as bits (`storage_twins`), checked to give the same floats."""
    from masic.ir.graph import pack_bits

    pair = storage_twins(entry.kernel)
    if not pair:
        return None
    rng = np.random.default_rng(2)
    spikes = (rng.random(entry.kernel.in_features) < rate).astype(np.uint8)
    outputs, timings = [], {}
    for kernel, x in zip(pair, (spikes, pack_bits(spikes)), strict=True):
        arrays = kernel_arrays(kernel, np.random.default_rng(3))  # the same weights and bias for both
        arrays[0] = x
        lib.call(kernel.symbol, arrays)
        outputs.append(arrays[-1].copy())
        timings["bits" if kernel.packed else "bytes"] = measure(lib.runner(kernel.symbol, arrays), seconds)
    if not np.array_equal(*outputs):
        raise AssertionError(f"the accumulate-only kernel {entry.shape} gives other sums over bits than over bytes")
    return timings


def print_spikes(reports: dict[str, dict]) -> None:
    print("\n== 3. spikes: rates on the benchmark input (reference interpreter), activation bytes ==")
    print(f"{'model':<10}{'layer':<28}{'op':<10}{'neurons':>9}{'rate':>8}  per step")
    for name, report in reports.items():
        for layer in report["layers"]:
            steps = " ".join(f"{r:.2f}" for r in layer["per_step"][:16])
            head = f"{name:<10}{layer['layer'][:27]:<28}{layer['op']:<10}{layer['neurons']:>9}"
            print(f"{head}{layer['rate']:>8.3f}  {steps}")
    print("\ninputs of convs / dense layers:")
    print(f"{'model':<10}{'node':<28}{'op':<8}{'input':<28}{'spikes':>7}{'rate':>8}")
    for name, report in reports.items():
        for c in report["consumers"]:
            print(
                f"{name:<10}{c['node'][:27]:<28}{c['op']:<8}{c['input'][:27]:<28}"
                f"{'yes' if c['spikes'] else 'no':>7}{c['rate']:>8.3f}"
            )
    print("\nbytes: f32 = planned with every value float32, u8 = every spike one byte, bit = planned now (spikes")
    print("bit-packed where only accumulating dense layers read them, else one byte each)")
    columns = (("arena", "arena"), ("bound", "lower_bound"), ("activ.", "activation"), ("spikes", "spikes"))
    columns += (("peak", "peak_live"),)
    print(f"{'model':<10}" + "".join(f"{f'{label} f32':>11}{'u8':>11}{'bit':>11}" for label, _ in columns) + "  packed")
    for name, report in reports.items():
        m = report["memory"]
        cells = "".join(f"{m[plan][key]:>11}" for _, key in columns for plan in MEMORY)
        print(f"{name:<10}{cells}  {m['bit_packed']}/{m['spike_tensors']}")
    print("(bound: the plan's lower bound; activ.: sum of the plan's activation buffers; spikes: spike tensors with")
    print(" storage of their own; peak: largest sum of the plan's activation buffers live at one position; packed:")
    print(" spike tensors bit-packed of all)")


def project(
    model: str, suffix: str, entries: list[KernelEntry], fed: list[tuple[KernelEntry, dict]], result: dict
) -> dict:
    """A model's kernel time per inference now and with its spike-fed convs / dense layers accumulate-only: kernel
    bench times x calls, the spike-fed ones replaced by the prototype's times; scaled to the measured time."""
    kernels_ms = sum(getattr(e, f"masic{suffix}")["best_ms"] * e.calls.get(model, 0) for e in entries)
    fed_ms = sum(getattr(e, f"masic{suffix}")["best_ms"] * row["calls"] for e, row in fed)
    accumulate_ms = sum(row[f"accumulate_ms{suffix}"] * row["calls"] for _, row in fed)
    either_ms = sum(
        min(getattr(e, f"masic{suffix}")["best_ms"], row[f"accumulate_ms{suffix}"]) * row["calls"] for e, row in fed
    )
    projection = {"kernels_ms": kernels_ms, "spike_fed_ms": fed_ms, "accumulate_ms": accumulate_ms}
    projection["projected_ms"] = kernels_ms - fed_ms + accumulate_ms
    projection["projected_where_faster_ms"] = kernels_ms - fed_ms + either_ms
    timed = result.get("one_thread", {}) if suffix else result
    if "masic" in timed:
        measured = 1e3 * timed["masic"]["best_s"]
        projected = measured * projection["projected_ms"] / kernels_ms
        projection |= {"measured_ms": measured, "projected_measured_ms": projected}
        projection["projected_speedup_vs_norse"] = 1e3 * timed["norse"]["best_s"] / projected
    return projection


def accumulate_line(r: dict, calls: str, first: str, second: str, faster: str = "second") -> str:
    """One row of the accumulate tables: the layer, then per thread count (2, then 1) the two kernels' us per call
    and how many times faster the `faster` one is."""
    line = f"{r['model']:<10}{r['node'][:13]:<14}{r['shape'][:29]:<30}{r['rate']:>7.3f}{calls}"
    for suffix in ("", "1"):
        if f"{second}{suffix}" in r:
            a, b = r[f"{first}{suffix}"], r[f"{second}{suffix}"]
            line += f"{1e3 * a:>10.2f}{1e3 * b:>10.2f}{(a / b if faster == 'second' else b / a):>9.1f}x"
    return line


def print_accumulate(rows: list[dict], packed_rows: list[dict], projections: dict[str, dict], threads: int) -> None:
    print("\naccumulate-only prototype (C, same thread pool) vs masic's kernel on random spikes at the measured rate,")
    print("us per call:")
    print(
        f"{'model':<10}{'node':<14}{'shape':<30}{'rate':>7}{'calls':>6}"
        f"{f'-------- {threads} threads --------':^30}{'--------- 1 thread ---------':^30}"
    )
    print(f"{'':<67}" + f"{'masic':>10}{'accum.':>10}{'speedup':>10}" * 2)
    for r in rows:
        print(accumulate_line(r, f"{r['calls']:>6}", "masic_ms", "accumulate_ms"))
    dense = [r for r in rows if "multiply_ms" in r]
    if dense:
        print("\ndense layers of spikes, us per call: masic's accumulate-only kernel vs its multiplying twin:")
        for r in dense:
            print(accumulate_line(r, "", "masic_ms", "multiply_ms", faster="first"))
    if packed_rows:
        print("\ndense layers of spikes, us per call: the accumulate-only kernel of one step reading the spikes as")
        print("bytes vs as bits (the same sums; shape ending in bits: the model's kernel reads bits; in x steps: the")
        print("model multiplies, in blocks of steps):")
        for r in packed_rows:
            print(accumulate_line(r, "", "bytes_ms", "bits_ms"))
    print("\nprojected per inference (per-kernel best time x calls), ms:")
    print(
        f"{'model':<10}{'threads':>8}{'kernels':>9}{'spike-fed':>11}{'-> accum.':>11}{'projected':>11}"
        f"{'x faster':>9}{'if faster':>10}{'x faster':>9}{'measured':>10}{'-> proj.':>10}{'vs norse':>9}"
    )
    for name, by_threads in projections.items():
        for label, p in by_threads.items():
            count = threads if label == "threads" else 1
            measured = f"{p['measured_ms']:>10.3f}{p['projected_measured_ms']:>10.3f}" if "measured_ms" in p else ""
            vs_norse = f"{p['projected_speedup_vs_norse']:>8.1f}x" if "measured_ms" in p else ""
            print(
                f"{name:<10}{count:>8}{p['kernels_ms']:>9.3f}{p['spike_fed_ms']:>11.3f}{p['accumulate_ms']:>11.3f}"
                f"{p['projected_ms']:>11.3f}{p['kernels_ms'] / p['projected_ms']:>8.2f}x"
                f"{p['projected_where_faster_ms']:>10.3f}{p['kernels_ms'] / p['projected_where_faster_ms']:>8.2f}x"
                f"{measured}{vs_norse}"
            )
    print("(kernels: the model's kernels, isolated; spike-fed: its convs / dense layers fed by spikes, now and as the")
    print(" accumulate-only prototype; projected = kernels - spike-fed + accumulate; if faster: the prototype only")
    print(" where it beats masic's kernel; -> proj.: the measured time scaled by projected / kernels; vs norse:")
    print(" Norse best / that)")
