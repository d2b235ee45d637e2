"""The C side of the benchmark: the TVM kernels, the loader's thread pool (runtime/parallel.c) and `harness.c` linked
into one shared library, loaded with ctypes, that times back-to-back calls of a kernel in C."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.speed.common import RUNTIME

HARNESS = Path(__file__).with_name("harness.c")


def build_library(kernels: list, work: Path) -> Path:
    """The TVM kernels, runtime/parallel.c and the harness linked into WORKDIR/lib/libspeed.so."""
    from masic.codegen.build import build_object, host_target

    work.mkdir(parents=True, exist_ok=True)
    build_object(kernels, host_target(), work / "kernels.o")
    path = work / "libspeed.so"
    sources = [str(RUNTIME / "parallel.c"), str(HARNESS), str(work / "kernels.o")]
    command = ["cc", "-O3", "-march=native", "-shared", "-fPIC", f"-I{RUNTIME}", *sources, "-o", str(path)]
    subprocess.run([*command, "-lpthread", "-lm"], check=True)
    return path


class Library:
    """The shared library loaded with its thread pool started. Each thread count loads its own copy of the file
    (the pool is a static of the library, and dlopen of the same path returns the same one)."""

    def __init__(self, path: Path, threads: int) -> None:
        copy = path.with_name(f"{path.stem}-{threads}t.so")
        shutil.copyfile(path, copy)
        self.lib = ctypes.CDLL(str(copy))
        self.lib.bench_calls.restype = ctypes.c_double
        self.lib.bench_calls.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int64]
        self.max_args = self.lib.bench_max_args()
        self.threads = threads
        if self.lib.masic_parallel_init(threads) != 0:
            raise RuntimeError("masic_parallel_init failed")

    def runner(self, symbol: str, arrays: list[np.ndarray]) -> Callable[[int], float]:
        """run(iters) -> seconds per call of symbol(*arrays), timed in C."""
        if len(arrays) > self.max_args:
            raise ValueError(f"{symbol}: {len(arrays)} arguments, the harness takes {self.max_args}")
        fn = ctypes.cast(getattr(self.lib, symbol), ctypes.c_void_p)
        args = (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))

        def run(iters: int) -> float:
            seconds = self.lib.bench_calls(fn, args, len(arrays), iters)
            if seconds < 0:
                raise RuntimeError(f"{symbol} failed")
            return seconds

        return run

    def call(self, symbol: str, arrays: list[np.ndarray]) -> None:
        self.runner(symbol, arrays)(1)

    def close(self) -> None:
        self.lib.masic_parallel_shutdown()
