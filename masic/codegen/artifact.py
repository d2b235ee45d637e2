"""Writes a deployable artifact folder: `model` (static executable), `weights.bin`, `manifest.json`.

Everything is built in a temporary sibling folder and renamed into place only when complete, so a failed compile
never leaves a folder that looks like a finished artifact. An existing output folder is replaced only if it is
empty or holds a previous masic artifact.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from masic.codegen.build import build_object, host_target
from masic.codegen.lower import Kernel, emit_model_c, lower
from masic.codegen.sources import RUNTIME_DIR, SANITIZE_ENV, SANITIZER_FLAGS, loader_paths, sanitize_requested
from masic.codegen.weights import WeightsFile, write_weights
from masic.early_exit import ExitRule
from masic.errors import MasicError
from masic.ir.graph import Graph
from masic.report import plan_rows
from masic.targets import Target

MANIFEST_FORMAT = "masic-artifact/1"
ARTIFACT_FILES = ("model", "weights.bin", "manifest.json")
REPORT_FILES = ("memory.png", "calibration.png")  # written beside an artifact by `masic inspect`, `masic calibrate`


class ArtifactError(MasicError, RuntimeError):
    """The artifact could not be written (output folder in the way, toolchain missing or failing)."""


def tvm_target(target: Target) -> dict[str, object]:
    """The TVM target dict, with this machine's CPU filled in for the host target."""
    return host_target() if target.is_host else dict(target.llvm)


def generate_c(graph: Graph, exit_rule: ExitRule, weights_path: Path) -> tuple[str, tuple[Kernel, ...], WeightsFile]:
    """Writes weights.bin to `weights_path` and returns (model.c text, kernels, weights layout)."""
    weights = write_weights(graph, weights_path)
    kernels, calls = lower(graph)
    return emit_model_c(graph, kernels, calls, weights, exit_rule), kernels, weights


def write_artifact(
    graph: Graph,
    target: Target,
    out_dir: Path,
    exit_rule: ExitRule,
    budget: int | None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, object]:
    """Builds the artifact for a planned graph into `out_dir`; returns the manifest."""
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="masic-build-") as build_name:
            build = Path(build_name)
            model_c, kernels, weights = generate_c(graph, exit_rule, staging / "weights.bin")
            (build / "model.c").write_text(model_c)
            progress(f"building {len(kernels)} kernels with TVM for {target.name}")
            build_object(kernels, tvm_target(target), build / "kernels.o")
            kind = "a sanitizer build (not for deployment)" if sanitize_requested() else "a static executable"
            progress(f"linking {kind} with {target.cc}")
            _link(target, build, staging / "model")
        manifest = _manifest(graph, target, exit_rule, budget, weights, [k.symbol for k in kernels])
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ArtifactError(f"output path {out_dir} exists and is not a folder")
    contents = {p.name for p in out_dir.iterdir()}
    if contents and not (contents <= {*ARTIFACT_FILES, *REPORT_FILES} and "manifest.json" in contents):
        raise ArtifactError(f"output folder {out_dir} holds files that are not a masic artifact; choose another -o")


def link_flags(target: Target) -> list[str]:
    """The C compiler's flags for the target; with MASIC_SANITIZE (host targets only) the sanitizers', without
    -static."""
    if not sanitize_requested():
        return list(target.cflags)
    if not target.is_host:
        raise ArtifactError(f"{SANITIZE_ENV} builds only for the host target, not {target.name}")
    return [flag for flag in target.cflags if flag != "-static"] + list(SANITIZER_FLAGS)


def _link(target: Target, build: Path, executable: Path) -> None:
    if shutil.which(target.cc) is None:
        raise ArtifactError(f"C compiler {target.cc} not found; run scripts/setup.sh to install the toolchain")
    command = [
        target.cc,
        *link_flags(target),
        f"-I{RUNTIME_DIR}",
        "-o",
        str(executable),
        *map(str, loader_paths()),
        str(build / "model.c"),
        str(build / "kernels.o"),
        "-lpthread",
        "-lm",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise ArtifactError(f"linking with {target.cc} failed: {first}")


def _manifest(
    graph: Graph, target: Target, exit_rule: ExitRule, budget: int | None, weights: WeightsFile, kernels: list[str]
) -> dict[str, object]:
    plan = graph.plan
    (input_node,) = graph.inputs
    output = graph.node(graph.output)
    return {
        "format": MANIFEST_FORMAT,
        "name": graph.name,
        "target": {"name": target.name, "description": target.description, "emulator": list(target.emulator)},
        "budget_bytes": budget,
        "arena_bytes": plan.arena_bytes,
        "lower_bound_bytes": plan.lower_bound,
        "alignment": plan.alignment,
        "weights": {
            "file": "weights.bin",
            "bytes": weights.nbytes,
            "crc32": f"{weights.crc32:08x}",
        },
        "input": {"shape": list(input_node.type.shape), "dtype": "float32"},
        "output": {"shape": list(output.type.shape), "dtype": "float32"},
        "timesteps": graph.timesteps,
        "exit_rule": {**exit_rule.to_manifest(), "source": "compiled"},
        "kernels": kernels,
        "buffers": plan_rows(graph),
    }
