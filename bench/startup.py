"""Start-up of a compiled artifact: what it costs before the first kernel runs (issue 16, item 5).

Each piece of weights.bin carries its own CRC-32C, checked right after the loader reads it (runtime/weights.c,
stream.c), so start-up reads the resident weights once and nothing else. Two figures, one run each:

1. Instructions, aarch64. Norse vgg11 (`tests.zoo_models:vgg11`), 3x32x32, T = 4, no budget (every weight
   resident: 114 MB), compiled with `masic compile --target aarch64` and run under qemu-aarch64 with the armcount
   plugin (../shared/tools/armcount: instructions executed, exact and repeatable) on one thread, --no-exit, for 4
   and for 8 timesteps: one inference = count(8) - count(4), start-up = count(4) - one inference. Also counted:
   `model --check` (every piece read and checked, as `masic deploy` runs it on the device).
2. Bytes read at start, host. Norse vgg16 (`tests.zoo_models:vgg16`), 3x224x224 (537 MB of weights), T = 4, under
   --budget 64MB, target x86_64, run once under `strace -f`: the bytes the program reads from weights.bin (pread64
   on its descriptor) before it starts its first thread (the thread pool and the loading thread start only after
   the resident weights are in place), against the loader's own count (`start_bytes_read`) and the file's size.

    python bench/startup.py [--workdir build/startup] [--armcount ../shared/tools/armcount/armcount.c]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARMCOUNT = ROOT.parent / "shared" / "tools" / "armcount" / "armcount.c"
START_UP_LIMIT = 0.25  # the bound: start-up at most this share of one inference's instructions
MB = 10**6


def compile_artifact(out: Path, *flags: str) -> Path:
    """`masic compile` into `out`, unless a previous run of this benchmark left it there."""
    if not (out / "manifest.json").exists():
        command = [sys.executable, "-m", "masic.cli", "compile", *flags, "-o", str(out)]
        subprocess.run(command, check=True, cwd=ROOT)
    return out


def uniform_input(path: Path, shape: tuple[int, ...]) -> Path:
    """One sample, uniform in [0, 20) (the zoo's VGG scale), presented at every step."""
    np.save(path, np.random.default_rng(0).uniform(0, 20, shape).astype(np.float32))
    return path


def count_instructions(plugin: Path, out: Path, counts: Path, *args: str) -> int:
    """Instructions qemu-aarch64 executes running out/model with `args` on one thread."""
    command = ["qemu-aarch64", "-plugin", str(plugin), "-d", "plugin", "-D", str(counts), str(out / "model"), *args]
    subprocess.run(command, check=True, capture_output=True)
    return int(json.loads(counts.read_text())["insns"])


def instructions(workdir: Path, armcount: Path) -> list[tuple[str, str]]:
    plugin = workdir / "armcount.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(plugin), str(armcount)], check=True)
    out = compile_artifact(
        workdir / "vgg11-aarch64",
        "tests.zoo_models:vgg11",
        *("--target", "aarch64", "--input-shape", "3,32,32", "--timesteps", "4"),
    )
    x = uniform_input(workdir / "x32.npy", (3, 32, 32))
    run = ("--input", str(x), "--threads", "1", "--no-exit", "--timesteps")
    four = count_instructions(plugin, out, workdir / "counts4.json", *run, "4")
    eight = count_instructions(plugin, out, workdir / "counts8.json", *run, "8")
    check = count_instructions(plugin, out, workdir / "counts-check.json", "--check")
    inference, start_up = eight - four, 2 * four - eight
    weights = json.loads((out / "manifest.json").read_text())["weights"]["bytes"]
    verdict = "ok" if start_up <= START_UP_LIMIT * inference else "OVER"
    return [
        ("vgg11 3x32x32 T=4, aarch64: weights.bin", f"{weights / MB:.1f} MB, all resident"),
        ("  instructions, run of 4 steps", f"{four:,}"),
        ("  instructions, run of 8 steps", f"{eight:,}"),
        ("  one inference (4 steps) = run8 - run4", f"{inference:,}"),
        ("  start-up = run4 - one inference", f"{start_up:,}"),
        ("  start-up / one inference", f"{start_up / inference:.3f}x ({verdict} <= {START_UP_LIMIT}x; was 2.0x)"),
        ("  model --check (every piece read and checked)", f"{check:,} ({check / inference:.3f}x one inference)"),
    ]


def startup_reads(workdir: Path) -> list[tuple[str, str]]:
    out = compile_artifact(
        workdir / "vgg16-224-64MB",
        "tests.zoo_models:vgg16",
        *("--target", "x86_64", "--input-shape", "3,224,224", "--timesteps", "4", "--budget", "64MB"),
    )
    x = uniform_input(workdir / "x224.npy", (3, 224, 224))
    trace = workdir / "strace.txt"
    command = ["strace", "-f", "-o", str(trace), "-e", "trace=openat,pread64,clone,clone3"]
    done = subprocess.run(
        [*command, str(out / "model"), "--input", str(x), "--no-exit"], check=True, capture_output=True, text=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    weights_fd, read = None, 0
    for line in trace.read_text().splitlines():
        if opened := re.search(r'openat\(.*weights\.bin".*\) = (\d+)', line):
            weights_fd = opened[1]
        elif re.search(r"\bclone3?\(", line):
            break  # the first thread: the resident weights are in place
        elif weights_fd and (pread := re.search(rf"pread64\({weights_fd}, .*\) = (\d+)", line)):
            read += int(pread[1])
    manifest = json.loads((out / "manifest.json").read_text())
    resident = report["start_bytes_read"]
    per_inference = report["weight_bytes_read"] - resident
    verdict = "ok" if read <= resident else "OVER"
    return [
        ("vgg16 3x224x224 T=4 --budget 64MB, x86_64: weights.bin", f"{manifest['weights']['bytes'] / MB:.1f} MB"),
        ("  arena", f"{manifest['arena_bytes'] / MB:.1f} MB"),
        ("  read from weights.bin before the first thread (strace)", f"{read / MB:.1f} MB"),
        ("  resident weights (the loader's start_bytes_read)", f"{resident / MB:.1f} MB ({verdict}: read <= it)"),
        ("  read per inference (weight_bytes_read - resident)", f"{per_inference / MB:.1f} MB"),
        ("  before this change (issue 16): read at start", "537 MB (whole file, for its CRC-32)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "startup")
    parser.add_argument("--armcount", type=Path, default=DEFAULT_ARMCOUNT, help="armcount.c, the qemu plugin")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = instructions(args.workdir, args.armcount) + startup_reads(args.workdir)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
