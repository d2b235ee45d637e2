"""How close the loading thread comes to the device's read bandwidth (issue 16, item 6).

The bound: no plan leaves the inference loop more than 15% above max(the unconstrained plan's loop time, streamed
bytes / measured read bandwidth). For Norse vgg16 (`tests.zoo_models:vgg16`) at 3x32x32 (T = 4) and 3x224x224
(T = 2, to keep the 224 runs to seconds: one inference streams some 0.5 GB per timestep block), target x86_64,
each size is compiled without a budget and under --budget 64MB and 32MB (`masic compile`, into WORKDIR, kept for
the next run). Each artifact runs a batch of SAMPLES samples (one process, --no-exit, every core, --profile) RUNS
times; its loop time is the least over the runs of the report's `wall_s_per_sample` (the inference loop alone,
start-up excluded; the least, since other work on the machine only ever adds to it), its streamed bytes the
report's `streamed_bytes_per_sample`, and its achieved read figure the profile's (the loading thread's pread and
CRC-32C, MB/s, median over the runs), which also gives the loading thread's busy time per inference (`ldr ms`:
CPU time it takes from the kernels when every core computes).

The read bandwidth in the bound is the device's, measured apart from the model: a plain sequential pread of
weights.bin, in pieces of the plan's median streamed load, from the page cache (the file is read once to warm it,
then the best of three passes). The table shows the loop time, the unconstrained plan's, the streamed MB, both
read figures, the loading thread's busy time, the bound and the ratio loop / bound (the issue asks for at most
1.15).

    python bench/overlap.py [--workdir build/overlap] [--samples 8] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.machine import cpu_model  # noqa: E402

SIZES = (("3,32,32", "4"), ("3,224,224", "2"))
BUDGETS = (None, "64MB", "32MB")
LIMIT = 1.15  # the bound on loop / max(unconstrained loop, streamed / bandwidth)
MB = 10**6


def compiled(workdir: Path, shape: str, timesteps: str, budget: str | None) -> Path:
    out = workdir / f"vgg16-{shape.replace(',', 'x')}-T{timesteps}-{budget or 'none'}"
    if not (out / "manifest.json").exists():
        flags = ["--target", "x86_64", "--input-shape", shape, "--timesteps", timesteps, "-o", str(out)]
        flags += ["--budget", budget] if budget else []
        subprocess.run([sys.executable, "-m", "masic.cli", "compile", "tests.zoo_models:vgg16", *flags], check=True)
    return out


def batch(workdir: Path, shape: str, samples: int) -> tuple[Path, Path]:
    """SAMPLES samples, uniform in [0, 20) (the zoo's VGG scale), and labels for them (any: accuracy is not read)."""
    stem = workdir / f"{shape.replace(',', 'x')}-{samples}"
    dims = tuple(int(d) for d in shape.split(","))
    np.save(f"{stem}-x.npy", np.random.default_rng(0).uniform(0, 20, (samples, *dims)).astype(np.float32))
    np.save(f"{stem}-y.npy", np.zeros(samples, np.int64))
    return Path(f"{stem}-x.npy"), Path(f"{stem}-y.npy")


def run(out: Path, x: Path, y: Path, timesteps: str) -> tuple[float, float, dict]:
    """One run of the batch: loop seconds per sample, streamed bytes per sample, the profile."""
    profile = out / "overlap-profile.json"
    command = [str(out / "model"), "--input", str(x), "--labels", str(y), "--timesteps", timesteps, "--no-exit"]
    done = subprocess.run(
        [*command, "--profile", str(profile)],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["wall_s_per_sample"], report["streamed_bytes_per_sample"], json.loads(profile.read_text())


def read_bandwidth(path: Path, piece: int) -> float:
    """Bytes per second of a plain sequential pread of `path` in `piece`-byte reads, warm page cache, best of 3."""
    buffer = bytearray(piece)
    view = memoryview(buffer)
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        best = float("inf")
        for _ in range(4):  # the first pass warms the page cache
            start = time.perf_counter()
            offset = 0
            while offset < size:
                offset += os.preadv(fd, [view], offset) or size
            best = min(best, time.perf_counter() - start)
    finally:
        os.close(fd)
    return size / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "overlap")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; {args.samples} samples per run, least of {args.runs}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'case':<20} {'budget':>6} {'loop ms':>9} {'free ms':>9} {'strm MB':>8} {'ach MB/s':>9} "
        f"{'dev MB/s':>9} {'read ms':>8} {'ldr ms':>7} {'bound ms':>9} {'loop/bnd':>8}"
    )
    rows = []
    for shape, timesteps in SIZES:
        x, y = batch(args.workdir, shape, args.samples)
        unconstrained = None
        for budget in BUDGETS:
            out = compiled(args.workdir, shape, timesteps, budget)
            runs = [run(out, x, y, timesteps) for _ in range(args.runs)]
            loop = min(r[0] for r in runs)
            streamed = runs[0][1]
            achieved = statistics.median(r[2]["read"]["mb_per_s"] for r in runs)
            unconstrained = unconstrained if budget else loop
            pieces = [load["bytes"] for load in runs[0][2]["loads"] if load["bytes"]]
            device = read_bandwidth(out / "weights.bin", int(statistics.median(pieces)) if pieces else 1 << 22)
            read_s = streamed / device
            busy_s = streamed / (achieved * MB) if achieved else 0.0
            bound = max(unconstrained, read_s)
            verdict = "" if loop <= LIMIT * bound else "  OVER"
            rows.append(
                f"{'vgg16 ' + shape.replace(',', 'x') + ' T=' + timesteps:<20} {budget or 'none':>6} "
                f"{1e3 * loop:9.2f} {1e3 * unconstrained:9.2f} {streamed / MB:8.1f} {achieved:9.0f} "
                f"{device / MB:9.0f} {1e3 * read_s:8.2f} {1e3 * busy_s:7.2f} {1e3 * bound:9.2f} "
                f"{loop / bound:8.2f}{verdict}"
            )
    print(header)
    print("\n".join(rows))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min; other work on the machine slows every figure)")


if __name__ == "__main__":
    main()
