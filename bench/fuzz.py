"""The loader against hostile input: fuzzing figures, and a corpus of hostile inputs refused one by one.

1. Builds every fuzz target of fuzz/ (clang, libFuzzer, AddressSanitizer, UndefinedBehaviorSanitizer), runs each
   for --seconds from its committed seed corpus (one at a time unless --jobs), and prints one row per target:
   executions, executions per second, corpus units at the end (new ones), crashes, sanitizer reports, timeouts.
2. Builds the loader with the hand-written fake model of tests/runtime (host, with the sanitizers) and runs it on a
   corpus of hostile inputs, by category: .npy headers numpy refuses (generated and mutated by
   tests/runtime/npy_headers.py), .npy preambles, input arrays, labels, weights files, files where a regular file is
   expected and outputs that would overwrite an input, and command lines. Each must be refused with one line on
   stderr and exit status 2; the table counts the cases and those so refused.

    python bench/fuzz.py [--seconds 30] [--jobs 1] [--targets npy,weights,...] [--headers 300]

Exits with status 1 if any target found anything or any hostile input was not refused as it should be.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "fuzz"), str(ROOT / "tests" / "runtime")]

import driver  # noqa: E402  (fuzz/driver.py)
from fake_model import INPUT_SHAPE, build_artifact, weights_bin  # noqa: E402
from npy_headers import generated, mutated, numpy_verdict  # noqa: E402
from runtime_harness import HOST_SANITIZED, run_executable  # noqa: E402

from bench.machine import cpu_model  # noqa: E402


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    args: list[str | Path]


def machine() -> str:
    cpu = cpu_model()
    clang = subprocess.run([driver.CLANG, "--version"], capture_output=True, text=True, check=False).stdout
    return (
        f"{os.cpu_count()}-core {platform.machine()} ({cpu}), Linux {platform.release()}, "
        f"{clang.splitlines()[0] if clang else 'no clang'}; load average {os.getloadavg()[0]:.1f} at the start"
    )


def npy_bytes(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    raw = header.encode("latin-1")
    size = struct.pack("<H", len(raw)) if version[0] == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes(version) + size + raw + data


def hostile_cases(tmp: Path, executable: Path, headers: int) -> list[Case]:
    """Every case's files are written under tmp; `executable` sits beside its weights.bin in its own folder."""
    good_x = tmp / "x.npy"
    np.save(good_x, np.ones(INPUT_SHAPE, np.float32))
    batch_x, labels = tmp / "batch.npy", tmp / "labels.npy"
    np.save(batch_x, np.ones((4, *INPUT_SHAPE), np.float32))
    np.save(labels, np.zeros(4, np.int64))
    cases: list[Case] = []

    def file(name: str, data: bytes) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    # .npy headers numpy refuses, as inputs
    rng = np.random.default_rng(2024)
    refused = 0
    while refused < headers:
        data = generated(rng, (INPUT_SHAPE,))
        for _ in range(int(rng.integers(0, 3))):
            data = mutated(rng, data)
        if numpy_verdict(data).accepted:
            continue
        cases.append(Case("npy header", f"generated {refused}", ["--input", file(f"h{refused}.npy", data)]))
        refused += 1
    good = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", bytes(24))
    preambles = {
        "empty": b"",
        "not npy": b"0.1, 0.2\n",
        "magic only": b"\x93NUMPY",
        "version 1.9": good[:6] + b"\x01\x09" + good[8:],
        "version 0.0": good[:6] + b"\x00\x00" + good[8:],
        "version 4.0": good[:6] + b"\x04\x00" + good[8:],
        "length past the end": good[:8] + b"\xff\x00" + good[10:],
        "length above 10000": npy_bytes(" " * 10001, b"", (2, 0)),
        "npz": b"PK\x03\x04" + good[4:],
        "cut in the header": good[:30],
    }
    cases += [Case("npy preamble", n, ["--input", file(f"p{k}.npy", d)]) for k, (n, d) in enumerate(preambles.items())]

    def array(name: str, a: np.ndarray) -> Path:
        path = tmp / name
        np.save(path, a)
        return path

    def header(shape: str, descr: str = "<f4", data: bytes = bytes(24), fortran: str = "False") -> bytes:
        return npy_bytes(f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n", data)

    inputs = {
        "float64": array("f8.npy", np.ones(INPUT_SHAPE)),
        "big-endian": array("be.npy", np.ones(INPUT_SHAPE, ">f4")),
        "int32": array("i4.npy", np.ones(INPUT_SHAPE, np.int32)),
        "object": file("obj.npy", header("(2, 3)", "|O")),
        "structured": file(
            "rec.npy", npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}", bytes(24))
        ),
        "fortran order": file("fo.npy", header("(3, 2)", fortran="True")),
        "wrong shape": array("ws.npy", np.ones((3, 2), np.float32)),
        "empty sequence": array("es.npy", np.ones((0, *INPUT_SHAPE), np.float32)),
        "data cut": file("cut.npy", header("(2, 3)", data=bytes(23))),
        "data extra": file("extra.npy", header("(2, 3)", data=bytes(25))),
        "shape needs 2^46 bytes": file("big.npy", header("(1099511627776, 2, 3)")),
        "shape above 2^63 bytes": file("huge.npy", header("(4611686018427387904, 2, 3)")),
        "sequence above the limit": file("long.npy", header("(1000001, 2, 3)", data=bytes(24 * 1000))),
    }
    cases += [Case("input array", n, ["--input", p]) for n, p in inputs.items()]
    bad_labels = {
        "float32": array("l_f4.npy", np.zeros(4, np.float32)),
        "uint8": array("l_u1.npy", np.zeros(4, np.uint8)),
        "too few": array("l_3.npy", np.zeros(3, np.int64)),
        "2-d": array("l_2d.npy", np.zeros((4, 1), np.int64)),
        "class too large": array("l_big.npy", np.array([0, 1, 4, 0])),
        "negative": array("l_neg.npy", np.array([0, -1, 0, 0], np.int32)),
        "int64 min": array("l_min.npy", np.array([0, np.iinfo(np.int64).min, 0, 0])),
        "not npy": file("l_txt.npy", b"0\n1\n2\n3\n"),
        "cut": file("l_cut.npy", array("l_ok.npy", np.zeros(4, np.int64)).read_bytes()[:-1]),
    }
    cases += [Case("labels", n, ["--input", batch_x, "--labels", p]) for n, p in bad_labels.items()]
    w = weights_bin()
    flipped = bytearray(w)
    flipped[5] ^= 1
    weights = {
        "truncated": file("w_trunc.bin", w[:-1]),
        "one byte more": file("w_more.bin", w + b"\0"),
        "one bit flipped": file("w_flip.bin", bytes(flipped)),
        "empty": file("w_empty.bin", b""),
        "missing": tmp / "w_missing.bin",
        "a folder": tmp,
        "another build's": file("w_other.bin", bytes(len(w))),
    }
    cases += [Case("weights", n, ["--input", good_x, "--weights", p]) for n, p in weights.items()]
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    weights_path = executable.parent / "weights.bin"
    link = tmp / "link.npy"
    link.symlink_to(good_x)
    hard = tmp / "hard.npy"
    os.link(labels, hard)
    files = {
        "FIFO as --input": ["--input", fifo],
        "FIFO as --labels": ["--input", batch_x, "--labels", fifo],
        "FIFO as --weights": ["--input", good_x, "--weights", fifo],
        "/dev/zero as --input": ["--input", "/dev/zero"],
        "/dev/null as --labels": ["--input", batch_x, "--labels", "/dev/null"],
        "a folder as --input": ["--input", tmp],
        "--output = --input": ["--input", good_x, "--output", good_x],
        "--output = symlink to --input": ["--input", good_x, "--output", link],
        "--output = weights.bin": ["--input", good_x, "--output", weights_path],
        "--predictions = --labels": ["--input", batch_x, "--labels", labels, "--predictions", labels],
        "--predictions = hard link to --labels": ["--input", batch_x, "--labels", labels, "--predictions", hard],
        "--predictions = --output": [
            "--input",
            batch_x,
            "--labels",
            labels,
            "--output",
            tmp / "o.npy",
            "--predictions",
            tmp / "o.npy",
        ],
        "--output in a missing folder": ["--input", good_x, "--output", tmp / "no" / "o.npy"],
    }
    cases += [Case("files", n, a) for n, a in files.items()]
    arguments = [
        ["--min-timesteps", "4294967297"],
        ["--min-timesteps", "+4"],
        ["--min-timesteps", " 4"],
        ["--min-timesteps", "-1"],
        ["--timesteps", "0"],
        ["--timesteps", "1000001"],
        ["--timesteps", "1e3"],
        ["--timesteps", "0x10"],
        ["--timesteps", "99999999999999999999"],
        ["--timesteps", ""],
        ["--threads", "-1"],
        ["--threads", "4097"],
        ["--exit-confidence", "0"],
        ["--exit-confidence", "1.5"],
        ["--exit-confidence", "nan"],
        ["--exit-confidence", " 0.5"],
        ["--exit-margin", "inf"],
        ["--exit-margin", "-1"],
        ["--exit-stable", "0"],
        ["--exit-stable", "2147483648"],
        ["--exit-margin", "1", "--exit-stable", "2"],
        ["--no-exit=1"],
        ["--bogus"],
        ["extra.npy"],
        ["--predictions", "p.npy"],
        ["--timesteps"],
        ["--labels"],
        ["-x"],
    ]
    cases += [Case("arguments", " ".join(a), [*a, "--input", good_x]) for a in arguments]
    cases += [Case("arguments", "no --input", []), Case("arguments", "--input without value", ["--input"])]
    return cases


def refused_in_one_line(result) -> bool:
    return (
        result.returncode == 2 and len(result.error_lines) == 1 and result.error_lines[0].startswith("model: error: ")
    )


def hostile_table(headers: int) -> tuple[str, list[str]]:
    """Runs the hostile corpus; returns the table and the cases not refused as they should be."""
    with tempfile.TemporaryDirectory(prefix="masic-hostile-") as name:
        tmp = Path(name)
        executable = build_artifact(HOST_SANITIZED, tmp / "artifact")
        (tmp / "cases").mkdir()
        counts: dict[str, list[int]] = {}
        failures = []
        for case in hostile_cases(tmp / "cases", executable, headers):
            result = run_executable(HOST_SANITIZED, executable, case.args, timeout=60)
            ok = refused_in_one_line(result)
            counts.setdefault(case.category, [0, 0])
            counts[case.category][0] += 1
            counts[case.category][1] += ok
            if not ok:
                failures.append(f"{case.category} / {case.name}: status {result.returncode}, {result.stderr!r}")
    rows = ["| category | cases | refused in one line, exit 2 |", "|---|---:|---:|"]
    rows += [f"| {category} | {n} | {ok} |" for category, (n, ok) in counts.items()]
    rows.append(f"| all | {sum(n for n, _ in counts.values())} | {sum(ok for _, ok in counts.values())} |")
    return "\n".join(rows), failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=driver.CI_SECONDS, help="fuzzing time per target")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--targets", default=",".join(driver.TARGETS))
    parser.add_argument("--headers", type=int, default=300, help="generated .npy headers numpy refuses")
    parser.add_argument("--no-hostile", action="store_true", help="only the fuzzing table")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    targets = [t for t in args.targets.split(",") if t]
    with tempfile.TemporaryDirectory(prefix="masic-fuzz-") as workdir:
        results = driver.fuzz(targets, args.seconds, Path(workdir), args.jobs)
    print(f"\nfuzzing, {args.seconds:g} s per target, {args.jobs} at a time:\n")
    print(driver.table(results), flush=True)
    failures = [f"{r.target}: {r.first_report or r.returncode}" for r in results if not r.clean]
    if not args.no_hostile:
        text, bad = hostile_table(args.headers)
        print("\nhostile inputs, loader with the fake model (host, ASan + UBSan):\n")
        print(text)
        failures += bad
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    if shutil.which(driver.CLANG) is None:
        sys.exit(f"{driver.CLANG} not found: run scripts/setup.sh")
    sys.exit(main())
