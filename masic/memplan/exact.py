"""Exact search for a placement within a capacity: MiniMalloc's canonical branch and bound, run by a C core.

`exact_search` either finds a placement whose height is at most the capacity, or proves that none exists, or
stops at its deadline. How the search works and what it prunes with is described at the top of exact_core.c.

Why a shared library compiled on first use and loaded with ctypes, rather than a CPython extension built by
setuptools: the library is compiled from the source in the package, keyed by a hash of that source, the flags and
the compiler, so it can never be stale after an edit or a `git pull` (an editable install's extension is only as
new as the last `pip install -e .`); it needs no Python C-API glue and no change to the build; ctypes releases the
GIL during the call; and masic already requires a C compiler at run time (it links the programs it compiles). The
library goes to $MASIC_CACHE_DIR or ~/.cache/masic, written to a temporary name and renamed, so concurrent first
uses are safe. $CC overrides the compiler (default `cc`).
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from masic.memplan.problem import MemplanError, Problem

SOURCE = Path(__file__).with_name("exact_core.c")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-std=c11", "-fPIC", "-shared")
_FOUND, _INFEASIBLE, _TIMEOUT, _NO_MEMORY = 1, 0, -1, -2
_I64 = ctypes.POINTER(ctypes.c_int64)


class Status(enum.Enum):
    FOUND = "found"
    INFEASIBLE = "infeasible"  # proved: no placement fits the capacity
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class ExactResult:
    """The outcome of one search: offsets by buffer id when FOUND, the nodes visited and the time taken."""

    status: Status
    offsets: dict[str, int] | None
    nodes: int
    backtracks: int
    seconds: float


def compiler() -> str:
    """The C compiler used to build the core: $CC, else cc."""
    return os.environ.get("CC", "cc")


def cache_dir() -> Path:
    """Where the compiled core is kept: $MASIC_CACHE_DIR, else ~/.cache/masic."""
    return Path(os.environ.get("MASIC_CACHE_DIR", Path.home() / ".cache" / "masic"))


def _library_path() -> Path:
    cc = compiler()
    if shutil.which(cc) is None:
        raise MemplanError(f"the exact memory planner needs a C compiler: {cc!r} not found (set CC)")
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join((cc, *CFLAGS, platform.machine(), platform.system())).encode())
    path = cache_dir() / f"memplan-{digest.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        build = subprocess.run([cc, *CFLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, check=False)
        if build.returncode != 0:
            first = (build.stderr.strip().splitlines() or ["no output"])[0]
            raise MemplanError(f"compiling {SOURCE.name} with {cc} failed: {first}")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@cache
def library() -> ctypes.CDLL:
    """The compiled core (built on first use, then loaded from the cache)."""
    lib = ctypes.CDLL(str(_library_path()))
    lib.memplan_search.argtypes = [ctypes.c_int32, _I64, _I64, _I64, _I64, _I64, ctypes.c_int64, ctypes.c_double]
    lib.memplan_search.argtypes += [_I64, _I64]
    lib.memplan_search.restype = ctypes.c_int
    return lib


def exact_search(problem: Problem, capacity: int, timeout: float | None = None, alignment: int = 1) -> ExactResult:
    """Searches for a placement of height <= capacity, honouring alignments (each buffer's combined with
    `alignment`) and fixed offsets (a misaligned one, or one past the capacity, makes the problem INFEASIBLE).
    FOUND results are not checked here (solve() checks what it returns). Empty buffers take no room and go to
    their fixed offset or 0. Raises MemplanError if the core runs out of memory."""
    started = time.perf_counter()
    arr = problem.arrays(alignment)
    fixed = arr.fixed >= 0
    if np.any(fixed & ((arr.fixed % arr.alignment != 0) | (arr.fixed + arr.size > capacity))):
        return ExactResult(Status.INFEASIBLE, None, 0, 0, time.perf_counter() - started)  # a fixed buffer is wrong
    active = np.flatnonzero(arr.size > 0)
    columns = [np.ascontiguousarray(x[active]) for x in (arr.lower, arr.upper, arr.size, arr.alignment, arr.fixed)]
    found = np.zeros(len(active), dtype=np.int64)
    stats = np.zeros(2, dtype=np.int64)
    pointers = [x.ctypes.data_as(_I64) for x in (*columns, found, stats)]
    code = library().memplan_search(
        len(active), *pointers[:5], capacity, -1.0 if timeout is None else max(timeout, 0.0), *pointers[5:]
    )
    if code == _NO_MEMORY:
        raise MemplanError(f"the exact search ran out of memory on {len(active)} buffers")
    status = {_FOUND: Status.FOUND, _INFEASIBLE: Status.INFEASIBLE, _TIMEOUT: Status.TIMEOUT}[code]
    offsets = None
    if status is Status.FOUND:
        full = np.where(fixed, arr.fixed, 0)
        full[active] = found
        offsets = {b.id: o for b, o in zip(problem.buffers, full.tolist(), strict=True)}
    return ExactResult(status, offsets, int(stats[0]), int(stats[1]), time.perf_counter() - started)
