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
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tvm
from tvm.target import codegen

from masic.codegen.kernels import Kernel
from masic.codegen.tir import prim_func
from masic.errors import MasicError

Target = dict[str, Any]


class BuildError(MasicError, RuntimeError):
    """The kernels could not be turned into an object file."""


def host_target() -> Target:
    """TVM target JSON for the machine we run on (CPU name as LLVM detects it, e.g. "rocketlake")."""
    return {"kind": "llvm", "mtriple": f"{platform.machine()}-linux-gnu", "mcpu": codegen.llvm_get_system_cpu()}


def vector_lanes(target: Target) -> int:
    """float32 lanes of the target's widest vector register (NEON: 4, AVX2: 8, AVX-512: 16)."""
    return max(1, codegen.llvm_get_vector_width(tvm.target.Target(target)) // 32)


def cache_dir() -> Path:
    """Object cache directory: $MASIC_CACHE_DIR, else ~/.cache/masic/kernels."""
    return Path(os.environ.get("MASIC_CACHE_DIR", Path.home() / ".cache" / "masic" / "kernels"))


def _modules(kernels: Sequence[Kernel], target: Target) -> list[tvm.IRModule]:
    """The kernels' scheduled PrimFuncs, keyed by their C symbols, in one IRModule per `tirx.noalias` setting.

    TVM 0.27's LLVM backend gives every function of a module the same `noalias` pointer attributes, whatever each
    function's own `tirx.noalias` says (found with Norse's LSNN readout: built alone its kernel had none, built with
    the model's convs it had them, and LLVM then read its input after writing its output over it). Kernels whose
    arguments may overlap (a neuron writing its output over its input) must never get them, so each setting gets
    its own module; tests/codegen/test_build.py checks the attributes in the LLVM IR."""
    lanes = vector_lanes(target)
    groups: dict[bool, dict[str, object]] = {}
    for kernel in kernels:
        func = prim_func(kernel, lanes)
        noalias = bool(func.attrs and func.attrs.get("tirx.noalias", False))
        if any(kernel.symbol in group for group in groups.values()):
            raise ValueError(f"duplicate kernel symbol {kernel.symbol!r}")
        groups.setdefault(noalias, {})[kernel.symbol] = func
    return [tvm.IRModule(groups[noalias]) for noalias in sorted(groups)]


def _cache_key(modules: Sequence[tvm.IRModule], target: Target) -> str:
    """Content hash of the modules' TVMScript (deterministic, unlike save_json which crashes in 0.27), the target
    and the TVM version."""
    digest = hashlib.sha256()
    digest.update(tvm.__version__.encode())
    digest.update(json.dumps(target, sort_keys=True).encode())
    for module in modules:
        digest.update(b"\0module")
        for gv in sorted(module.functions, key=lambda gv: gv.name_hint):
            digest.update(module[gv].script().encode())
    return digest.hexdigest()


def build_object(kernels: Sequence[Kernel], target: Target, out_path: Path) -> None:
    """Write one relocatable object file defining every kernel of ``kernels`` for ``target``.

    The object needs only ``__TVMBackendParallelLaunch`` from the loader (runtime/parallel.c), and only when some
    kernel has a parallel loop.
    """
    modules = _modules(kernels, target)
    cached = cache_dir() / f"{_cache_key(modules, target)}.o"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Write next to the cache entry and rename, so concurrent builds never see a partial object; an interrupted
        # write leaves no temporary file (after the rename there is none to remove).
        with tempfile.TemporaryDirectory(dir=cached.parent) as scratch:
            parts = [Path(scratch) / f"part{k}.o" for k in range(len(modules))]
            for module, part in zip(modules, parts, strict=True):
                tvm.tirx.build(module, tvm.target.Target(target)).write_to_file(str(part))
            joined = Path(scratch) / "kernels.o"
            _join_objects(parts, target, joined)
            os.replace(joined, cached)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, out_path)


def _join_objects(parts: Sequence[Path], target: Target, out_path: Path) -> None:
    """One relocatable object of `parts` (the linker's `-r`: a partial link, symbols left for the final one)."""
    if len(parts) == 1:
        os.replace(parts[0], out_path)
        return
    linker = f"{target['mtriple']}-ld"
    if shutil.which(linker) is None:
        raise BuildError(f"linker {linker} not found; run scripts/setup.sh to install the toolchain")
    result = subprocess.run(
        [linker, "-r", "-o", str(out_path), *map(str, parts)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise BuildError(f"joining the kernels' objects with {linker} failed: {first}")
