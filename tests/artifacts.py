"""Compiling and running artifacts as a user does (through the `masic` command), for tests and benchmarks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from masic.frontends.norse import install_pickle_aliases
from norse.torch import SequentialState

from masic.ir.graph import Graph

SPIKING_CELLS = ("LIFCell", "LIFBoxCell", "IAFCell")
EMBED_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "embed"


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stats(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def masic_cli(*args: str, cwd: Path | None = None) -> Run:
    """Runs `masic` in a subprocess."""
    result = subprocess.run(
        [sys.executable, "-m", "masic.cli", *args], capture_output=True, text=True, check=False, cwd=cwd
    )
    return Run(result.returncode, result.stdout, result.stderr)


def compile_model(model: SequentialState, shape: tuple[int, ...], target: str, tmp: Path, *flags: str) -> Path:
    """Saves the model with torch.save and compiles it into tmp/out; fails loudly if masic does."""
    install_pickle_aliases()
    torch.save(model, tmp / "model.pt")
    out = tmp / "out"
    shape_flag = ["--input-shape", ",".join(map(str, shape))]
    result = masic_cli("compile", str(tmp / "model.pt"), "--target", target, "-o", str(out), *shape_flag, *flags)
    if result.returncode != 0:
        raise AssertionError(f"masic compile failed: {result.stderr}")
    return out


def compile_spec(spec: str, target: str, tmp: Path, *flags: str) -> Path:
    """Compiles a model spec (a file or package.module:factory) into tmp/out; fails loudly if masic does."""
    out = tmp / "out"
    result = masic_cli("compile", spec, "--target", target, "-o", str(out), *flags)
    if result.returncode != 0:
        raise AssertionError(f"masic compile {spec} failed: {result.stderr}")
    return out


def compile_graph(graph: Graph, target: str, out: Path) -> Path:
    """Compiles an IR graph (as a frontend returned it, perhaps edited by the test) into `out`, in this process."""
    from masic.targets import get_target

    from masic import driver

    chosen = get_target(target)
    driver.build(driver.plan(graph, driver.options_for(chosen)).graph, chosen, out)
    return out


def fake_manifest(input_shape: tuple[int, ...], output_shape: tuple[int, ...], timesteps: int) -> dict:
    """A complete manifest of an x86_64 artifact without weights, kernels or buffers (for `write_fake_artifact`)."""
    return {
        "format": "masic-artifact/3",
        "name": "fake",
        "target": {"name": "x86_64", "description": "", "emulator": []},
        "budget_bytes": None,
        "arena_bytes": 0,
        "lower_bound_bytes": 0,
        "alignment": 64,
        "weights": {"file": "weights.bin", "bytes": 0, "pieces": 0, "layers": []},
        "input": {"shape": list(input_shape), "dtype": "float32"},
        "output": {"shape": list(output_shape), "dtype": "float32"},
        "timesteps": timesteps,
        "exit_rule": {"rule": "none", "min_timesteps": 1, "source": "compiled"},
        "kernels": [],
        "buffers": [],
        "planned": {"by": "estimates", "read_bytes_per_second": 1e9, "nodes": []},
    }


def write_fake_artifact(folder: Path, manifest: dict, model_script: str = "#!/bin/sh\nexit 0\n") -> Path:
    """An artifact folder holding `manifest`, a shell script as its `model` and zeros of the size the manifest
    records as weights.bin: enough for the tools that check an artifact before they run it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model").write_text(model_script)
    (folder / "model").chmod(0o755)
    weights = manifest.get("weights")
    size = weights.get("bytes") if isinstance(weights, dict) else 0
    (folder / "weights.bin").write_bytes(bytes(size if isinstance(size, int) and 0 <= size < 1 << 24 else 0))
    return folder


def run_artifact(out: Path, x: np.ndarray, tmp: Path, *flags: str) -> tuple[Run, np.ndarray | None]:
    """Runs an artifact with `masic run` on input x; returns the run and the per-step outputs."""
    x_path, y_path = tmp / "x.npy", tmp / "y.npy"
    np.save(x_path, x.astype(np.float32))
    y_path.unlink(missing_ok=True)
    run = masic_cli("run", str(out), "--input", str(x_path), "--output", str(y_path), *flags)
    return run, (np.load(y_path) if run.returncode == 0 else None)


def spiking_prefix(model: SequentialState) -> SequentialState:
    """The model up to and including its last spiking layer, so its output is spikes."""
    layers = list(model)
    last = max(i for i, m in enumerate(layers) if type(m).__name__ in SPIKING_CELLS)
    return SequentialState(*layers[: last + 1])


def import_runtime(out: Path) -> ModuleType:
    """The artifact's own masic_runtime.py, imported from the artifact folder as on a device."""
    spec = importlib.util.spec_from_file_location(f"masic_runtime_{out.parent.name}", out / "masic_runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_embed_example(out: Path, cc: str, build: Path) -> Path:
    """examples/embed/predict built with its Makefile against the artifact's static library, into `build`."""
    command = ["make", "-C", str(EMBED_EXAMPLE), f"ARTIFACT={out}", f"CC={cc}", f"BUILD={build}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"building examples/embed failed: {result.stderr}")
    return build / "predict"
