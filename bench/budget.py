"""Memory budgets on a spiking VGG16: plan, weight reads, latency and peak RSS of the compiled artifact, in one run.

1. Imports the model spec (default `tests.zoo_models:vgg16`: Norse's vgg16, 10 classes, weights scaled so spikes
   propagate; input 3,32,32; T = 4) and prints its parameter count and weight bytes.
2. Finds the smallest budget that works, as `masic compile` does when it refuses one
   (`masic.planning.minimum_budget` on the graph as slice-layers receives it: `minimum_budget.folded`).
3. For each budget (--budgets; "none" is always run, first, as the reference): times the planning, i.e. the pass
   pipeline `masic.passes.DEFAULT_PIPELINE` (slice-layers + schedule + assign-offsets; no kernel build) with the
   x86_64 target's alignment and cost-model machine, best of --plan-repeats; compiles the artifact with
   `masic compile --target x86_64 --budget N -o WORKDIR/LABEL` (kernels come from masic's object cache after the
   first build); runs it with `masic run --no-exit` on one fixed random input sequence --repeats times and keeps
   the fastest run's wall time (peak RSS: the largest of the runs).
4. Prints one table: arena, block, streamed weights, bytes read from weights.bin per inference as planned
   (`masic.passes.schedule.bytes_read`: streamed weights, once per block) and as measured by the loader
   (`weight_bytes_read`: resident weights once plus the streamed ones), the measured read over the weights' size,
   planning time, latency and its ratio to the unconstrained plan's, time the compute waited for loads, peak RSS,
   peak RSS - arena (the loader's fixed overhead), whether peak RSS <= budget + 4 MiB (the overhead bound
   tests/e2e/test_budget.py allows), and the largest difference of the outputs from the unconstrained plan's.
5. Draws WORKDIR/budget.png: latency and bytes read per inference against the budget (log x axis), with the
   unconstrained plan's values as reference lines.

On the host, weights.bin is read through the OS page cache (the compile just wrote it, the runs read it again), so
weight reads cost memory copies, not storage reads: streaming costs far more on a device reading an SD card. Page
cache pages are not the loader's: they do not count in its peak RSS. MB = 10^6 bytes, MiB = 2^20 bytes.

    python bench/budget.py [--workdir build/budget] [--repeats 3] [--threads 2] [--model tests.zoo_models:vgg16]
                           [--input-shape 3,32,32] [--timesteps 4] [--budgets none,128MB,64MB,32MB,16MB,min]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masic.frontends.dispatch import ImportOptions
from masic.targets import get_target

from masic import driver
from masic.arguments import positive_arg, shape_arg
from masic.errors import MasicError
from masic.ir.graph import Graph
from masic.ir.ops import state_names
from masic.planning.minimum_budget import folded, minimum_budget
from masic.planning.sweep import SweepRow, plan_row
from masic.units import parse_bytes

TARGET = "x86_64"
DEFAULT_BUDGETS = "none,128MB,64MB,32MB,16MB,min"
OVERHEAD = 4 << 20  # the loader's fixed overhead allowed beyond the budget (code, stacks, libc)
LATENCY_LIMIT = 1.25  # the issue's bound at 64MB: latency at most this times the unconstrained plan's
MB = 10**6


class BenchError(Exception):
    """A failure the bench reports in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2
        self.exit(2, f"budget.py: error: {message}\n")


@dataclass(frozen=True)
class Budget:
    """One budget of the table: `bytes` None is unconstrained; `minimum` marks the smallest budget that works."""

    label: str
    bytes: int | None
    minimum: bool = False


@dataclass
class Row:
    budget: Budget
    plan: SweepRow
    out: Path = Path()
    runs: list[dict] = field(default_factory=list)  # every run's JSON line
    compile_s: float = 0.0
    max_diff: float | None = None  # largest |output - unconstrained output|

    @property
    def stats(self) -> dict:
        """The fastest run's JSON line, with the largest peak RSS of the runs."""
        best = dict(min(self.runs, key=lambda s: s["wall_s"]))
        best["peak_rss_bytes"] = max(s["peak_rss_bytes"] for s in self.runs)
        return best

    @property
    def median_s(self) -> float:
        return float(np.median([s["wall_s"] for s in self.runs]))


def parse_budgets(text: str) -> list[str]:
    """The budget list: "none", "min" (or "minimum") and byte counts such as 64MB; "none" first, added if missing."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma list of budgets such as none,64MB,min")
    for item in items:
        if item.lower() not in ("none", "min", "minimum"):
            try:
                parse_bytes(item)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None
    rest = [item for item in items if item.lower() != "none"]
    return ["none", *rest]


def resolve_budgets(items: list[str], minimum: int) -> list[Budget]:
    """Budgets of the parsed list, "min" replaced by the smallest budget that works."""
    budgets = []
    for item in items:
        key = item.lower()
        if key == "none":
            budgets.append(Budget("none", None))
        elif key in ("min", "minimum"):
            size = f"{minimum / MB:.2f}MB" if minimum >= MB else f"{minimum / 1e3:.1f}KB"
            budgets.append(Budget(f"min {size}", minimum, minimum=True))
        else:
            budgets.append(Budget(item, parse_bytes(item)))
    return budgets


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/budget"))
    parser.add_argument("--repeats", type=positive_arg, default=3, help="timed runs per budget, fastest kept (3)")
    parser.add_argument("--plan-repeats", type=positive_arg, default=3, help="timed plannings per budget (3)")
    parser.add_argument("--threads", type=positive_arg, default=2, help="loader worker threads (2)")
    parser.add_argument("--model", default="tests.zoo_models:vgg16", help="model spec (tests.zoo_models:vgg16)")
    parser.add_argument("--input-shape", type=shape_arg, default=(3, 32, 32), help="per-sample shape (3,32,32)")
    parser.add_argument("--timesteps", type=positive_arg, default=4, help="timesteps per inference (4)")
    parser.add_argument(
        "--input-scale", type=float, default=20.0, help="input: uniform [0, 1) times this (20, the zoo's VGG scale)"
    )
    parser.add_argument(
        "--budgets",
        type=parse_budgets,
        default=parse_budgets(DEFAULT_BUDGETS),
        help=f"comma list of byte counts, none, min ({DEFAULT_BUDGETS}); none is always run, as the reference",
    )
    return parser


def import_graph(spec: str, shape: tuple[int, ...], timesteps: int) -> Graph:
    return driver.import_model(spec, ImportOptions(shape, timesteps))


def smallest_budget(graph: Graph, alignment: int) -> int:
    """The smallest budget that works, exactly as `masic compile` states it when refusing one."""
    return minimum_budget(folded(graph), alignment)


def largest_working_set(graph: Graph) -> tuple[int, str]:
    """The largest working set of one layer, (bytes, node): its operands, output, neuron state and weights, which
    all exist while it runs unless the planner splits it."""
    best = (0, "")
    for node in graph.nodes:
        operands = sum(graph.node(value).type.nbytes for value in node.inputs)
        weights = sum(graph.param(ref.name).type.nbytes for _, ref in node.param_refs())
        states = len(state_names(node)) * node.type.nbytes
        best = max(best, (operands + node.type.nbytes + states + weights, node.name))
    return best


def plan(graph: Graph, budget: int | None, repeats: int = 1) -> tuple[Graph, SweepRow]:
    """The planned graph at a budget (the whole default pipeline, x86_64 options) and its figures, as
    `masic compile --budget-sweep` reports them; the planning time is the best of `repeats` runs."""
    return plan_row(graph, budget, driver.options_for(get_target(TARGET), budget), repeats)


def _cli(*args: str):
    from tests.artifacts import masic_cli  # imports torch and norse: only when compiling or running

    return masic_cli(*args)


def compile_artifact(args: argparse.Namespace, budget: Budget, out: Path) -> float:
    """Compiles the model at a budget into `out`; returns the seconds it took."""
    flags = ["--target", TARGET, "--input-shape", ",".join(map(str, args.input_shape))]
    flags += ["--timesteps", str(args.timesteps), "-o", str(out)]
    if budget.bytes is not None:
        flags += ["--budget", str(budget.bytes)]
    started = time.perf_counter()
    compiled = _cli("compile", args.model, *flags)
    if compiled.returncode != 0:
        last = (compiled.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"masic compile at budget {budget.label} failed: {last}")
    return time.perf_counter() - started


def run_artifact(out: Path, x_path: Path, y_path: Path, threads: int, label: str) -> dict:
    """One `masic run --no-exit` of the artifact: its JSON line; every step's output goes to `y_path`."""
    y_path.unlink(missing_ok=True)
    flags = ["--input", str(x_path), "--output", str(y_path), "--no-exit", "--threads", str(threads)]
    run = _cli("run", str(out), *flags)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"masic run at budget {label} failed: {last}")
    return run.stats


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / MB:.1f}"


def rss_ok(row: Row) -> bool:
    """Peak RSS within the budget (the arena when unconstrained) plus the loader's fixed overhead."""
    limit = row.budget.bytes if row.budget.bytes is not None else row.stats["arena_bytes"]
    return row.stats["peak_rss_bytes"] <= limit + OVERHEAD


HEADER = (
    f"{'budget':<15}{'arena MB':>9}{'block':>6}{'streamed':>9}{'MB':>7}{'plan read':>10}{'run read':>9}{'/W':>6}"
    f"{'plan s':>8}{'ms/inf':>9}{'med':>7}{'x none':>7}{'wait s':>8}{'RSS MB':>8}{'RSS-arena':>10}{'<=B+4MiB':>9}"
    f"{'max|diff|':>10}"
)


def format_row(row: Row, reference: Row, weights: int) -> str:
    stats, planned = row.stats, row.plan
    latency = stats["wall_s"]
    ratio = latency / reference.stats["wall_s"] if reference.stats.get("wall_s") else float("nan")
    diff = "-" if row.max_diff is None else f"{row.max_diff:.1e}"
    return (
        f"{row.budget.label:<15}{_mb(stats['arena_bytes']):>9}{stats['block']:>6}{planned.streamed:>9}"
        f"{_mb(planned.streamed_bytes):>7}{_mb(planned.bytes_read):>10}{_mb(stats['weight_bytes_read']):>9}"
        f"{stats['weight_bytes_read'] / weights:>6.2f}{planned.planning_s:>8.3f}{1e3 * latency:>9.1f}"
        f"{1e3 * row.median_s:>7.1f}{ratio:>7.2f}"
        f"{stats['load_wait_s']:>8.3f}{_mb(stats['peak_rss_bytes']):>8}"
        f"{_mb(stats['peak_rss_bytes'] - stats['arena_bytes']):>10}{'yes' if rss_ok(row) else 'NO':>9}{diff:>10}"
    )


def format_table(rows: list[Row], weights: int) -> str:
    """The table; rows[0] is the unconstrained reference."""
    return "\n".join([HEADER, *(format_row(row, rows[0], weights) for row in rows)])


def findings(rows: list[Row], weights: int) -> list[str]:
    """The issue's checks, one line each: at 64MB (or the budgets given), and across all budgets."""
    reference = rows[0]
    lines = []
    for row in rows[1:]:
        ratio = row.stats["wall_s"] / reference.stats["wall_s"]
        median = row.median_s / reference.median_s
        read = row.stats["weight_bytes_read"] / weights
        resident = weights - row.plan.streamed_bytes
        expected = resident + row.plan.bytes_read
        lines.append(
            f"{row.budget.label}: latency {ratio:.2f}x none, best of runs ({'ok' if ratio <= LATENCY_LIMIT else 'OVER'}"
            f" <= {LATENCY_LIMIT}x; medians {median:.2f}x), read {read:.2f}x weights "
            f"({'ok' if read <= 1.0 else 'OVER'} <= 1.0x), peak RSS {'ok' if rss_ok(row) else 'OVER'} (budget + "
            f"4MiB), measured read {'=' if row.stats['weight_bytes_read'] == expected else '!='} resident + planned "
            f"streamed, arena {'=' if row.stats['arena_bytes'] == row.plan.arena else '!='} the timed plan's"
        )
    diffs = [row.max_diff for row in rows[1:] if row.max_diff is not None]
    if diffs:
        worst = max(diffs)
        verdict = "identical" if worst == 0 else ("within 1e-5" if worst <= 1e-5 else "DIFFERENT (> 1e-5)")
        lines.append(f"outputs against the unconstrained plan's: max |diff| {worst:.3g} over all budgets: {verdict}")
    return lines


def draw(rows: list[Row], weights: int, path: Path, title: str) -> None:
    """Latency and bytes read per inference against the budget (log x), the unconstrained values as lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    reference, budgeted = rows[0], sorted(rows[1:], key=lambda r: r.budget.bytes)
    xs = [r.budget.bytes / MB for r in budgeted]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(xs, [1e3 * r.stats["wall_s"] for r in budgeted], "o-", label="best of runs")
    left.plot(xs, [1e3 * r.median_s for r in budgeted], "s:", ms=4, color="tab:blue", alpha=0.6, label="median")
    none_ms = 1e3 * reference.stats["wall_s"]
    left.axhline(none_ms, ls="--", color="grey", label=f"unconstrained, best ({none_ms:.0f} ms)")
    left.axhline(LATENCY_LIMIT * none_ms, ls=":", color="red", label=f"{LATENCY_LIMIT}x unconstrained")
    left.set_ylabel("latency per inference (ms)")
    left.set_ylim(bottom=0)
    right.plot(xs, [r.stats["weight_bytes_read"] / MB for r in budgeted], "o-", label="measured (loader)")
    planned = [(weights - r.plan.streamed_bytes + r.plan.bytes_read) / MB for r in budgeted]
    right.plot(xs, planned, "x--", label="planned (resident once + streamed)")
    right.plot(xs, [r.plan.bytes_read / MB for r in budgeted], "^-", label="of which streamed (plan)")
    right.axhline(
        reference.stats["weight_bytes_read"] / MB, ls="--", color="grey", label="unconstrained (= weights, once)"
    )
    right.set_ylabel("bytes read from weights.bin per inference (MB)")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:.3g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("budget (MB, log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compiled_row(args: argparse.Namespace, budget: Budget, graph: Graph, work: Path) -> Row:
    """Plans (timed) and compiles the model at one budget into WORKDIR/LABEL."""
    _, planned = plan(graph, budget.bytes, args.plan_repeats)
    passes = ", ".join(f"{name} {seconds:.3f}" for name, seconds in planned.passes if seconds >= 0.0005)
    print(
        f"  {budget.label}: planned in {planned.planning_s:.3f} s ({passes or 'every pass < 0.5 ms'}); cost model "
        f"{1e3 * planned.latency_s:.1f} ms per inference; compiling ...",
        end="",
        flush=True,
    )
    row = Row(budget, planned, work / re.sub(r"[^A-Za-z0-9.]+", "_", budget.label))
    row.compile_s = compile_artifact(args, budget, row.out)
    print(f" {row.compile_s:.1f} s", flush=True)
    return row


def measure(rows: list[Row], args: argparse.Namespace, x_path: Path) -> None:
    """Runs every artifact --repeats times, round robin over the budgets (so that load from other processes falls
    on all of them alike); checks each run computed every step and each output against the unconstrained one."""
    load = os.getloadavg()[0]
    print(f"running each artifact {args.repeats} times, round robin; load average before: {load:.2f}", flush=True)
    reference = None
    for _ in range(args.repeats):
        for row in rows:
            y_path = row.out.with_name(f"{row.out.name}.y.npy")  # beside the artifact: compile owns its folder
            stats = run_artifact(row.out, x_path, y_path, args.threads, row.budget.label)
            if stats["timesteps_computed"] != args.timesteps:
                steps = stats["timesteps_computed"]
                raise BenchError(f"budget {row.budget.label} ran {steps} of {args.timesteps} steps")
            row.runs.append(stats)
            y = np.load(y_path)
            if reference is None:
                reference = y
                print(f"  none: outputs {y.shape}, max |y| {np.abs(y).max():.3g}, prediction {stats['prediction']}")
            diff = float(np.abs(y - reference).max()) if y.shape == reference.shape else float("inf")
            row.max_diff = diff if row.max_diff is None else max(row.max_diff, diff)
    if rows[0].max_diff == 0:
        rows[0].max_diff = None  # the reference: "-" unless its own runs differ
    print(f"load average after: {os.getloadavg()[0]:.2f} (the machine has {os.cpu_count()} CPUs)", flush=True)


def bench(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    target = get_target(TARGET)
    graph = import_graph(args.model, args.input_shape, args.timesteps)
    imported = sum(p.type.nbytes for p in graph.params)
    weights = sum(p.type.nbytes for p in folded(graph).params)  # what the artifacts hold: after fold-pooling etc.
    parameters = sum(int(np.prod(p.type.shape)) for p in graph.params)
    print(
        f"{args.model}: {parameters:,} parameters, {imported:,} bytes of weights ({imported / MB:.1f} MB) in "
        f"{len(graph.params)} tensors, {weights:,} bytes ({weights / MB:.1f} MB) after the folding passes; "
        f"input {','.join(map(str, args.input_shape))}, T = {args.timesteps}; "
        f"target {TARGET}, {args.threads} thread(s); latency best of {args.repeats} runs, planning best of "
        f"{args.plan_repeats}",
        flush=True,
    )
    searched = time.perf_counter()
    minimum = smallest_budget(graph, target.alignment)
    print(
        f"smallest budget that works: {minimum:,} bytes ({minimum / MB:.2f} MB), found in "
        f"{time.perf_counter() - searched:.2f} s",
        flush=True,
    )
    working_set, layer = largest_working_set(folded(graph))
    print(
        f"largest layer's working set (operands + output + neuron state + weights): {working_set:,} bytes "
        f"({working_set / MB:.2f} MB) at %{layer}; the minimum is {minimum / working_set:.2f}x that",
        flush=True,
    )
    budgets = resolve_budgets(args.budgets, minimum)
    x = (np.random.default_rng(0).uniform(0.0, 1.0, (args.timesteps, *args.input_shape)) * args.input_scale).astype(
        np.float32
    )
    x_path = work / "x.npy"
    np.save(x_path, x)
    rows = [compiled_row(args, budget, graph, work) for budget in budgets]
    measure(rows, args, x_path)
    print()
    print(format_table(rows, weights))
    print()
    for line in findings(rows, weights):
        print(line)
    print(
        "plan read = bytes_read of the plan (streamed weights, once per block); run read = the loader's "
        "weight_bytes_read (resident weights once + streamed); /W = run read / weights' bytes; plan s = the whole "
        "pass pipeline; ms/inf = wall_s of one inference of T steps (excludes the initial load of resident weights, "
        "load_s); med = median wall_s; x none = ms/inf over none's; wait s = load_wait_s; RSS = peak RSS "
        "(VmHWM), the largest of the runs; <=B+4MiB against the arena when unconstrained."
    )
    print(
        "weights.bin was read through the OS page cache (warm: written by the compile, read by every run), so reads "
        "cost memory copies here, not storage: on a device's SD card streaming is far slower."
    )
    png = work / "budget.png"
    draw(rows, weights, png, f"{args.model}, T={args.timesteps}, {TARGET}, {args.threads} thread(s)")
    print(f"plot: {png}; bench wall time {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return bench(args)
    except (BenchError, MasicError, OSError, ValueError) as err:
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"budget.py: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
