"""`python -m bench.speed` (or `python bench/speed`): runs the parts of the speed benchmark in order, prints their
tables and writes WORKDIR/speed.json (see bench/speed/__init__.py); with `--worker`, one PyTorch worker."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a folder, `python bench/speed`, too

import bench.speed as package
from bench.machine import cpu_model


def machine() -> dict:
    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=package.__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/speed"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per whole model and side, best kept")
    parser.add_argument("--kernel-seconds", type=float, default=0.3, help="timing budget per kernel and side")
    parser.add_argument("--model-seconds", type=float, default=2.0, help="timing budget per whole model and side")
    parser.add_argument(
        "--one-thread",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time everything on one thread (less sensitive to other processes than a thread pool)",
    )
    parser.add_argument("--models", default="digits,convnet4,vgg11")
    parser.add_argument("--kernel-models", default="mobilenet_v2,mobilenet_v2@2MB", help="NAME[@BUDGET],...")
    parser.add_argument(
        "--budget-models", default="vgg11@32MB", help="NAME@BUDGET,...: also compiled under a budget (part 2)"
    )
    parser.add_argument("--skip", default="", help="parts to skip: kernels, models, spikes")
    parser.add_argument("--epochs", type=int, default=15, help="digits training epochs when no model is saved")
    parser.add_argument("--worker", choices=("torch-kernels", "norse-model"), help=argparse.SUPPRESS)
    parser.add_argument("request", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # a PyTorch process: it must not import the compiler (bench.speed.torch_worker)
        from bench.speed.torch_worker import norse_model_worker, torch_kernels_worker

        {"torch-kernels": torch_kernels_worker, "norse-model": norse_model_worker}[args.worker](args.request)
        return 0

    from bench.speed.harness import Library, build_library
    from bench.speed.kernels import collect_kernels, print_kernels, time_masic_kernels, time_torch_kernels, type_summary
    from bench.speed.models import MODELS, budget_label, model_input, parse_source, plan_graph, save_model
    from bench.speed.spikes import (
        accumulate_bench,
        print_accumulate,
        print_spikes,
        project,
        spike_report,
        storage_bench,
    )
    from bench.speed.twins import fusion_bench, layout_bench, print_fusion, print_layouts, twins
    from bench.speed.whole import bench_model, print_breakdown, print_models, print_perf
    from masic.codegen.build import host_target

    skip = set(filter(None, args.skip.split(",")))
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    whole = [MODELS[name] for name in args.models.split(",") if name]
    extra = [parse_source(text) for text in args.kernel_models.split(",") if text]
    budgeted = [parse_source(text) for text in args.budget_models.split(",") if text]
    extra += [source for source in budgeted if source not in extra]
    results: dict = {"machine": machine() | {"target": host_target()}, "threads": args.threads}
    results["load_before"] = os.getloadavg()
    print(f"{results['machine']['cpu']}, {results['machine']['cores']} cores, {args.threads} threads on every side")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in results['load_before'])} (1, 5, 15 min)", flush=True)

    paths = {spec.name: save_model(spec.name, work, args.epochs) for spec in whole}
    paths |= {name: save_model(name, work, args.epochs) for name, _ in extra if name not in paths}
    inputs = {spec.name: model_input(spec) for spec in whole}
    graphs = {spec.name: plan_graph(paths[spec.name], spec, None) for spec in whole}
    for name, budget in extra:
        graphs[budget_label(name, budget)] = plan_graph(paths[name], MODELS[name], budget)
    started = time.perf_counter()
    entries, node_entry, node_calls = collect_kernels(graphs)
    print(f"{len(entries)} distinct kernels in {', '.join(graphs)}", flush=True)

    libs: dict[int, Library] = {}
    thread_counts = {args.threads: ""} | ({1: "1"} if args.one_thread and args.threads != 1 else {})
    if not {"kernels", "spikes"} <= skip:
        extra = [twin for e in entries for twin in twins(e.kernel)]
        path = build_library([e.kernel for e in entries] + extra, work / "lib")
        libs = {count: Library(path, count) for count in thread_counts}
    if "kernels" not in skip:
        for count, suffix in thread_counts.items():
            time_masic_kernels(libs[count], entries, args.kernel_seconds, suffix)
            time_torch_kernels(entries, count, args.kernel_seconds, work, suffix)
        summary = type_summary(entries)
        print_kernels(entries, summary, args.threads)
        results["kernel_types"] = summary
        results["fusion"] = fusion_bench(libs[args.threads], entries, args.kernel_seconds)
        print_fusion(results["fusion"], args.threads)
        results["layouts"] = layout_bench(libs[args.threads], entries, args.kernel_seconds)
        print_layouts(results["layouts"], args.threads)
    results["kernels"] = [
        {
            "type": e.kind,
            "shape": e.shape,
            "kernel": {"cls": type(e.kernel).__name__, **dataclasses.asdict(e.kernel)},
            "calls_per_inference": e.calls,
            "masic": e.masic,
            "torch": e.torch,
            "plain": e.plain,
            "ratio": e.ratio(),
            "masic_1thread": e.masic1,
            "torch_1thread": e.torch1,
            "plain_1thread": e.plain1,
            "ratio_1thread": e.ratio1(),
        }
        for e in entries
    ]

    models: dict[str, dict] = {}
    if "models" not in skip:
        runs = [(spec.name, spec, None) for spec in whole]
        runs += [(budget_label(name, budget), MODELS[name], budget) for name, budget in budgeted]
        for label, spec, budget in runs:
            print(f"  {label}: compiling and running ...", flush=True)
            x = inputs.get(spec.name)
            x = model_input(spec) if x is None else x
            try:
                models[label] = bench_model(label, spec, budget, paths[spec.name], x, work, args)
            except RuntimeError as err:
                print(f"  {label}: {err}")
                models[label] = {"error": str(err)}
        print_models({k: v for k, v in models.items() if "error" not in v}, args.threads)
    results["models"] = models

    if "spikes" not in skip:
        reports = {
            spec.name: spike_report(
                graphs[spec.name],
                inputs[spec.name],
                *(plan_graph(paths[spec.name], spec, None, spikes) for spikes in ("bytes", "f32")),
            )
            for spec in whole
        }
        print_spikes(reports)
        rows, packed_rows, projections = [], [], {}
        for spec in whole:
            name, fed_rows = spec.name, []
            for consumer in (c for c in reports[name]["consumers"] if c["spikes"]):
                entry = node_entry[name][f"node:{consumer['node']}"]
                calls = node_calls[name][consumer["node"]]
                row = consumer | {"model": name, "shape": entry.shape, "calls": calls}
                for count, suffix in thread_counts.items():
                    storage = storage_bench(libs[count], entry, consumer["rate"], args.kernel_seconds) or {}
                    row |= {f"{kind}_ms{suffix}": timing["best_ms"] for kind, timing in storage.items()}
                    timing = accumulate_bench(libs[count], entry, consumer["rate"], args.kernel_seconds)
                    if timing is None:
                        continue
                    row[f"masic_ms{suffix}"] = timing["masic"]["best_ms"]
                    row[f"accumulate_ms{suffix}"] = timing["accumulate"]["best_ms"]
                    if "multiply" in timing:
                        row[f"multiply_ms{suffix}"] = timing["multiply"]["best_ms"]
                    row["max_rel_error"] = max(row.get("max_rel_error", 0.0), timing["max_rel_error"])
                if "masic_ms" in row:
                    rows.append(row)
                    fed_rows.append((entry, row))
                if "bits_ms" in row:
                    packed_rows.append(row)
            if "kernels" not in skip:
                projections[name] = {
                    label: project(name, suffix, entries, fed_rows, models.get(name, {}))
                    for label, suffix in (("threads", ""), ("one_thread", "1"))
                    if suffix in thread_counts.values()
                }
        print_accumulate(rows, packed_rows, projections, args.threads)
        results["spikes"] = reports
        results["accumulate"] = {"kernels": rows, "bits_vs_bytes": packed_rows, "projections": projections}

    if "kernels" not in skip:
        print("\n== where masic's time goes (per-kernel best x calls per inference) ==")
        for label in [spec.name for spec in whole] + [budget_label(name, budget) for name, budget in budgeted]:
            measured = models.get(label, {}).get("masic", {}).get("best_s")
            print_breakdown(label, entries, 1e3 * measured if measured else None)
            if label in models and "error" not in models[label]:
                print_perf(label, models[label], node_entry[label], args.threads)
    for lib in libs.values():
        lib.close()
    results["load_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in results['load_after'])} (1, 5, 15 min)")
    (work / "speed.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"results: {work / 'speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
