"""Compile kernel descriptions into one relocatable object file with TVM's LLVM backend.

All kernels of a model go into one IRModule and one ``tvm.tirx.build`` call (what ``tvm.build`` forwards to; one
LLVM module is far cheaper than a build per kernel). The object is cached by content (the kernels' TVMScript
text, the target and the TVM version), so rebuilding an unchanged model costs only the scheduling, not LLVM.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tvm
from tvm.target import codegen

from masic.codegen.kernels import Kernel
from masic.codegen.tir import prim_func

Target = dict[str, Any]


def host_target() -> Target:
    """TVM target JSON for the machine we run on (CPU name as LLVM detects it, e.g. "rocketlake")."""
    return {"kind": "llvm", "mtriple": f"{platform.machine()}-linux-gnu", "mcpu": codegen.llvm_get_system_cpu()}


def vector_lanes(target: Target) -> int:
    """float32 lanes of the target's widest vector register (NEON: 4, AVX2: 8, AVX-512: 16)."""
    return max(1, codegen.llvm_get_vector_width(tvm.target.Target(target)) // 32)


def cache_dir() -> Path:
    """Object cache directory: $MASIC_CACHE_DIR, else ~/.cache/masic/kernels."""
    return Path(os.environ.get("MASIC_CACHE_DIR", Path.home() / ".cache" / "masic" / "kernels"))


def _module(kernels: Sequence[Kernel], target: Target) -> tvm.IRModule:
    """One IRModule holding every kernel's scheduled PrimFunc, keyed by its C symbol."""
    lanes = vector_lanes(target)
    funcs = {}
    for kernel in kernels:
        if kernel.symbol in funcs:
            raise ValueError(f"duplicate kernel symbol {kernel.symbol!r}")
        funcs[kernel.symbol] = prim_func(kernel, lanes)
    return tvm.IRModule(funcs)


def _cache_key(module: tvm.IRModule, target: Target) -> str:
    """Content hash of the module's TVMScript (deterministic, unlike save_json which crashes in 0.27), the target
    and the TVM version."""
    digest = hashlib.sha256()
    digest.update(tvm.__version__.encode())
    digest.update(json.dumps(target, sort_keys=True).encode())
    for gv in sorted(module.functions, key=lambda gv: gv.name_hint):
        digest.update(module[gv].script().encode())
    return digest.hexdigest()


def build_object(kernels: Sequence[Kernel], target: Target, out_path: Path) -> None:
    """Write one relocatable object file defining every kernel of ``kernels`` for ``target``.

    The object needs only ``__TVMBackendParallelLaunch`` from the loader (runtime/parallel.c), and only when some
    kernel has a parallel loop.
    """
    module = _module(kernels, target)
    cached = cache_dir() / f"{_cache_key(module, target)}.o"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        lib = tvm.tirx.build(module, tvm.target.Target(target))
        # Write next to the cache entry and rename, so concurrent builds never see a partial object; an interrupted
        # write leaves no temporary file (after the rename there is none to remove).
        fd, tmp = tempfile.mkstemp(suffix=".o", dir=cached.parent)
        os.close(fd)
        try:
            lib.write_to_file(tmp)
            os.replace(tmp, cached)
        finally:
            Path(tmp).unlink(missing_ok=True)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, out_path)
