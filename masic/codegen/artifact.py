"""Writes a deployable artifact folder: `model` (static executable), `weights.bin`, `manifest.json`, and the same model
as a library for programs that embed it: `include/masic_runtime.h`, `lib/libmasic_model.a`, `lib/libmasic_model.so`
and `masic_runtime.py` (ctypes over the shared library). `model` is linked from the static library, so the
executable and an embedding program run one implementation.

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
from masic.codegen.sources import (
    LIBRARY_SOURCES,
    PARALLEL_SOURCE,
    PROGRAM_SOURCES,
    PUBLIC_HEADER,
    RUNTIME_DIR,
    SANITIZE_ENV,
    SANITIZER_FLAGS,
    sanitize_requested,
)
from masic.codegen.weights import WeightsFile, write_weights
from masic.early_exit import ExitRule
from masic.errors import MasicError
from masic.ir.graph import Graph, Port
from masic.manifest import (
    ARTIFACT_FILES,
    ESTIMATES,
    EXECUTABLE,
    INCLUDE_DIR,
    LIB_DIR,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    PYTHON_RUNTIME,
    SHARED_LIBRARY,
    STATIC_LIBRARY,
    WEIGHTS_FILE,
)
from masic.report import plan_rows, weight_rows
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
        progress(f"linking {kind} and the model's library with {target.cc}")
        _link(target, build, folder)
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


# The functions libmasic_model.so exports (masic_runtime.h); every other symbol binds within the library, so that
# two models' libraries loaded side by side (RTLD_LOCAL) never resolve to each other's kernels or plan.
EXPORTED_FUNCTIONS = (
    "masic_model_name",
    "masic_arena_bytes",
    "masic_arena_alignment",
    "masic_input_floats",
    "masic_output_floats",
    "masic_default_timesteps",
    "masic_max_timesteps",
    "masic_open",
    "masic_step",
    "masic_run",
    "masic_reset",
    "masic_stats",
    "masic_set_exit_rule",
    "masic_close",
    "masic_last_error",
    "masic_status_name",
    "masic_workers_start",
    "masic_workers_count",
    "masic_workers_stop",
)


def _archiver(target: Target) -> str:
    """The `ar` of the target's toolchain (aarch64-linux-gnu-gcc -> aarch64-linux-gnu-ar), which indexes its
    objects' symbols."""
    return target.cc.removesuffix("gcc") + "ar" if target.cc.endswith("-gcc") else "ar"


def _run_tool(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise ArtifactError(f"{what} with {command[0]} failed: {first}")


def _link(target: Target, build: Path, folder: Path) -> None:
    """Builds lib/libmasic_model.a and .so from the library sources, model.c and the kernels, links `model` from the
    static library, and copies the header and the Python runtime."""
    for tool in (target.cc, _archiver(target)):
        if shutil.which(tool) is None:
            raise ArtifactError(f"{tool} not found; run scripts/setup.sh to install the toolchain")
    flags = link_flags(target)
    compile_flags = [f for f in flags if f != "-static"]
    objects = []
    for source in (*(RUNTIME_DIR / name for name in (*LIBRARY_SOURCES, PARALLEL_SOURCE)), build / "model.c"):
        obj = build / f"{source.stem}.o"
        _run_tool(
            [target.cc, *compile_flags, "-fPIC", f"-I{RUNTIME_DIR}", "-c", "-o", str(obj), str(source)], "compiling"
        )
        objects.append(str(obj))
    objects.append(str(build / "kernels.o"))
    (folder / LIB_DIR).mkdir()
    (folder / INCLUDE_DIR).mkdir()
    archive = folder / LIB_DIR / STATIC_LIBRARY
    _run_tool([_archiver(target), "rcs", str(archive), *objects], "archiving the library")
    exports = build / "exports.map"
    exports.write_text(
        "{\n  global:\n" + "".join(f"    {name};\n" for name in EXPORTED_FUNCTIONS) + "  local: *;\n};\n"
    )
    shared = [target.cc, *compile_flags, "-shared", "-Wl,-Bsymbolic", f"-Wl,--version-script={exports}"]
    _run_tool([*shared, "-o", str(folder / LIB_DIR / SHARED_LIBRARY), *objects, "-lpthread", "-lm"], "linking")
    program = [str(RUNTIME_DIR / name) for name in PROGRAM_SOURCES]
    command = [target.cc, *flags, f"-I{RUNTIME_DIR}", "-o", str(folder / EXECUTABLE), *program, str(archive)]
    _run_tool([*command, "-lpthread", "-lm"], "linking")
    shutil.copyfile(RUNTIME_DIR / PUBLIC_HEADER, folder / INCLUDE_DIR / PUBLIC_HEADER)
    shutil.copyfile(RUNTIME_DIR / PYTHON_RUNTIME, folder / PYTHON_RUNTIME)


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
            "layers": weight_rows(graph),
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
