"""manifest.json, the description of an artifact folder, and the one reader that checks it.

`masic run`, `inspect` and `calibrate` read folders that may have been copied, edited or forged. `read_manifest`
checks the folder (manifest.json, `model` and `weights.bin` regular files, weights.bin of the size recorded) and
every key the writer (`masic.codegen.artifact`) puts in the manifest: that it is there, its JSON type and its
range. The first problem is refused in one line naming the key, e.g. `out/manifest.json: exit_rule.min_timesteps
must be an integer from 0 to 1000000, got -1`. Keys the writer does not write are ignored.

The target is looked up by name among the targets masic knows, and how to run the executable (natively or under
an emulator) comes from that description: the manifest's `target.emulator` is informative only, so an edited
manifest cannot make `masic run` start another program.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from masic.early_exit import RULES, THRESHOLD_NAMES, ExitRule
from masic.errors import MasicError
from masic.files import read_text
from masic.ir.graph import BUFFER_KINDS, Port
from masic.ir.weight_formats import FORMATS
from masic.limits import MAX_BYTES, MAX_MANIFEST_BYTES, MAX_TIMESTEPS
from masic.targets import TARGETS, Target

MANIFEST_FORMAT = "masic-artifact/3"  # 2: weights.bin checked by pieces, CRC-32C; 3: weights.layers, their formats
ESTIMATES = "the target's estimated figures"  # what planned an artifact compiled without --profile (`planned.by`)
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.bin"
EXECUTABLE = "model"
INCLUDE_DIR = "include"  # the library's header, masic_runtime.h
LIB_DIR = "lib"
STATIC_LIBRARY = "libmasic_model.a"  # in LIB_DIR: the model as a C library for the artifact's target
SHARED_LIBRARY = "libmasic_model.so"
PYTHON_RUNTIME = "masic_runtime.py"  # ctypes over lib/libmasic_model.so
# What an artifact folder holds at its top level.
ARTIFACT_FILES = (EXECUTABLE, WEIGHTS_FILE, MANIFEST_FILE, INCLUDE_DIR, LIB_DIR, PYTHON_RUNTIME)
EXIT_SOURCES = ("compiled", "calibrated")


class ManifestError(MasicError, ValueError):
    """A folder that is not a complete masic artifact, or a manifest key missing, mistyped or out of range."""


@dataclass(frozen=True)
class Manifest:
    """A checked artifact folder. `data` is the manifest as read, for tools that rewrite it (calibration)."""

    folder: Path
    name: str
    target: Target
    budget_bytes: int | None
    arena_bytes: int
    lower_bound_bytes: int
    weights_bytes: int
    weights_pieces: int  # pieces of weights.bin with a CRC-32C of their own, checked by the loader as it reads them
    weight_layers: tuple[Mapping[str, object], ...]  # each layer's weight format, rows as `masic.report.weight_rows`
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_ports: tuple[Port, ...]  # the named parts of the input, when it packs several (`masic.ir.graph.Port`)
    output_ports: tuple[Port, ...]
    timesteps: int
    exit_rule: ExitRule
    exit_source: str
    buffers: tuple[Mapping[str, object], ...]  # rows as `masic.report.plan_rows` writes them
    planned_by: str  # where the cost model's figures came from: the target's estimates, or a profile
    planned_read_bytes_per_second: float  # the cost model's figure for the target's storage
    planned_node_us: Mapping[str, float]  # planned compute time of one inference per node a kernel call computes
    planned_node_estimated_us: Mapping[str, float]  # the same by the target's estimated figures alone
    planned_node_keys: Mapping[str, str]  # each call site's kernel description key (masic.analysis.kernel_key)
    planned_latency_us: float  # one inference, by the cost model
    data: Mapping[str, object]

    @property
    def executable(self) -> Path:
        return self.folder / EXECUTABLE

    def command(self) -> list[str]:
        """How to start the executable on this machine: under the target's emulator, if it has one."""
        return [*self.target.emulator, str(self.executable)]


class _Keys:
    """Reads typed values out of the manifest's JSON; each failure names the file and the key's path."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ManifestError(f"{self.source}: {key} {problem}")

    def get(self, parent: Mapping[str, object], parent_key: str, name: str) -> tuple[object, str]:
        """(value, its key path) of `parent[name]`, which must be present."""
        key = f"{parent_key}.{name}" if parent_key else name
        if name not in parent:
            self.fail(key, "is missing")
        return parent[name], key

    def mapping(self, parent: Mapping[str, object], parent_key: str, name: str) -> tuple[Mapping[str, object], str]:
        value, key = self.get(parent, parent_key, name)
        if not isinstance(value, dict):
            self.fail(key, f"must be a JSON object, got {_show(value)}")
        return value, key

    def array(self, parent: Mapping[str, object], parent_key: str, name: str) -> tuple[list[object], str]:
        value, key = self.get(parent, parent_key, name)
        if not isinstance(value, list):
            self.fail(key, f"must be a JSON list, got {_show(value)}")
        return value, key

    def string(
        self, parent: Mapping[str, object], parent_key: str, name: str, choices: tuple[str, ...] | None = None
    ) -> str:
        value, key = self.get(parent, parent_key, name)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            expected = f"one of {', '.join(map(repr, choices))}" if choices else "a string"
            self.fail(key, f"must be {expected}, got {_show(value)}")
        return value

    def integer(self, parent: Mapping[str, object], parent_key: str, name: str, low: int, high: int) -> int:
        value, key = self.get(parent, parent_key, name)
        return self.integer_value(value, key, low, high)

    def integer_value(self, value: object, key: str, low: int, high: int) -> int:
        # bool is an int in Python, but true is not a count in JSON
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be an integer from {low} to {high}, got {_show(value)}")
        return value

    def number(
        self, parent: Mapping[str, object], parent_key: str, name: str, ok: Callable[[float], bool], expected: str
    ) -> float:
        value, key = self.get(parent, parent_key, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(float(value)):
            self.fail(key, f"must be {expected}, got {_show(value)}")
        return float(value)

    def shape(self, parent: Mapping[str, object], parent_key: str, name: str) -> tuple[int, ...]:
        value, key = self.array(parent, parent_key, name)
        if not value:
            self.fail(key, "must list at least one dimension")
        shape = tuple(self.integer_value(size, f"{key}[{i}]", 1, MAX_BYTES) for i, size in enumerate(value))
        if math.prod(shape) * 4 > MAX_BYTES:
            self.fail(key, f"holds {math.prod(shape)} float32 elements, more than {MAX_BYTES} bytes")
        return shape


def _show(value: object) -> str:
    """A short JSON rendering of a value for a message (NaN and Infinity as JSON would spell them)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_manifest(folder: Path) -> Manifest:
    """Checks the artifact folder and its manifest (see the module docstring); raises ManifestError naming the
    first problem."""
    path = folder / MANIFEST_FILE
    try:
        data = json.loads(read_text(path, MAX_MANIFEST_BYTES))
    except (MasicError, json.JSONDecodeError, RecursionError) as err:  # RecursionError: "[[[[..." nested deeply
        raise ManifestError(f"{folder} is not a masic artifact folder ({err})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        shown = _show(data.get("format")) if isinstance(data, dict) else "not a JSON object"
        raise ManifestError(f"{path} is not a masic manifest: format must be {MANIFEST_FORMAT!r}, got {shown}")
    keys = _Keys(path)
    target = _target(keys, data)
    arena = keys.integer(data, "", "arena_bytes", 0, MAX_BYTES)
    lower_bound = keys.integer(data, "", "lower_bound_bytes", 0, arena)
    keys.integer(data, "", "alignment", 1, MAX_BYTES)
    budget, key = keys.get(data, "", "budget_bytes")
    if budget is not None:
        keys.integer_value(budget, key, arena, MAX_BYTES)  # the plan fits its budget
    weights, key = keys.mapping(data, "", "weights")
    keys.string(weights, key, "file", (WEIGHTS_FILE,))
    weights_bytes = keys.integer(weights, key, "bytes", 0, MAX_BYTES)
    pieces = keys.integer(weights, key, "pieces", 0, MAX_BYTES)
    weight_layers = _weight_layers(keys, weights, key, weights_bytes)
    if "choice" in weights:
        _weight_choice(keys, weights, key)
    shapes, ports = [], []
    for name in ("input", "output"):
        entry, key = keys.mapping(data, "", name)
        shapes.append(keys.shape(entry, key, "shape"))
        keys.string(entry, key, "dtype", ("float32",))
        ports.append(_ports(keys, entry, key, shapes[-1]))
    timesteps = keys.integer(data, "", "timesteps", 1, MAX_TIMESTEPS)
    exit_rule, exit_source = _exit_rule(keys, data)
    kernels, key = keys.array(data, "", "kernels")
    for i, symbol in enumerate(kernels):
        if not isinstance(symbol, str):
            keys.fail(f"{key}[{i}]", f"must be a string, got {_show(symbol)}")
    planned, key = keys.mapping(data, "", "planned")
    planned_by = keys.string(planned, key, "by")
    finite_positive = "a finite number > 0"
    read_rate = keys.number(planned, key, "read_bytes_per_second", lambda x: 0 < x < math.inf, finite_positive)
    rows, rows_key = keys.array(planned, key, "nodes")
    latency = keys.number(planned, key, "latency_us", lambda x: 0 <= x < math.inf, "a finite number >= 0")
    node_us, estimated_us, node_keys = {}, {}, {}
    for i, row in enumerate(rows):
        row_key = f"{rows_key}[{i}]"
        if not isinstance(row, dict):
            keys.fail(row_key, f"must be a JSON object, got {_show(row)}")
        name = keys.string(row, row_key, "node")
        node_us[name] = keys.number(row, row_key, "us", lambda x: 0 <= x < math.inf, "a finite number >= 0")
        estimated_us[name] = keys.number(row, row_key, "estimated_us", lambda x: 0 <= x < math.inf, "a number >= 0")
        node_keys[name] = keys.string(row, row_key, "key")
    manifest = Manifest(
        folder=folder,
        name=keys.string(data, "", "name"),
        target=target,
        budget_bytes=budget,
        arena_bytes=arena,
        lower_bound_bytes=lower_bound,
        weights_bytes=weights_bytes,
        weights_pieces=pieces,
        weight_layers=weight_layers,
        input_shape=shapes[0],
        output_shape=shapes[1],
        input_ports=ports[0],
        output_ports=ports[1],
        timesteps=timesteps,
        exit_rule=exit_rule,
        exit_source=exit_source,
        buffers=_buffers(keys, data, arena),
        planned_by=planned_by,
        planned_read_bytes_per_second=read_rate,
        planned_node_us=node_us,
        planned_node_estimated_us=estimated_us,
        planned_node_keys=node_keys,
        planned_latency_us=latency,
        data=data,
    )
    _check_files(manifest)
    return manifest


def _ports(keys: _Keys, entry: Mapping[str, object], key: str, shape: tuple[int, ...]) -> tuple[Port, ...]:
    """The optional `ports` of the input or output: named parts whose sizes add up to the shape's."""
    if "ports" not in entry:
        return ()
    rows, key = keys.array(entry, key, "ports")
    ports = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            keys.fail(f"{key}[{i}]", f"must be a JSON object, got {_show(row)}")
        ports.append(Port(keys.string(row, f"{key}[{i}]", "name"), keys.shape(row, f"{key}[{i}]", "shape")))
    names = [port.name for port in ports]
    if len(ports) < 2 or len(set(names)) != len(names) or sum(p.numel for p in ports) != math.prod(shape):
        keys.fail(key, f"must name two or more distinct parts whose sizes add up to {math.prod(shape)}")
    return tuple(ports)


def _target(keys: _Keys, data: Mapping[str, object]) -> Target:
    entry, key = keys.mapping(data, "", "target")
    name = keys.string(entry, key, "name")
    if name not in TARGETS:
        keys.fail(f"{key}.name", f"{name!r} is not a target masic knows ({', '.join(TARGETS)})")
    keys.string(entry, key, "description")
    emulator, emulator_key = keys.array(entry, key, "emulator")
    for i, word in enumerate(emulator):
        if not isinstance(word, str):
            keys.fail(f"{emulator_key}[{i}]", f"must be a string, got {_show(word)}")
    return TARGETS[name]


def _exit_rule(keys: _Keys, data: Mapping[str, object]) -> tuple[ExitRule, str]:
    entry, key = keys.mapping(data, "", "exit_rule")
    rule = keys.string(entry, key, "rule", RULES)
    threshold = 0.0
    name = THRESHOLD_NAMES.get(rule)
    if rule == "stable_argmax":
        threshold = float(keys.integer(entry, key, name, 1, MAX_TIMESTEPS))
    elif rule == "softmax_confidence":
        threshold = keys.number(entry, key, name, lambda x: 0.0 < x <= 1.0, "a confidence in (0, 1]")
    elif rule == "margin":
        threshold = keys.number(entry, key, name, lambda x: 0.0 < x < math.inf, "a finite margin > 0")
    min_timesteps = keys.integer(entry, key, "min_timesteps", 0, MAX_TIMESTEPS)
    source = keys.string(entry, key, "source", EXIT_SOURCES)
    if source == "calibrated":
        _calibration(keys, entry, key)
    return ExitRule(rule, threshold, min_timesteps), source


def _calibration(keys: _Keys, exit_rule: Mapping[str, object], parent_key: str) -> None:
    """The record `masic calibrate` leaves (masic.calibrate.calibrate_artifact)."""
    entry, key = keys.mapping(exit_rule, parent_key, "calibration")
    _accuracy_record(keys, entry, key, ("full_accuracy", "accuracy"))
    keys.integer(entry, key, "candidates", 1, MAX_BYTES)
    steps = keys.integer(entry, key, "max_timesteps", 1, MAX_TIMESTEPS)
    keys.number(entry, key, "mean_timesteps", lambda x: 1.0 <= x <= steps, f"a mean from 1 to {steps} timesteps")


def _weight_layers(
    keys: _Keys, weights: Mapping[str, object], parent_key: str, weights_bytes: int
) -> tuple[Mapping[str, object], ...]:
    rows, key = keys.array(weights, parent_key, "layers")
    for i, row in enumerate(rows):
        row_key = f"{key}[{i}]"
        if not isinstance(row, dict):
            keys.fail(row_key, f"must be a JSON object, got {_show(row)}")
        for name in ("node", "layer", "weight"):
            keys.string(row, row_key, name)
        weight_format = keys.string(row, row_key, "format", tuple(FORMATS))
        scale, scale_key = keys.get(row, row_key, "scale")
        if weight_format == "int8":
            keys.string(row, row_key, "scale")
        elif scale is not None:
            keys.fail(scale_key, f"must be null for a {weight_format} weight, got {_show(scale)}")
        keys.integer(row, row_key, "bytes", 0, weights_bytes)
        keys.integer(row, row_key, "float32_bytes", 0, MAX_BYTES)
    return tuple(rows)


def _accuracy_record(keys: _Keys, entry: Mapping[str, object], key: str, accuracies: tuple[str, ...]) -> None:
    """What every calibration record holds: the data file, its samples, the allowed drop and the accuracies."""
    keys.string(entry, key, "data")
    keys.integer(entry, key, "samples", 1, MAX_BYTES)
    keys.number(entry, key, "max_accuracy_drop", lambda x: 0.0 <= x <= 100.0, "percentage points from 0 to 100")
    for name in accuracies:
        keys.number(entry, key, name, lambda x: 0.0 <= x <= 1.0, "a fraction from 0 to 1")


def _weight_choice(keys: _Keys, weights: Mapping[str, object], parent_key: str) -> None:
    """The record `masic compile --weights auto` leaves (masic.weight_search.manifest_record)."""
    entry, key = keys.mapping(weights, parent_key, "choice")
    keys.string(entry, key, "source", ("auto",))
    _accuracy_record(keys, entry, key, ("float32_accuracy", "accuracy"))
    keys.integer(entry, key, "builds", 1, MAX_BYTES)
    order, order_key = keys.array(entry, key, "order")
    for i, node in enumerate(order):
        if not isinstance(node, str):
            keys.fail(f"{order_key}[{i}]", f"must be a node name, got {_show(node)}")


def _buffers(keys: _Keys, data: Mapping[str, object], arena: int) -> tuple[Mapping[str, object], ...]:
    rows, key = keys.array(data, "", "buffers")
    for i, row in enumerate(rows):
        row_key = f"{key}[{i}]"
        if not isinstance(row, dict):
            keys.fail(row_key, f"must be a JSON object, got {_show(row)}")
        keys.string(row, row_key, "name")
        keys.string(row, row_key, "kind", BUFFER_KINDS)
        keys.string(row, row_key, "layer")
        size = keys.integer(row, row_key, "bytes", 0, arena)
        keys.integer(row, row_key, "offset", 0, arena - size)  # inside the arena
        live, live_key = keys.array(row, row_key, "live")
        if len(live) != 2:
            keys.fail(live_key, f"must be [start, end], got {_show(live)}")
        start = keys.integer_value(live[0], f"{live_key}[0]", 0, MAX_BYTES)
        keys.integer_value(live[1], f"{live_key}[1]", start, MAX_BYTES)
    return tuple(rows)


def _check_files(manifest: Manifest) -> None:
    """The executable and weights.bin are regular files; weights.bin has the recorded size (the loader checks its
    CRC-32 when it starts)."""
    for name in (EXECUTABLE, WEIGHTS_FILE):
        path = manifest.folder / name
        if not path.is_file():
            raise ManifestError(f"{manifest.folder} is not a complete masic artifact: {name} is missing or not a file")
    size = (manifest.folder / WEIGHTS_FILE).stat().st_size
    if size != manifest.weights_bytes:
        raise ManifestError(
            f"{manifest.folder / WEIGHTS_FILE} holds {size} bytes; the manifest's weights.bytes says "
            f"{manifest.weights_bytes} (a truncated copy, or files from two compiles)"
        )
