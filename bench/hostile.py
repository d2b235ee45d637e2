"""Hostile model files against `masic compile`: the corpus of tests/hostile_models.py, each file compiled in its own
process (as a user would run it), with its outcome counted per category.

A case passes when masic refuses it with exit 2 and one line on stderr naming the file, and its payload did not run
(the marker file every payload creates is absent). The table counts cases, refusals in one line, payloads run,
other outcomes (an accepted file, a traceback, another exit code) and the slowest case.

    python bench/hostile.py [--workdir build/hostile]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hostile_models import Case, build_all


def outcome(case: Case, marker: Path) -> tuple[str, float]:
    """'refused', 'ran' (the payload ran) or what else happened; and the seconds the compile took."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "masic.cli", "compile", str(case.path), "--emit", "ir", *case.args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if marker.exists():
        marker.unlink()
        return "ran", seconds
    errors = [line for line in result.stderr.splitlines() if not line.startswith("masic: importing")]
    one_line = len(errors) == 1 and errors[0].startswith("masic: error: ") and str(case.path) in errors[0]
    if result.returncode == 2 and one_line:
        return "refused", seconds
    return f"exit {result.returncode}, {len(errors)} stderr lines", seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/hostile"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    marker = args.workdir / "payload-ran"
    cases = build_all(args.workdir, marker)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    slowest: dict[str, float] = defaultdict(float)
    for case in cases:
        result, seconds = outcome(case, marker)
        counts[case.category][result if result in ("refused", "ran") else "other"] += 1
        slowest[case.category] = max(slowest[case.category], seconds)
        if result != "refused":
            print(f"  {case.category}/{case.name}: {result}", file=sys.stderr)
    header = (
        f"{'category':10} {'cases':>5} {'refused in one line':>20} {'payload ran':>12} {'other':>6} {'slowest s':>10}"
    )
    print(header)
    for category, row in counts.items():
        total = sum(row.values())
        refused, ran, other = row["refused"], row["ran"], row["other"]
        print(f"{category:10} {total:5d} {refused:19d} {ran:11d} {other:5d} {slowest[category]:9.1f}")
    failed = sum(row["ran"] + row["other"] for row in counts.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
