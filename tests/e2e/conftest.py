"""Fixtures for end-to-end tests: compiled artifacts, built once per session and target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from masic.targets import get_target

TARGETS = ("x86_64", "aarch64")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stats(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def masic_cli(*args: str, cwd: Path | None = None) -> Run:
    """Runs `masic` in a subprocess, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "masic.cli", *args], capture_output=True, text=True, check=False, cwd=cwd
    )
    return Run(result.returncode, result.stdout, result.stderr)


def run_artifact(out: Path, x: np.ndarray, tmp: Path, *flags: str) -> tuple[Run, np.ndarray | None]:
    """Runs an artifact with `masic run` on input x; returns the run and the per-step outputs."""
    x_path, y_path = tmp / "x.npy", tmp / "y.npy"
    np.save(x_path, x.astype(np.float32))
    y_path.unlink(missing_ok=True)
    run = masic_cli("run", str(out), "--input", str(x_path), "--output", str(y_path), *flags)
    return run, (np.load(y_path) if run.returncode == 0 else None)


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    t = get_target(request.param)
    missing = [tool for tool in (t.cc, *t.emulator) if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    return request.param
