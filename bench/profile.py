"""Cost-model fidelity on this host (issue 16): planned against measured inference latency, with the target's
estimated figures and after `masic profile`, and whether profile-guided plans run as fast as estimate-guided ones.

For each model and budget point (ConvNet4 at 1x16x16, T = 8; VGG16 at 3x32x32, T = 4; MobileNetV2 at 3x224x224 and
VGG16 at 3x224x224, T = 2; each without a budget and under two budgets), it compiles the artifact for x86_64 with
the target's estimated figures (`masic compile`, into WORKDIR, kept for the next run), profiles it with `masic
profile OUT --runs N --threads M` (each figure the median of N runs of one inference, --no-exit; M = 1 by default:
on a shared machine a thread descheduled at a kernel's barrier stalls the others for a time slice, so several
threads measure the load more than the plan), compiles it again with `--profile` of that profile (kernel times
matched by description key, the rest scaled, the measured read bandwidth, time outside the kernels and wait per
streamed read), then profiles the two artifacts twice more, alternately. Each artifact's measured latency is the
median of its profiles, the noise the larger of the two artifacts' spreads (largest - smallest) / smallest over
their profiles. Planned latency is the manifest's `planned.latency_us` (the cost model's latency of one inference
under the plan); measured latency is the profile's `run_us` (the inference loop's wall time). It prints one row per
point and, per model, the median over its points of |planned / measured - 1| for both kinds of plan, and the
profile-guided plan's measured latency against the estimate-guided one's.

    python bench/profile.py [--workdir build/profile] [--runs 3] [--threads 1] [--models convnet4,vgg16-32,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    spec: str
    shape: str
    timesteps: int
    budgets: tuple[str | None, ...]


CASES = (
    Case("convnet4", "tests.zoo_models:convnet4", "1,16,16", 8, (None, "400KB", "300KB")),
    Case("vgg16-32", "tests.zoo_models:vgg16", "3,32,32", 4, (None, "64MB", "32MB")),
    Case("mobilenetv2-224", "tests.zoo_models:mobilenet_v2", "3,224,224", 2, (None, "12MB", "6MB")),
    Case("vgg16-224", "tests.zoo_models:vgg16", "3,224,224", 2, (None, "256MB", "64MB")),
)


@dataclass(frozen=True)
class Point:
    case: Case
    budget: str | None
    estimated_plan_ms: float
    estimated_run_ms: float
    noise: float  # (largest - smallest) / smallest over the profiles of one artifact, the largest of the artifacts
    profiled_plan_ms: float
    profiled_run_ms: float
    # planned with the profile of the artifact without a budget (None at that point itself)
    crossed_plan_ms: float | None
    crossed_run_ms: float | None


def masic(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "masic.cli", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"masic {' '.join(args)} failed:\n{done.stderr}")


def compiled(workdir: Path, case: Case, budget: str | None, profile: Path | None = None, suffix: str = "") -> Path:
    out = workdir / f"{case.name}-{budget or 'none'}{suffix}"
    if not (out / "manifest.json").exists():
        flags = ["--target", "x86_64", "--input-shape", case.shape, "--timesteps", str(case.timesteps), "-o", str(out)]
        flags += ["--budget", budget] if budget else []
        masic("compile", case.spec, *flags, *(["--profile", str(profile)] if profile else []))
    return out


def profiled(out: Path, runs: int, threads: int) -> tuple[float, float]:
    """Planned and measured (median over the runs) latency of one inference, ms."""
    masic("profile", str(out), "--runs", str(runs), "--threads", str(threads))
    manifest = json.loads((out / "manifest.json").read_text())
    profile = json.loads((out / "profile.json").read_text())
    return manifest["planned"]["latency_us"] / 1e3, profile["run_us"] / 1e3


def spread(figures: list[float]) -> float:
    return (max(figures) - min(figures)) / min(figures)


def point(workdir: Path, case: Case, budget: str | None, runs: int, threads: int) -> Point:
    """The estimate-guided artifact profiled (the profile the guided one is planned with), then the artifacts
    profiled twice more, alternately, so that they see the same load on the machine: the estimate-guided one, the
    one guided by its profile and, under a budget, the one guided by the profile of the plan without a budget."""
    estimated = compiled(workdir, case, budget)
    plan, first = profiled(estimated, runs, threads)
    guided = compiled(workdir, case, budget, estimated / "profile.json", "-profiled")
    unconstrained = workdir / f"{case.name}-none" / "profile.json"
    crossed = compiled(workdir, case, budget, unconstrained, "-from-none") if budget else guided
    measured: dict[Path, list[float]] = {estimated: [first], guided: [], crossed: []}
    planned = {estimated: plan}
    for _ in range(2):
        for out in dict.fromkeys((guided, estimated, crossed)):
            planned[out], run = profiled(out, runs, threads)
            measured[out].append(run)
    noise = max(spread(runs) for runs in measured.values() if runs)
    median = {out: statistics.median(runs) for out, runs in measured.items() if runs}
    cross = (planned[crossed], median[crossed]) if budget else (None, None)
    return Point(case, budget, plan, median[estimated], noise, planned[guided], median[guided], *cross)


def error(planned: float, measured: float) -> float:
    return abs(planned / measured - 1)


def figures(planned: float, measured: float, width: int) -> str:
    return f"{planned:{width}.2f} {measured:9.2f} {error(planned, measured):5.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "profile")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="the model's threads (0: one per core)")
    parser.add_argument("--models", default=",".join(case.name for case in CASES))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    chosen = [case for case in CASES if case.name in args.models.split(",")]
    threads = args.threads or "one per core"
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; x86_64 target; threads: {threads}; {args.runs} runs/profile"
    )
    print(
        f"{'model':<16} {'budget':>6} | {'estimates: plan ms':>18} {'run ms':>9} {'err':>5} | "
        f"{'profile: plan ms':>16} {'run ms':>9} {'err':>5} | {'noise':>5} {'guided/est run':>14} | "
        f"{'unconstrained profile: plan ms':>30} {'run ms':>9} {'err':>5}"
    )
    summary = []
    for case in chosen:
        points = []
        for budget in case.budgets:
            p = point(args.workdir, case, budget, args.runs, args.threads)
            points.append(p)
            crossed = (
                "-"
                if p.crossed_plan_ms is None or p.crossed_run_ms is None
                else figures(p.crossed_plan_ms, p.crossed_run_ms, 30)
            )
            print(
                f"{case.name:<16} {budget or 'none':>6} | {figures(p.estimated_plan_ms, p.estimated_run_ms, 18)} | "
                f"{figures(p.profiled_plan_ms, p.profiled_run_ms, 16)} | {p.noise:5.0%} "
                f"{p.profiled_run_ms / p.estimated_run_ms:14.2f} | {crossed:>46}",
                flush=True,
            )
        est = statistics.median(error(p.estimated_plan_ms, p.estimated_run_ms) for p in points)
        pro = statistics.median(error(p.profiled_plan_ms, p.profiled_run_ms) for p in points)
        crossing = [
            error(p.crossed_plan_ms, p.crossed_run_ms) for p in points if p.crossed_plan_ms and p.crossed_run_ms
        ]
        slower = [p for p in points if p.profiled_run_ms > p.estimated_run_ms * (1 + p.noise)]
        summary.append(
            f"{case.name:<16} median |planned/measured - 1|: estimates {est:4.0%}, profile {pro:4.0%} "
            f"(within 15%: {'yes' if pro <= 0.15 else 'no'}), the unconstrained plan's profile under the budgets "
            f"{statistics.median(crossing):4.0%}; profile-guided slower beyond the noise at "
            f"{len(slower)} of {len(points)} points"
            + (f" ({', '.join(p.budget or 'none' for p in slower)})" if slower else "")
        )
    print("\n".join(summary))
    print(f"load average over the last 15 minutes at the end: {os.getloadavg()[2]:.1f}")


if __name__ == "__main__":
    main()
