"""What every part of the speed benchmark shares: where things are, the targets it checks against, how it times a
call, and how it starts a PyTorch worker. Light on purpose: the PyTorch workers import it, and only numpy, torch and
norse besides, so that their times and RSS are PyTorch's alone."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "masic" / "codegen" / "runtime"
TARGET = "x86_64"
RSS_TARGET = 20.0  # the issue: peak RSS of the compiled program at least 20x below Norse's
KERNEL_TARGET = 1.0  # the issue: masic / torch <= 1.0 for every kernel type
# value of a per-neuron parameter in the kernel benchmark (the timing does not depend on it; these keep states finite)
NEURON_DEFAULTS = {"dt_tau_mem": 0.1, "neg_dt_tau_syn": -0.2, "v_leak": 0.0, "v_th": 1.0, "v_reset": 0.0}
SPIKE_RATE = 0.3  # spikes in the kernel benchmark's inputs (part 3 measures each model's own rates: 0.14-0.49)


def measure(run: Callable[[int], float], seconds: float, max_batches: int = 1000) -> dict:
    """`run(iters)` makes `iters` back-to-back calls and returns the seconds per call. Warms up, then times batches
    of about 0.2 ms (or one call) for about `seconds`; returns the best and median batch, in ms per call. Short
    batches, many of them: on a loaded machine a waiting thread pool loses whole scheduler slices, and the best
    batch is the one that lost none."""
    per_call = run(1)
    per_call = min(per_call, run(max(1, int(0.002 / max(per_call, 1e-9)))))
    iters = max(1, int(0.0002 / max(per_call, 1e-9)))
    batches = int(min(max_batches, max(5, seconds / (per_call * iters))))
    times = [run(iters) for _ in range(batches)]
    return {"best_ms": 1e3 * min(times), "median_ms": 1e3 * statistics.median(times), "calls": iters * batches}


def python_runner(fn: Callable[[], object]) -> Callable[[int], float]:
    def run(iters: int) -> float:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - start) / iters

    return run


def run_worker(kind: str, request: Path) -> None:
    """Runs a PyTorch worker (`python -m bench.speed --worker KIND REQUEST`) in a fresh interpreter (a second thread
    pool in this process would distort both sides)."""
    command = [sys.executable, "-m", "bench.speed", "--worker", kind, str(request)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{result.stderr[-3000:]}")


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))
