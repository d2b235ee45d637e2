"""Memory planner against a greedy baseline and omnimalloc, on public allocation benchmarks, in one run.

For MiniMalloc's 11 challenging problems (capacity 1048576) and for idealloc's G_1, S_1, Y_1, resnet50,
pangu_2.6B and TVM's deep_speech (no capacity: minimise the height), prints one table:
- masic: `masic.memplan.solve` (with the capacity where there is one) and its height, time and method;
- greedy: size-descending first-fit (`greedy_first_fit`), the classic baseline;
- omnimalloc: the lowest height among its allocators OMNIMALLOC_ALLOCATORS, each run in its own process with the
  time limit (passed as `timeout` to those that take one; a process still running at the limit + a grace period is
  killed and counts as no result), and which allocator that was.
"x ref" is height / reference, the reference being the capacity for the challenging problems and the lower bound
(peak live bytes) otherwise. Every placement, omnimalloc's included, is validated with `masic.memplan.check`.
The table also replaces the "## Memory planner" section of docs/benchmarks.md (unless --no-doc).

    python bench/memplan.py [--timeout 20] [--omnimalloc-limit 20] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masic.memplan import Problem, check, greedy_first_fit, read_csv, solve  # noqa: E402

DATA = ROOT / ".." / "shared" / "benchmarks" / "memplan"
DOC = ROOT / "docs" / "benchmarks.md"
CAPACITY = 1048576
PROBLEMS: tuple[tuple[str, Path, int | None], ...] = (
    *((name, DATA / "minimalloc" / f"{name}.{CAPACITY}.csv", CAPACITY) for name in "ABCDEFGHIJK"),
    *((name, DATA / "idealloc" / f"{name}.csv", None) for name in ("G_1", "S_1", "Y_1", "resnet50", "pangu_2.6B")),
    ("deep_speech", DATA / "deep_speech.csv", None),
)
# omnimalloc's own default (omni), its flagship branch and bound (supermalloc), TelaMalloc, its greedy portfolio
# and best-fit. Not run: minimalloc (needs google's minimalloc package, not on PyPI), genetic (needs deap), and the
# local searches (hill_climb, simulated_annealing, tabu_search) and random/naive, never better than these here.
OMNIMALLOC_ALLOCATORS = ("omni", "supermalloc", "telamalloc", "greedy_by_all", "best_fit")
GRACE = 40.0  # seconds past the limit before a worker is killed (building omnimalloc's objects takes a while)


@dataclass(frozen=True)
class Result:
    height: int
    seconds: float
    label: str  # masic: method; omnimalloc: allocator


def omnimalloc_worker(allocator: str, path: Path, limit: float) -> None:
    """Runs one omnimalloc allocator on one problem; prints {"height", "seconds"} as JSON (checked by masic)."""
    import inspect

    import omnimalloc as om
    from omnimalloc.allocators import BaseAllocator

    problem = read_csv(path)
    allocations = tuple(om.Allocation(id=b.id, size=b.size, start=b.lower, end=b.upper) for b in problem.buffers)
    cls = BaseAllocator.registry()[allocator]
    kwargs = {"timeout": limit} if "timeout" in inspect.signature(cls.__init__).parameters else {}
    started = time.perf_counter()
    placed = om.allocate(allocations, cls(**kwargs))
    seconds = time.perf_counter() - started
    height = check(problem, {a.id: a.offset for a in placed})
    print(json.dumps({"height": height, "seconds": seconds}))


def omnimalloc_best(path: Path, limit: float) -> Result | None:
    """The lowest height among OMNIMALLOC_ALLOCATORS (ties: the faster), or None if none finished."""
    best: Result | None = None
    for allocator in OMNIMALLOC_ALLOCATORS:
        command = [sys.executable, __file__, "--omnimalloc-worker", allocator, str(path), "--omnimalloc-limit"]
        try:
            run = subprocess.run(
                [*command, str(limit)], capture_output=True, text=True, timeout=limit + GRACE, check=False
            )
        except subprocess.TimeoutExpired:
            print(f"  omnimalloc {allocator} on {path.name}: killed after {limit + GRACE:.0f} s", file=sys.stderr)
            continue
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"  omnimalloc {allocator} on {path.name}: failed: {last}", file=sys.stderr)
            continue
        out = json.loads(run.stdout.strip().splitlines()[-1])
        result = Result(out["height"], out["seconds"], allocator)
        if best is None or (result.height, result.seconds) < (best.height, best.seconds):
            best = result
    return best


def masic_result(problem: Problem, capacity: int | None, timeout: float) -> Result:
    solution = solve(problem, capacity=capacity, timeout=timeout)
    return Result(solution.height, solution.seconds, solution.method)


def ratio(height: int, reference: int) -> str:
    return f"{height / reference:.4f}"


def table(timeout: float, limit: float) -> str:
    header = (
        f"{'problem':<12} {'buffers':>7} {'reference':>16} {'masic':>13} {'x ref':>7} {'s':>6}  {'method':<42}"
        f"{'greedy':>13} {'x ref':>7} {'omnimalloc':>13} {'x ref':>7} {'s':>6}  allocator"
    )
    print(header, flush=True)
    lines = [header]
    for name, path, capacity in PROBLEMS:
        problem = read_csv(path)
        bound = problem.lower_bound()
        reference = capacity or bound
        masic = masic_result(problem, capacity, timeout)
        greedy = greedy_first_fit(problem).height
        omni = omnimalloc_best(path, limit)
        ref = f"cap {capacity}" if capacity else f"LB {bound}"
        omni_cells = (
            f"{omni.height:>13} {ratio(omni.height, reference):>7} {omni.seconds:>6.2f}  {omni.label}"
            if omni
            else f"{'-':>13} {'-':>7} {'-':>6}  none finished"
        )
        line = (
            f"{name:<12} {len(problem):>7} {ref:>16} {masic.height:>13} {ratio(masic.height, reference):>7} "
            f"{masic.seconds:>6.2f}  {masic.label:<42}{greedy:>13} {ratio(greedy, reference):>7} {omni_cells}"
        )
        print(line, flush=True)
        lines.append(line)
    return "\n".join(lines)


def write_doc(text: str, timeout: float, limit: float) -> None:
    """Replaces the "## Memory planner" section of docs/benchmarks.md (up to the next "## "), or appends it."""
    about = (
        "Static memory allocation on MiniMalloc's 11 challenging problems at their capacity (1048576, reference = "
        "capacity) and on real traces without a capacity (idealloc G_1, S_1, Y_1, resnet50, pangu_2.6B; TVM's "
        "deep_speech; reference = lower bound, the peak live bytes). `x ref` = height / reference. masic: `solve()` "
        f"with a {timeout:g} s timeout (heuristics, then the C exact search); greedy: size-descending first-fit; "
        f"omnimalloc 1.0.0: the best of {', '.join(OMNIMALLOC_ALLOCATORS)}, each given {limit:g} s (its own "
        "timeout where it takes one), with its time; its allocators take no capacity (they minimise the height; "
        "its minimalloc allocator needs google's minimalloc package, which is not on PyPI), so on A..K nothing "
        "steers them to 1048576. All placements validated by `masic.memplan.check`. Same machine as above, one "
        "process at a time."
    )
    section = f"## Memory planner: `python bench/memplan.py`\n\n{textwrap.fill(about, 118)}\n\n```\n{text}\n```\n"
    doc = DOC.read_text()
    match = re.search(r"^## Memory planner.*?(?=^## |\Z)", doc, flags=re.S | re.M)
    if match:
        doc = doc[: match.start()] + section + ("\n" if match.end() < len(doc) else "") + doc[match.end() :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section
    DOC.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=20.0, help="masic's time limit per problem (20 s)")
    parser.add_argument("--omnimalloc-limit", type=float, default=20.0, help="per omnimalloc allocator (20 s)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--omnimalloc-worker", nargs=2, metavar=("ALLOCATOR", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.omnimalloc_worker:
        omnimalloc_worker(args.omnimalloc_worker[0], Path(args.omnimalloc_worker[1]), args.omnimalloc_limit)
        return 0
    text = table(args.timeout, args.omnimalloc_limit)
    if not args.no_doc:
        write_doc(text, args.timeout, args.omnimalloc_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
