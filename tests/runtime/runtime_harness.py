"""Build and run masic executables (loader.c + a model + a thread pool) for the host and for ARM64 under qemu.

Shared by the loader's own tests and by end-to-end tests of compiled models.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masic.codegen.sources import LOADER_SOURCES, RUNTIME_DIR, SANITIZER_FLAGS

LOADER = tuple(RUNTIME_DIR / name for name in LOADER_SOURCES)
CFLAGS = ("-O2", "-std=c11", "-Wall", "-Wextra", "-Werror")
LIBS = ("-lpthread", "-lm")


@dataclass(frozen=True)
class Target:
    """A compiler and, for foreign architectures, the emulator that runs its programs."""

    name: str
    cc: str
    flags: tuple[str, ...] = ()
    runner: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # set when running its programs

    def missing_tools(self) -> list[str]:
        return [tool for tool in (self.cc, *self.runner[:1]) if shutil.which(tool) is None]


# A sanitizer report aborts the program (so the test sees a failing status), and leaks count as reports.
SANITIZER_ENV = (
    ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1"),
    ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
)
HOST = Target("host", "cc")
AARCH64 = Target("aarch64", "aarch64-linux-gnu-gcc", flags=("-static",), runner=("qemu-aarch64",))
# The loader with AddressSanitizer and UndefinedBehaviorSanitizer: every loader test also runs on this build.
HOST_SANITIZED = Target("host-sanitized", "cc", flags=SANITIZER_FLAGS, env=SANITIZER_ENV)
TARGETS = (HOST, AARCH64, HOST_SANITIZED)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The JSON statistics line, which the loader prints last."""
        return json.loads(self.stdout.strip().splitlines()[-1])

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def build_executable(
    target: Target,
    sources: Sequence[Path],
    output: Path,
    defines: Mapping[str, str] | None = None,
    with_loader: bool = True,
) -> Path:
    """Compiles and links `sources` (and the loader's, unless told not to) into one executable; raises with the
    compiler's output."""
    command = [
        target.cc,
        *CFLAGS,
        *target.flags,
        f"-I{RUNTIME_DIR}",
        *(f"-D{name}={value}" for name, value in (defines or {}).items()),
        *map(str, LOADER if with_loader else ()),
        *map(str, sources),
        "-o",
        str(output),
        *LIBS,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return output


def run_executable(
    target: Target,
    executable: Path,
    args: Sequence[str | Path],
    cwd: Path | None = None,
    timeout: float = 60,
) -> RunResult:
    done = subprocess.run(
        [*target.runner, str(executable), *map(str, args)],
        cwd=cwd,
        env={**os.environ, **dict(target.env)} if target.env else None,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    return RunResult(done.returncode, done.stdout, done.stderr)


def save(folder: Path, name: str, array: np.ndarray) -> Path:
    path = folder / name
    np.save(path, array)
    return path


def run_ok(target: Target, executable: Path, *args: str | Path) -> RunResult:
    result = run_executable(target, executable, args)
    assert result.returncode == 0, result.stderr
    return result
