"""Builds the loader's fuzz targets with clang's libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer, runs
each for a stated time from its seed corpus (fuzz/corpus/<target>/), and prints one row per target: executions,
executions per second, corpus units at the end, crashes, sanitizer reports, timeouts. Any finding fails the run.

    python fuzz/driver.py                              # every target, 30 s each (CI: tests/fuzz/test_fuzz.py)
    python fuzz/driver.py --seconds 600                # the long run of docs/benchmarks.md
    python fuzz/driver.py --targets npy,weights --seconds 3600 --keep build/fuzz-corpus --jobs 2

The seed corpus is copied into a work folder before each run, so the committed one never changes; --keep DIR keeps
the grown corpora (fold interesting inputs back with `python fuzz/make_seeds.py` or by hand). A finding leaves its
input as WORKDIR/artifacts/<target>-crash-*, -leak-*, -timeout-* or -oom-*; rerun it with
`WORKDIR/bin/fuzz_<target> FILE`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from masic.codegen.sources import PARSER_SOURCES, RUNTIME_DIR  # noqa: E402

CLANG = "clang"
CFLAGS = (
    "-g",
    "-O1",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fsanitize=fuzzer,address,undefined",
    "-fno-sanitize-recover=all",
)
# target -> dictionary of tokens (in fuzz/), if any
TARGETS = {
    "npy": "npy.dict",
    "input": "npy.dict",
    "labels": "npy.dict",
    "weights": None,
    "exit_section": None,
    "args": None,
}
CI_SECONDS = 30  # per target: 3 minutes for the six
UNIT_TIMEOUT_S = 10  # an input taking longer is a hang
# libFuzzer's RSS limit reads getrusage's peak, which Linux carries over exec from the parent: under a pytest process
# that has grown past the limit every run would stop at once as "out of memory". So the limit is on allocations
# (any single malloc above it is a finding), not on the inherited peak.
MALLOC_LIMIT_MB = 2048
FINDINGS = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|deadly signal"
)


class FuzzError(RuntimeError):
    """A target could not be built or run."""


@dataclass(frozen=True)
class FuzzResult:
    target: str
    seconds: float
    executions: int
    exec_per_s: int
    corpus_units: int
    new_units: int
    peak_rss_mb: int
    crashes: int  # inputs that crashed or failed a check (crash-*, oom-*)
    sanitizer_reports: int  # ASan, UBSan and LeakSanitizer reports in the log
    timeouts: int  # inputs slower than UNIT_TIMEOUT_S (timeout-*)
    returncode: int
    first_report: str  # the first sanitizer or libFuzzer error line, if any
    log_tail: str

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not (self.crashes or self.sanitizer_reports or self.timeouts)


def clang_missing() -> str | None:
    """Why the fuzzers cannot be built here, or None."""
    if shutil.which(CLANG) is None:
        return f"{CLANG} not found: run scripts/setup.sh (it installs clang and libclang-rt-dev from Debian)"
    return None


def build(target: str, bin_dir: Path, source: Path | None = None) -> Path:
    """fuzz_<target>.c (or `source`) with the loader's parsers, instrumented; returns the executable."""
    if problem := clang_missing():
        raise FuzzError(problem)
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = bin_dir / f"fuzz_{target}"
    sources = [source or HERE / f"fuzz_{target}.c", *(RUNTIME_DIR / name for name in PARSER_SOURCES)]
    command = [CLANG, *CFLAGS, f"-I{RUNTIME_DIR}", f"-I{HERE}", *map(str, sources), "-lpthread", "-lm", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FuzzError(f"building fuzz_{target} failed:\n{done.stderr}")
    return out


def _stat(log: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s*(\d+)", log)
    return int(found[-1]) if found else 0


def run(target: str, binary: Path, seconds: float, workdir: Path, seeds: Path | None = None) -> FuzzResult:
    """Fuzzes `target` for `seconds` from a copy of its seed corpus (or of `seeds`) in workdir."""
    corpus = workdir / "corpus" / target
    shutil.rmtree(corpus, ignore_errors=True)
    shutil.copytree(seeds or HERE / "corpus" / target, corpus)
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary),
        str(corpus),
        f"-max_total_time={max(1, round(seconds))}",
        f"-timeout={UNIT_TIMEOUT_S}",
        "-rss_limit_mb=0",
        f"-malloc_limit_mb={MALLOC_LIMIT_MB}",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/{target}-",
    ]
    if TARGETS.get(target):
        command.append(f"-dict={HERE / TARGETS[target]}")
    env = {**os.environ, "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1", "ASAN_OPTIONS": "detect_leaks=1"}
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", env=env, timeout=seconds + 600)
    log = done.stdout + done.stderr
    found = {kind: len(list(artifacts.glob(f"{target}-{kind}-*"))) for kind in ("crash", "leak", "timeout", "oom")}
    executions = _stat(log, "number_of_executed_units")
    if not executions:  # stopped by a finding before the final statistics: the last status line
        progress = re.findall(r"^#(\d+)\s", log, re.MULTILINE)
        executions = int(progress[-1]) if progress else 0
    elapsed = re.findall(r"Done \d+ runs in (\d+) second", log)
    return FuzzResult(
        target=target,
        seconds=float(elapsed[-1]) if elapsed else seconds,
        executions=executions,
        exec_per_s=_stat(log, "average_exec_per_sec"),
        corpus_units=len(list(corpus.iterdir())),
        new_units=_stat(log, "new_units_added"),
        peak_rss_mb=_stat(log, "peak_rss_mb"),
        crashes=found["crash"] + found["oom"],
        sanitizer_reports=len(FINDINGS.findall(log)) + found["leak"],
        timeouts=found["timeout"],
        returncode=done.returncode,
        first_report=next((line for line in log.splitlines() if FINDINGS.search(line)), ""),
        log_tail="\n".join(log.strip().splitlines()[-30:]),
    )


def fuzz(targets: list[str], seconds: float, workdir: Path, jobs: int = 1) -> list[FuzzResult]:
    """Builds and runs each target (jobs at a time); results in the order of `targets`."""
    binaries = {target: build(target, workdir / "bin") for target in targets}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda t: run(t, binaries[t], seconds, workdir), targets))


def table(results: list[FuzzResult]) -> str:
    """A markdown table of the results, with a total row."""
    rows = [
        "| target | seconds | executions | exec/s | corpus (new) | crashes | sanitizer reports | timeouts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.target} | {r.seconds:.0f} | {r.executions:,} | {r.exec_per_s:,} | {r.corpus_units} ({r.new_units}) "
            f"| {r.crashes} | {r.sanitizer_reports} | {r.timeouts} |"
        )
    total = sum(r.executions for r in results)
    rows.append(
        f"| all | {sum(r.seconds for r in results):.0f} | {total:,} | | | {sum(r.crashes for r in results)} "
        f"| {sum(r.sanitizer_reports for r in results)} | {sum(r.timeouts for r in results)} |"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=CI_SECONDS, help="fuzzing time per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, from: " + ", ".join(TARGETS))
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument("--workdir", type=Path, help="build and corpus folder (default: a temporary one)")
    parser.add_argument("--keep", type=Path, help="copy the grown corpora here")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    with tempfile.TemporaryDirectory(prefix="masic-fuzz-") as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            results = fuzz(targets, args.seconds, workdir, args.jobs)
        except FuzzError as error:
            print(f"fuzz: error: {error}", file=sys.stderr)
            return 2
        if args.keep:
            shutil.copytree(workdir / "corpus", args.keep, dirs_exist_ok=True)
        print(table(results))
        for r in results:
            if not r.clean:
                print(f"\n{r.target}: status {r.returncode}, {r.first_report}; inputs in {workdir / 'artifacts'}")
                print(r.log_tail)
        return 0 if all(r.clean for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
