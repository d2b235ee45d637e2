"""Writes a deployable artifact folder: `model` (static executable), `weights.bin`, `manifest.json`.

`build_artifact` fills an empty folder; `staged` hands out such a folder beside the output folder and, when the
block completes, swaps it into place in one step (`masic.workdirs.replacing`), so that readers of the output folder
see the previous complete artifact or the new one, never a mixture, and a failed or interrupted compile leaves the
previous one untouched. An existing output folder is replaced only if it is empty or holds a previous masic
artifact. Compiler scratch (model.c, kernels.o) lives in a swept temporary folder (`masic.workdirs.scratch`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from masic.analysis.cost import inference_seconds_per_call_site
from masic.codegen.build import build_object, host_target
from masic.codegen.lower import Kernel, emit_model_c, lower
from masic.codegen.sources import RUNTIME_DIR, SANITIZE_ENV, SANITIZER_FLAGS, loader_paths, sanitize_requested
from masic.codegen.weights import WeightsFile, write_weights
from masic.early_exit import ExitRule
from masic.errors import MasicError
from masic.ir.graph import Graph, Port
from masic.manifest import ARTIFACT_FILES, ESTIMATES, EXECUTABLE, MANIFEST_FILE, MANIFEST_FORMAT, WEIGHTS_FILE
from masic.report import plan_rows
from masic.targets import Target
from masic.workdirs import BUILD_PREFIX, replacing, scratch

# written beside an artifact by `masic inspect`, `masic calibrate`, `masic profile`
REPORT_FILES = ("memory.png", "calibration.png", "profile.json")


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


def build_artifact(
    graph: Graph,
    target: Target,
    folder: Path,
    exit_rule: ExitRule,
    budget: int | None,
    progress: Callable[[str], None] = lambda _: None,
    planned_by: str = ESTIMATES,
) -> dict[str, object]:
    """Builds the artifact for a planned graph into the empty folder `folder`; returns the manifest. `planned_by`
    says where the cost model's figures (target.machine) came from."""
    with scratch(BUILD_PREFIX) as build:
        model_c, kernels, weights = generate_c(graph, exit_rule, folder / WEIGHTS_FILE)
        (build / "model.c").write_text(model_c)
        progress(f"building {len(kernels)} kernels with TVM for {target.name}")
        build_object(kernels, tvm_target(target), build / "kernels.o")
        kind = "a sanitizer build (not for deployment)" if sanitize_requested() else "a static executable"
        progress(f"linking {kind} with {target.cc}")
        _link(target, build, folder / EXECUTABLE)
    manifest = make_manifest(graph, target, exit_rule, budget, weights, [k.symbol for k in kernels], planned_by)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """An empty folder to build an artifact in (and calibrate it), which replaces `out_dir` in one step when the
    block completes; `out_dir` must be missing, empty or a previous artifact."""
    _check_replaceable(out_dir)
    with replacing(out_dir) as folder:
        yield folder


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ArtifactError(f"output path {out_dir} exists and is not a folder")
    contents = {p.name for p in out_dir.iterdir()}
    if contents and not (contents <= {*ARTIFACT_FILES, *REPORT_FILES} and MANIFEST_FILE in contents):
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


def _io(shape: tuple[int, ...], ports: tuple[Port, ...]) -> dict[str, object]:
    """The manifest's entry of the input or the output: its shape and type, and its ports if it packs several."""
    entry: dict[str, object] = {"shape": list(shape), "dtype": "float32"}
    if ports:
        entry["ports"] = [{"name": port.name, "shape": list(port.shape)} for port in ports]
    return entry


def make_manifest(
    graph: Graph,
    target: Target,
    exit_rule: ExitRule,
    budget: int | None,
    weights: WeightsFile,
    kernels: list[str],
    planned_by: str = ESTIMATES,
) -> dict[str, object]:
    """manifest.json of a planned graph's artifact (`masic.manifest.read_manifest` checks every key written here)."""
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
            "file": WEIGHTS_FILE,
            "bytes": weights.nbytes,
            "pieces": len(weights.pieces),
        },
        "input": _io(input_node.type.shape, graph.input_ports),
        "output": _io(output.type.shape, graph.output_ports),
        "timesteps": graph.timesteps,
        "exit_rule": {**exit_rule.to_manifest(), "source": "compiled"},
        "kernels": kernels,
        "buffers": plan_rows(graph),
        "planned": {
            "by": planned_by,
            "read_bytes_per_second": target.machine.read_bytes_per_second,
            "nodes": [
                {"node": name, "us": 1e6 * seconds}
                for name, seconds in inference_seconds_per_call_site(graph, target.machine).items()
            ],
        },
    }
