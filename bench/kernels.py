"""Times masic's scheduled host kernels against PyTorch (batch 1, float32, 2 threads).

The kernels are built for the host, linked with runtime/parallel.c into a shared library and called through
ctypes (call overhead ~1 us, negligible at these sizes). PyTorch runs in its own subprocess: a second thread pool
in the same process distorts both timings.

    python bench/kernels.py [--threads 2] [--repeat 200]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from masic.codegen.build import build_object, host_target
from masic.codegen.kernels import Conv2dKernel, DenseKernel, Kernel

RUNTIME = Path(__file__).resolve().parents[1] / "masic" / "codegen" / "runtime"
KERNELS: list[Kernel] = [
    Conv2dKernel("bench_conv", (64, 32, 32), 64, (3, 3), padding=(1, 1)),
    DenseKernel("bench_dense", 4096, 1000),
]

# Runs in a fresh interpreter; prints {"conv": ms, "dense": ms}.
TORCH_SCRIPT = """
import json, sys, time, torch
threads, repeat = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
dense = torch.nn.Linear(4096, 1000).eval()
x_conv, x_dense = torch.randn(1, 64, 32, 32), torch.randn(1, 4096)
def best(fn):
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return 1e3 * min(times)
with torch.inference_mode():
    print(json.dumps({"conv": best(lambda: conv(x_conv)), "dense": best(lambda: dense(x_dense))}))
"""


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    """Best-of-``repeat`` wall time of ``fn`` in milliseconds, after a warm-up."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def masic_times(threads: int, repeat: int, work: Path) -> dict[str, float]:
    """Builds the kernels into a shared library and times each through ctypes."""
    build_object(KERNELS, host_target(), work / "kernels.o")
    lib_path = work / "libbench.so"
    sources = [str(RUNTIME / "parallel.c"), str(work / "kernels.o")]
    link = ["cc", "-O2", "-shared", "-fPIC", f"-I{RUNTIME}", *sources, "-o", str(lib_path), "-lpthread", "-lm"]
    subprocess.run(link, check=True)
    lib = ctypes.CDLL(str(lib_path))
    if lib.masic_parallel_init(threads) != 0:
        raise RuntimeError("masic_parallel_init failed")
    rng = np.random.default_rng(0)
    times = {}
    for name, kernel in zip(("conv", "dense"), KERNELS, strict=True):
        buffers = [rng.standard_normal(shape, dtype=np.float32) for shape in kernel.arg_shapes().values()]
        pointers = [buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for buf in buffers]
        fn = getattr(lib, kernel.symbol)
        times[name] = best_ms(lambda fn=fn, pointers=pointers: fn(*pointers), repeat)
    lib.masic_parallel_shutdown()
    return times


def main() -> None:
    """Prints a table of masic vs torch times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    torch_out = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT, str(args.threads), str(args.repeat)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    torch_times = json.loads(torch_out)
    with tempfile.TemporaryDirectory() as tmp:
        ours = masic_times(args.threads, args.repeat, Path(tmp))
    print(f"target {json.dumps(host_target())}, {args.threads} threads, best of {args.repeat}")
    print(f"{'kernel':<32}{'masic ms':>10}{'torch ms':>10}{'ratio':>8}")
    labels = {"conv": "conv2d 64->64 32x32 3x3 pad 1", "dense": "dense 4096->1000"}
    for name, label in labels.items():
        print(f"{label:<32}{ours[name]:>10.3f}{torch_times[name]:>10.3f}{ours[name] / torch_times[name]:>8.2f}")


if __name__ == "__main__":
    main()
