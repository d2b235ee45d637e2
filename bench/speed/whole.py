"""Part 2 of the speed benchmark: whole models compiled by `masic compile` and run as a user runs them, against Norse
in its own process (latency, peak RSS, perf profiles); and part 4, where a model's time goes (kernel times x calls
per inference, perf's shares)."""

from __future__ import annotations

import argparse
import bisect
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.speed.common import REPO, RSS_TARGET, TARGET, run_worker
from bench.speed.kernels import KernelEntry
from bench.speed.models import ModelSpec


def masic_compile(model_path: Path, spec: ModelSpec, out: Path, budget: int | None = None) -> None:
    flags = ["--target", TARGET, "--timesteps", str(spec.timesteps)] + (["--budget", str(budget)] if budget else [])
    flags += ["--input-shape", ",".join(map(str, spec.input_shape)), "-o", str(out)]
    command = [sys.executable, "-m", "masic.cli", "compile", str(model_path), *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"masic compile {model_path} failed: {result.stderr.strip()[-2000:]}")


def run_artifact(out: Path, x_path: Path, threads: int, *flags: str) -> dict:
    """The artifact's JSON stats line (every step run: --no-exit)."""
    command = [str(out / "model"), "--input", str(x_path), "--threads", str(threads), "--no-exit", *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{out}/model failed: {result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_masic(out: Path, folder: Path, x: np.ndarray, threads: int, args: argparse.Namespace) -> dict:
    """Single-sample runs (at least --runs, more for up to --model-seconds), then --runs labelled runs of the sample
    repeated for about a second each (warm: the state is reset before each sample, as for a new input)."""
    x_path = folder / "x.npy"
    singles: list[dict] = []
    begin = time.perf_counter()
    while len(singles) < args.runs or (time.perf_counter() - begin < args.model_seconds and len(singles) < 100):
        singles.append(run_artifact(out, x_path, threads))
    single = min(s["wall_s"] for s in singles)
    n = int(min(100_000, 2**28 // x.nbytes, max(3, round(1.0 / max(single, 1e-6)))))
    np.save(folder / "xs.npy", np.ascontiguousarray(np.broadcast_to(x, (n, *x.shape))))
    np.save(folder / "ys.npy", np.zeros(n, dtype=np.int64))
    flags = ("--labels", str(folder / "ys.npy"))
    batches = [run_artifact(out, folder / "xs.npy", threads, *flags) for _ in range(args.runs)]
    warm = min(b["wall_s_per_sample"] for b in batches)
    return {
        "best_s": min(single, warm),
        "single_s": single,
        "single_runs": len(singles),
        "warm_s": warm,
        "warm_samples": n,
        "peak_rss": max(s["peak_rss_bytes"] for s in singles),
        "arena_bytes": singles[0]["arena_bytes"],
        "weights_bytes": singles[0]["weights_bytes"],
        "block": singles[0]["block"],
        "load_s": max(b["load_s"] for b in batches),
    }


def time_norse(spec: ModelSpec, model_path: Path, folder: Path, threads: int, args: argparse.Namespace) -> dict:
    request = folder / f"norse_{threads}t.json"
    fields = {"model": str(model_path), "input": str(folder / "x.npy"), "input_shape": list(spec.input_shape)}
    fields |= {"timesteps": spec.timesteps, "stepwise": spec.stepwise, "threads": threads, "runs": args.runs}
    request.write_text(json.dumps(fields | {"seconds": args.model_seconds}))
    run_worker("norse-model", request)
    return json.loads(request.with_suffix(".out.json").read_text())


POOL_FUNCTIONS = ("masic_parallel_launch", "wait_until", "run_share", "worker_main", "new_job_or_shutdown")
POOL_FUNCTIONS += ("all_workers_done", "masic_parallel_barrier")


def code_map(binary: Path, kernels: set[str]) -> tuple[list[int], list[str]]:
    """Sorted start addresses and names of the artifact's code: each kernel's exported symbol (masic_*) and the
    parallel closures it launches (no symbol of their own: found as the rip-relative addresses its code loads into
    the first argument register), the thread pool, and everything else under its own symbol."""
    listing = subprocess.run(["nm", "-n", str(binary)], capture_output=True, text=True, check=True).stdout
    starts: list[tuple[int, str]] = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] not in "tTwW":
            continue
        address, name = int(parts[0], 16), parts[2]
        starts.append((address, name))
        if name in kernels:
            span = [f"--start-address={address}", f"--stop-address={address + 256}"]
            objdump = ["objdump", "-d", "--no-show-raw-insn", *span, str(binary)]
            code = subprocess.run(objdump, capture_output=True, text=True, check=True).stdout
            for target in re.findall(r"lea\s+0x[0-9a-f]+\(%rip\),%rdi\s+# ([0-9a-f]+)", code):
                starts.append((int(target, 16), name))
    starts.sort()
    return [a for a, _ in starts], [n for _, n in starts]


def perf_profile(out: Path, folder: Path, threads: int, load_s: float) -> dict[str, float] | None:
    """Share of the CPU samples of a labelled run's inference phase (perf record, started after the load) in each
    kernel symbol, the thread pool, the rest of the program and the OS; None without perf."""
    if shutil.which("perf") is None or shutil.which("objdump") is None:
        return None
    data = folder / f"perf_{threads}t.data"
    delay_ms = str(int(1e3 * load_s) + 100)
    command = ["perf", "record", "-q", "-F", "2000", "-D", delay_ms, "-o", str(data), "--", str(out / "model")]
    command += ["--input", str(folder / "xs.npy"), "--labels", str(folder / "ys.npy"), "--threads", str(threads)]
    if subprocess.run([*command, "--no-exit"], capture_output=True, check=False).returncode != 0:
        return None
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip"], capture_output=True, text=True)
    kernels = set(json.loads((out / "manifest.json").read_text())["kernels"])
    addresses, names = code_map(out / "model", kernels)
    counts: Counter = Counter()
    for line in script.stdout.split():
        ip = int(line, 16)
        k = bisect.bisect_right(addresses, ip) - 1
        if ip >= 1 << 47:
            counts["[OS]"] += 1
        elif k < 0:
            counts["[unknown]"] += 1
        elif names[k] in POOL_FUNCTIONS:
            counts["[thread pool]"] += 1
        elif names[k] in kernels:
            counts[names[k]] += 1
        else:
            counts["[loader, libc]"] += 1
    total = sum(counts.values())
    return {name: n / total for name, n in counts.most_common()} if total else None


def bench_model(
    label: str,
    spec: ModelSpec,
    budget: int | None,
    model_path: Path,
    x: np.ndarray,
    work: Path,
    args: argparse.Namespace,
) -> dict:
    """Compiles the model (under `budget`, if any) and times it against Norse on --threads threads (and on one,
    with --one-thread)."""
    folder = work / label
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "out"
    masic_compile(model_path, spec, out, budget)
    np.save(folder / "x.npy", x)
    ours = time_masic(out, folder, x, args.threads, args)
    norse = time_norse(spec, model_path, folder, args.threads, args)
    result = {
        "timesteps": spec.timesteps,
        "input_shape": list(spec.input_shape),
        "masic": ours,
        "norse": norse,
        "speedup": norse["best_s"] / ours["best_s"],
        "rss_ratio": norse["peak_rss"] / ours["peak_rss"],
        "rss_ratio_after_imports": norse["rss_after_imports"] / ours["peak_rss"],
        "target_speedup": spec.min_speedup,
        "budget": budget,
    }
    result["perf"] = perf_profile(out, folder, args.threads, ours["load_s"])
    if args.one_thread and args.threads != 1:
        ours1, norse1 = time_masic(out, folder, x, 1, args), time_norse(spec, model_path, folder, 1, args)
        result["one_thread"] = {"masic": ours1, "norse": norse1, "speedup": norse1["best_s"] / ours1["best_s"]}
        result["one_thread"]["perf"] = perf_profile(out, folder, 1, ours1["load_s"])
        # each side in its better configuration: robust to a loaded machine stalling a thread pool
        best_norse, best_ours = min(norse["best_s"], norse1["best_s"]), min(ours["best_s"], ours1["best_s"])
        result["speedup_best_config"] = best_norse / best_ours
    return result


def mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


def print_models(results: dict[str, dict], threads: int) -> None:
    print("\n== 2. whole model, batch 1, one inference: masic (x86_64 artifact) vs Norse eager (own process), ms ==")
    print(
        f"{'model':<12}{'T':>3}{'threads':>8}{'masic':>9}{'(warm)':>9}{'(single)':>9}{'norse':>10}{'(median)':>10}"
        f"{'(first)':>10}{'runs':>6}{'speedup':>9}{'target':>8}{'best config':>17}"
    )
    for name, r in results.items():
        rows = [(threads, r["masic"], r["norse"], r["speedup"])]
        if "one_thread" in r:
            one = r["one_thread"]
            rows.append((1, one["masic"], one["norse"], one["speedup"]))
        for k, (count, ours, norse, speedup) in enumerate(rows):
            target = ""
            if k == 0:
                target = f"{r['target_speedup']:>6.0f}x {'ok' if speedup >= r['target_speedup'] else 'MISS':<4}"
            if k == 0 and "speedup_best_config" in r:
                best = r["speedup_best_config"]
                target += f"{best:>9.1f}x {'ok' if best >= r['target_speedup'] else 'MISS'}"
            print(
                f"{name if k == 0 else '':<12}{r['timesteps'] if k == 0 else '':>3}{count:>8}"
                f"{1e3 * ours['best_s']:>9.3f}{1e3 * ours['warm_s']:>9.3f}{1e3 * ours['single_s']:>9.3f}"
                f"{1e3 * norse['best_s']:>10.3f}"
                f"{1e3 * norse['median_s']:>10.3f}{1e3 * norse['first_s']:>10.3f}{norse['runs']:>6}"
                f"{speedup:>8.1f}x{target}"
            )
    print("(masic: the better of warm, the best per-sample time of labelled runs of the sample repeated (a mean over")
    print(" the run's samples), and single, the best one-sample run; norse: best of `runs` calls after two warm-up")
    print(f" calls; speedup = norse / masic; the issue's targets are for {threads} threads; best config: each side's")
    print(" better time over 1 and --threads threads, norse / masic: what a loaded machine cannot inflate by stalling")
    print(" one side's thread pool)")
    print(f"\npeak RSS, MiB (target: Norse's process peak >= {RSS_TARGET:g}x the compiled program's)")
    print(
        f"{'model':<12}{'masic peak':>11}{'arena':>9}{'weights':>9}{'norse peak':>11}{'after import':>13}"
        f"{'after load':>11}{'ru_maxrss':>10}{'ratio':>8}{'(imports)':>10}"
    )
    for name, r in results.items():
        ours, n = r["masic"], r["norse"]
        ok = "ok" if r["rss_ratio"] >= RSS_TARGET else "MISS"
        print(
            f"{name:<12}{mib(ours['peak_rss']):>11}{mib(ours['arena_bytes']):>9}{mib(ours['weights_bytes']):>9}"
            f"{mib(n['peak_rss']):>11}{mib(n['rss_after_imports']):>13}{mib(n['rss_after_load']):>11}"
            f"{mib(n['ru_maxrss']):>10}{r['rss_ratio']:>7.1f}x{r['rss_ratio_after_imports']:>9.1f}x {ok}"
        )
    print("(peaks are VmHWM; ratio = norse peak / masic peak; (imports) = norse RSS right after importing torch and")
    print(" norse / masic peak; ru_maxrss counts what Linux carries over from the parent process: an upper bound)")


def print_perf(model: str, result: dict, symbols: dict[str, KernelEntry], threads: int) -> None:
    """The perf profiles of the artifact's inference phase: shares of CPU samples, per kernel type and the top
    kernels."""
    for count, profile in ((threads, result.get("perf")), (1, result.get("one_thread", {}).get("perf"))):
        if not profile:
            continue
        by_type: Counter = Counter()
        for name, share in profile.items():
            entry = symbols.get(f"symbol:{name}")
            by_type[entry.kind if entry else name] += share
        print(f"  perf, {count} thread(s), share of CPU samples while inferring: ", end="")
        print(", ".join(f"{kind} {100 * share:.1f}%" for kind, share in by_type.most_common(8)))
        top = [(n, s) for n, s in profile.items() if f"symbol:{n}" in symbols][:4]
        print("    top kernels: " + ", ".join(f"{symbols[f'symbol:{n}'].shape} {100 * s:.1f}%" for n, s in top))


def print_breakdown(model: str, entries: list[KernelEntry], measured_ms: float | None) -> None:
    """Where a model's kernel time goes: calls x best time per kernel, with PyTorch's time for the same calls."""
    rows = [(e, e.calls[model]) for e in entries if model in e.calls and e.masic]
    total = sum(e.masic["best_ms"] * n for e, n in rows)
    total_torch = sum(e.torch["best_ms"] * n for e, n in rows if e.torch)
    total1 = sum(e.masic1["best_ms"] * n for e, n in rows if e.masic1)
    by_type = Counter()
    for e, n in rows:
        by_type[e.kind] += e.masic["best_ms"] * n
    measured = f"; measured {measured_ms:.3f} ms per inference" if measured_ms else ""
    one = f" (on one thread {total1:.3f})" if any(e.masic1 for e, _ in rows) else ""
    print(f"\n{model}: kernels {total:.3f} ms per inference{one}{measured}")
    print(f"  PyTorch ops for the same calls: {total_torch:.3f} ms")
    print("  by type: " + ", ".join(f"{kind} {100 * ms / total:.0f}%" for kind, ms in by_type.most_common()))
    for e, n in sorted(rows, key=lambda r: -r[0].masic["best_ms"] * r[1])[:8]:
        ms = e.masic["best_ms"] * n
        one = f"{e.masic1['best_ms'] * n:>9.3f}" if e.masic1 else f"{'-':>9}"
        torch_ms = e.torch["best_ms"] * n if e.torch else float("nan")
        print(
            f"  {e.kind[:21]:<22}{e.shape[:35]:<36}x{n:<5}{ms:>9.3f} ms {100 * ms / total:>5.1f}%"
            f"  1 thread {one}  torch {torch_ms:>9.3f}"
        )
