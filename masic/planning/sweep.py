"""`masic compile --budget-sweep LO:HI`: what the planner does with a model across a range of budgets.

For budgets from LO to HI (powers of two between them, and the ends), it runs the planning passes (no kernel
build) and reports, per budget, the arena, the schedule (timesteps per block, weights streamed), the bytes read
from weights.bin per inference, and the target cost model's planned latency; budgets below the model's minimum
are marked refused, with the minimum, which is itself a row of the sweep when it falls inside the range. The
table is printed and drawn (latency and bytes read against the budget). `compare_formats` sweeps the same budgets
with the weights stored in each format (float32, float16, int8), and `formats_table` shows them side by side: per
budget each format's planned latency and bytes read, or its refusal, and each format's minimum budget and weights
(all in stored bytes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from masic.analysis.cost import planned_latency
from masic.driver import plan
from masic.ir.graph import Graph
from masic.ir.weight_formats import FORMATS, WeightChoice
from masic.passes.base import PassOptions
from masic.passes.schedule import bytes_read
from masic.planning.minimum_budget import folded, minimum_budget
from masic.units import format_bytes


@dataclass(frozen=True)
class SweepRow:
    """One budget's plan (`budget` None: unconstrained), or its refusal (`arena` None)."""

    budget: int | None
    arena: int | None = None
    block: int = 0
    streamed: int = 0  # weights streamed
    streamed_bytes: int = 0
    bytes_read: int = 0  # per inference
    latency_s: float = 0.0  # planned, by the target's cost model
    planning_s: float = 0.0  # the whole pass pipeline (the fastest of the repeats)
    passes: tuple[tuple[str, float], ...] = ()  # that planning's seconds per pass


def plan_row(graph: Graph, budget: int | None, options: PassOptions, repeats: int = 1) -> tuple[Graph, SweepRow]:
    """The graph (as imported) planned at a budget with `options`' alignment and machine, and its row; the
    planning time is the fastest of `repeats` runs."""
    fastest, passes, planned = float("inf"), (), graph
    for _ in range(repeats):
        started = time.perf_counter()
        result = plan(graph, replace(options, budget=budget))
        seconds = time.perf_counter() - started
        planned = result.graph
        if seconds < fastest:
            fastest, passes = seconds, result.timings
    schedule = planned.schedule
    row = SweepRow(
        budget,
        planned.plan.arena_bytes,
        schedule.block,
        len(schedule.streamed),
        sum(planned.param(name).type.nbytes for name in schedule.streamed),
        bytes_read(planned, schedule),
        planned_latency(planned, schedule, options.machine),
        fastest,
        passes,
    )
    return planned, row


def sweep_budgets(low: int, high: int, minimum: int) -> list[int]:
    """LO, the powers of two strictly between LO and HI, HI, and the minimum when it lies in [LO, HI]."""
    budgets = {low, high}
    power = 1 << max(low, 1).bit_length()
    while power < high:
        budgets.add(power)
        power <<= 1
    if low <= minimum <= high:
        budgets.add(minimum)
    return sorted(budgets)


@dataclass(frozen=True)
class Sweep:
    rows: tuple[SweepRow, ...]
    minimum: int  # the smallest budget that compiles
    weight_bytes: int


def sweep(graph: Graph, low: int, high: int, options: PassOptions) -> Sweep:
    """Plans the graph (as imported) at every budget of `sweep_budgets`."""
    prepared = folded(graph, options)
    minimum = minimum_budget(prepared, options.alignment)
    return sweep_at(graph, sweep_budgets(low, high, minimum), options, prepared, minimum)


def sweep_at(graph: Graph, budgets: Sequence[int], options: PassOptions, prepared: Graph, minimum: int) -> Sweep:
    """Plans the graph at each budget; `prepared` is `folded(graph, options)` and `minimum` its minimum budget."""
    # At or above the minimum every budget compiles.
    rows = [SweepRow(b) if b < minimum else plan_row(graph, b, options)[1] for b in budgets]
    return Sweep(tuple(rows), minimum, sum(p.type.nbytes for p in prepared.params))


def compare_formats(graph: Graph, low: int, high: int, options: PassOptions) -> dict[str, Sweep]:
    """The sweep of each weight format (`FORMATS`, every layer's weight stored so), all at the same budgets: those
    of `sweep_budgets` with every format's minimum that falls in [LO, HI]."""
    chosen = {name: replace(options, weights=WeightChoice(name)) for name in FORMATS}
    prepared = {name: folded(graph, chosen[name]) for name in FORMATS}
    minima = {name: minimum_budget(prepared[name], options.alignment) for name in FORMATS}
    budgets = sorted(set().union(*(sweep_budgets(low, high, minimum) for minimum in minima.values())))
    return {name: sweep_at(graph, budgets, chosen[name], prepared[name], minima[name]) for name in FORMATS}


def formats_table(sweeps: Mapping[str, Sweep]) -> str:
    """`compare_formats` side by side: per budget, each format's planned latency and bytes read per inference (or
    "refused"); then each format's minimum budget and weights, and those as a share of the first format's."""
    width = 22
    first = next(iter(sweeps.values()))
    lines = [f"{'budget':>10} " + " ".join(f"{name:>{width}}" for name in sweeps)]
    for i, budget in enumerate(row.budget for row in first.rows):
        cells = []
        for result in sweeps.values():
            row = result.rows[i]
            text = "refused" if row.arena is None else f"{row.latency_s * 1e3:.2f} ms {format_bytes(row.bytes_read)}"
            cells.append(f"{text:>{width}}")
        lines.append(f"{format_bytes(budget):>10} " + " ".join(cells))
    for label, figure in (("minimum", lambda s: s.minimum), ("weights", lambda s: s.weight_bytes)):
        cells = [f"{format_bytes(figure(s))} ({figure(s) / max(figure(first), 1):.2f}x)" for s in sweeps.values()]
        lines.append(f"{label:>10} " + " ".join(f"{cell:>{width}}" for cell in cells))
    return "\n".join(lines)


def sweep_report(graph: Graph, low: int, high: int, options: PassOptions, title: str) -> tuple[Sweep, str]:
    """What `--budget-sweep` prints: the sweep of the chosen weights (`options.weights`) as a table, then every
    format's side by side (`compare_formats`); and that sweep."""
    sweeps = compare_formats(graph, low, high, options)
    chosen = options.weights
    result = sweep(graph, low, high, options) if chosen.layers else sweeps[chosen.default]
    text = (
        f"{title}: weights {format_bytes(result.weight_bytes)}, minimum budget {format_bytes(result.minimum)}\n"
        f"{sweep_table(result)}\n\n"
        "weight formats side by side: planned latency and bytes read per inference; minimum budget; weights\n"
        f"{formats_table(sweeps)}"
    )
    return result, text


def sweep_table(result: Sweep) -> str:
    """The sweep as a fixed-width table."""
    header = (
        f"{'budget':>10} {'arena':>10} {'block':>5} {'streamed':>18} {'read/inference':>15} {'x weights':>9} "
        f"{'latency ms':>10} {'plan ms':>8}"
    )
    lines = [header]
    for row in result.rows:
        if row.arena is None:
            lines.append(f"{format_bytes(row.budget):>10} refused: below the minimum, {format_bytes(result.minimum)}")
            continue
        streamed = f"{row.streamed} ({format_bytes(row.streamed_bytes)})"
        lines.append(
            f"{format_bytes(row.budget):>10} {format_bytes(row.arena):>10} {row.block:>5} {streamed:>18} "
            f"{format_bytes(row.bytes_read):>15} {row.bytes_read / max(result.weight_bytes, 1):>9.2f} "
            f"{row.latency_s * 1e3:>10.2f} {row.planning_s * 1e3:>8.0f}"
        )
    return "\n".join(lines)


def draw_sweep(result: Sweep, path: Path, title: str) -> None:
    """Planned latency and bytes read per inference against the budget (log scale), the minimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    planned = [r for r in result.rows if r.arena is not None]
    weight_bytes, minimum = result.weight_bytes, result.minimum
    mib = [r.budget / 2**20 for r in planned]
    fig, latency_axis = plt.subplots(figsize=(9, 5), dpi=110)
    latency_axis.plot(mib, [r.latency_s * 1e3 for r in planned], "o-", color="#4c72b0", label="planned latency")
    latency_axis.set_xscale("log", base=2)
    latency_axis.set_xlabel("budget (MiB)")
    latency_axis.set_ylabel("planned latency per inference (ms)", color="#4c72b0")
    read_axis = latency_axis.twinx()
    read_axis.plot(mib, [r.bytes_read / 2**20 for r in planned], "s--", color="#dd8452", label="bytes read")
    read_axis.axhline(weight_bytes / 2**20, color="#dd8452", lw=0.8, ls=":", label="weights' size")
    read_axis.set_ylabel("read from weights.bin per inference (MiB)", color="#dd8452")
    latency_axis.axvline(minimum / 2**20, color="red", lw=1, ls="--", label=f"minimum {format_bytes(minimum)}")
    handles = latency_axis.get_legend_handles_labels()[0] + read_axis.get_legend_handles_labels()[0]
    latency_axis.legend(handles=handles, loc="upper right", fontsize=8)
    latency_axis.set_ylim(bottom=0)
    read_axis.set_ylim(bottom=0)
    latency_axis.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
