"""How close the cost model's estimates come to what `masic profile` measures on this host (issue 16, items 2-3).

For each case (Norse ConvNet4 as the zoo builds it, 1x16x16, T = 8; Norse vgg16 at 3x32x32, T = 4, without a
budget and under 64MB), compiles the artifact for x86_64 (`masic compile`, into WORKDIR, kept for the next run),
profiles it with `masic profile OUT --runs N` (each figure the median of N runs of one inference, --no-exit, every
core) and prints one table: the planned compute time of one inference (the sum of the manifest's
`planned.nodes`, the cost model's time per kernel call site with the target's estimated figures), the kernels'
measured time, their ratio, the median over the layers of measured / planned, the streamed bytes with the time
planned to read them (target figure) and the measured read time and bandwidth, the time the kernels waited for
loads, and the whole run's wall time. Each case is planned twice: with the target's estimated figures, and again
with `masic compile --profile` of the first artifact's profile (compute figures scaled by the median measured /
planned ratio, the measured read bandwidth), then profiled the same way.

    python bench/profile.py [--workdir build/profile] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = (
    ("convnet4", "tests.zoo_models:convnet4", "1,16,16", "8", None),
    ("vgg16 32", "tests.zoo_models:vgg16", "3,32,32", "4", None),
    ("vgg16 32", "tests.zoo_models:vgg16", "3,32,32", "4", "64MB"),
)


def compiled(
    workdir: Path, spec: str, shape: str, timesteps: str, budget: str | None, profile: Path | None = None
) -> Path:
    suffix = "-profiled" if profile else ""
    out = workdir / f"{spec.split(':')[1]}-{shape.replace(',', 'x')}-{budget or 'none'}{suffix}"
    if not (out / "manifest.json").exists():
        flags = ["--target", "x86_64", "--input-shape", shape, "--timesteps", timesteps, "-o", str(out)]
        flags += ["--profile", str(profile)] if profile else []
        subprocess.run(
            [sys.executable, "-m", "masic.cli", "compile", spec, *flags, *(["--budget", budget] * bool(budget))],
            check=True,
            cwd=ROOT,
        )
    return out


def row(name: str, budget: str | None, out: Path, runs: int) -> str:
    subprocess.run([sys.executable, "-m", "masic.cli", "profile", str(out), "--runs", str(runs)], check=True, cwd=ROOT)
    manifest = json.loads((out / "manifest.json").read_text())
    profile = json.loads((out / "profile.json").read_text())
    planned = {row["node"]: row["us"] for row in manifest["planned"]["nodes"]}
    measured: dict[str, float] = {}
    for site in profile["sites"]:
        measured[site["node"]] = measured.get(site["node"], 0.0) + site["total_us"]
    ratios = [measured[node] / planned[node] for node in measured if planned.get(node)]
    plan_ms, kernels_ms = sum(planned.values()) / 1e3, sum(measured.values()) / 1e3
    read = profile["read"]
    plan_read_ms = 1e3 * read["bytes"] / manifest["planned"]["read_bytes_per_second"]
    figures = "profile" if "profile" in manifest["planned"]["by"] else "target"
    return (
        f"{name:<10} {budget or 'none':>6} {figures:>8} {plan_ms:9.2f} {kernels_ms:9.2f} {kernels_ms / plan_ms:6.2f} "
        f"{statistics.median(ratios):7.2f} {read['bytes'] / 1e6:8.1f} {plan_read_ms:8.2f} {read['us'] / 1e3:8.2f} "
        f"{read['mb_per_s']:8.0f} {read['wait_us'] / 1e3:7.2f} {profile['run_us'] / 1e3:8.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "profile")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, spec, shape, t, budget in CASES:
        estimated = compiled(args.workdir, spec, shape, t, budget)
        rows.append(row(name, budget, estimated, args.runs))
        profiled = compiled(args.workdir, spec, shape, t, budget, estimated / "profile.json")
        rows.append(row(name, budget, profiled, args.runs))
    print(
        f"{'model':<10} {'budget':>6} {'figures':>8} {'plan ms':>9} {'kern ms':>9} {'x':>6} {'med x':>7} "
        f"{'read MB':>8} {'plan rd':>8} {'read ms':>8} {'MB/s':>8} {'wait ms':>7} {'run ms':>8}"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
