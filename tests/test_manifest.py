"""Altered artifacts: every key of a real manifest deleted, retyped, set out of range or to NaN is refused by
`masic run`, `inspect` and `calibrate` in one line naming the key, exit status 2, and nothing runs; the program
that runs an artifact comes from masic's target description, never from the manifest."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from masic.frontends.norse import import_norse
from masic.targets import get_target

from masic import manifest as manifest_module
from masic.cli import main
from masic.codegen.artifact import generate_c, make_manifest
from masic.early_exit import ExitRule
from masic.ir.weight_formats import FLOAT32_WEIGHTS, WeightChoice
from masic.manifest import read_manifest
from masic.passes import PassOptions
from masic.weight_search import Trial, WeightSearch, manifest_record
from tests.artifacts import write_fake_artifact
from tests.norse_models import MODELS
from tests.pipelines import planned

Key = tuple[str | int, ...]
# Keys whose strings are drawn from a fixed set (or a pattern): a string outside it is out of range.
ENUMERATED = {
    "format",
    "target.name",
    "weights.file",
    "input.dtype",
    "output.dtype",
    "exit_rule.rule",
    "exit_rule.source",
    "buffers[0].kind",
    "weights.layers[0].format",
    "weights.choice.source",
}
# Keys the writer leaves out of some artifacts: without them a manifest is complete.
OPTIONAL = {"weights.choice"}  # only --weights auto records its choice
# A model run that masic should never start leaves this file behind.
MARKER_SCRIPT = '#!/bin/sh\necho "$0 $*" >> "$(dirname "$0")/../ran.txt"\n'


def _real_manifest(exit_rule: ExitRule, budget: int | None, weights: WeightChoice = FLOAT32_WEIGHTS) -> dict:
    """The manifest masic writes for the dense test model (weights.bin is written and discarded)."""
    factory, shape = MODELS["dense"]
    options = PassOptions(budget=budget, alignment=64, weights=weights)
    graph = planned(import_norse(factory(), shape, timesteps=8), options)
    with tempfile.TemporaryDirectory() as scratch:
        _, kernels, weights = generate_c(graph, exit_rule, Path(scratch) / "weights.bin")
    return make_manifest(graph, get_target("x86_64"), exit_rule, budget, weights, [k.symbol for k in kernels])


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """Real manifests covering every key the writer writes: a budget and a margin rule; a calibrated confidence
    rule with its record; a stable-argmax rule without a budget, its weights int8 (with their scales) and the
    record of --weights auto."""
    margin = _real_manifest(ExitRule("margin", 2.5, 3), budget=1 << 20)
    calibrated = _real_manifest(ExitRule("softmax_confidence", 0.9, 2), budget=None)
    calibrated["exit_rule"] |= {
        "source": "calibrated",
        "calibration": {
            "data": "calib.npz",
            "samples": 40,
            "max_accuracy_drop": 0.5,
            "full_accuracy": 0.9,
            "accuracy": 0.875,
            "max_timesteps": 8,
            "mean_timesteps": 3.5,
            "candidates": 900,
        },
    }
    stable = _real_manifest(ExitRule("stable_argmax", 3, 1), budget=None, weights=WeightChoice("int8"))
    float32, chosen = Trial(("float32", "float32"), 36), Trial(("int8", "int8"), 35)
    found = WeightSearch(("0", "3"), ("3", "0"), float32, chosen, (float32, chosen), 40, 2.5, 24)
    stable["weights"]["choice"] = manifest_record(found, Path("calib.npz"))  # as --weights auto records it
    return {"margin": margin, "calibrated": calibrated, "stable": stable}


def _name(key: Key) -> str:
    """A key as the reader names it: exit_rule.min_timesteps, buffers[0].live[1]."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _keys(value: object, key: Key = ()) -> Iterator[Key]:
    """Every key under `value`: the members of objects; every element of short lists and the first of long ones
    (the rows of `buffers` and the names of `kernels` are alike)."""
    if isinstance(value, dict):
        for name, member in value.items():
            yield (*key, name)
            yield from _keys(member, (*key, name))
    elif isinstance(value, list):
        for i in range(len(value) if len(value) <= 3 else 1):
            yield (*key, i)
            yield from _keys(value[i], (*key, i))


def _other_type(value: object) -> object:
    if isinstance(value, str):
        return 7
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "0.5"
    if isinstance(value, list):
        return {"0": 1}
    if isinstance(value, dict):
        return [1]
    return "none"


def _out_of_range(key: Key, value: object) -> list[object]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [-1, 2**64]
    if isinstance(value, float):
        return [-1.0, math.inf]
    if isinstance(value, str) and _name(key) in ENUMERATED:
        return ["no-such-value"]
    return []


def _lookup(data: dict, key: Key) -> tuple[object, str | int]:
    parent = data
    for part in key[:-1]:
        parent = parent[part]
    return parent, key[-1]


def alterations(manifest: dict, only: str | None = None) -> Iterator[tuple[str, str, dict]]:
    """(key, what was done, altered manifest) for every key (under `only`, if given)."""
    for key in _keys(manifest):
        if only and key[0] != only:
            continue
        parent, last = _lookup(manifest, key)
        value = parent[last]
        changes = [("type", _other_type(value)), ("NaN", math.nan)]
        changes += [("range", v) for v in _out_of_range(key, value)]
        if isinstance(last, str) and _name(key) not in OPTIONAL:
            changes.append(("missing", None))
        for kind, new in changes:
            altered = copy.deepcopy(manifest)
            altered_parent, _ = _lookup(altered, key)
            if kind == "missing":
                del altered_parent[last]
            else:
                altered_parent[last] = new
            yield _name(key), f"{kind} {json.dumps(new) if kind != 'missing' else ''}".strip(), altered


def _cases(manifests: dict[str, dict]) -> list[tuple[str, str, dict]]:
    """Every key of the margin manifest; the exit rule's keys of the other two, and the int8 weights' keys."""
    return [
        *alterations(manifests["margin"]),
        *alterations(manifests["calibrated"], only="exit_rule"),
        *alterations(manifests["stable"], only="exit_rule"),
        *alterations(manifests["stable"], only="weights"),
    ]


def _commands(folder: Path, tmp_path: Path) -> dict[str, list[str]]:
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(20, dtype=np.float32))
    return {
        "run": ["run", str(folder), "--input", str(x)],
        "inspect": ["inspect", str(folder), "--png", str(tmp_path / "m.png")],
        "calibrate": ["calibrate", str(folder), "--data", str(tmp_path / "calib.npz")],
    }


def _refusal(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, list[str]]:
    status = main(args)
    return status, capsys.readouterr().err.strip().splitlines()


def test_the_real_manifests_are_accepted(manifests: dict[str, dict], tmp_path: Path) -> None:
    for name, manifest in manifests.items():
        folder = write_fake_artifact(tmp_path / name, manifest)
        checked = read_manifest(folder)
        assert checked.target is get_target("x86_64") and checked.input_shape == (20,)
        assert checked.exit_rule.rule == manifest["exit_rule"]["rule"]
        assert main(["inspect", str(folder), "--png", str(tmp_path / f"{name}.png")]) == 0


def test_every_altered_key_is_refused_in_one_line_naming_it(
    manifests: dict[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _cases(manifests)
    assert len(cases) > 200  # about 60 keys, three to five ways each
    folder = tmp_path / "artifact"
    commands = _commands(folder, tmp_path)
    failures = []
    for key, change, altered in cases:
        write_fake_artifact(folder, altered, MARKER_SCRIPT)
        for command, args in commands.items():
            status, lines = _refusal(capsys, args)
            one_line = len(lines) == 1 and lines[0].startswith("masic: error: ")
            if not (status == 2 and one_line and key in lines[0]):
                failures.append(f"{command}, {key} {change}: status {status}, {lines}")
    assert not failures, f"{len(failures)} of {3 * len(cases)} not refused as expected:\n" + "\n".join(failures[:20])
    assert not (tmp_path / "ran.txt").exists(), "an altered artifact was run"


def _set(manifest: dict, key: str, value: object) -> dict:
    altered = copy.deepcopy(manifest)
    *parents, last = key.split(".")
    entry = altered
    for part in parents:
        entry = entry[part]
    entry[last] = value
    return altered


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("buffers", "rows", "buffers must be a JSON list"),
        ("lower_bound_bytes", 10**9, "lower_bound_bytes must be an integer from 0 to"),  # above the arena
        ("budget_bytes", 1, "budget_bytes must be an integer from"),  # below the arena
        ("input.shape", [], "input.shape must list at least one dimension"),
        ("input.shape", [2**40, 2**40], "input.shape holds"),
        ("weights.pieces", -1, "weights.pieces must be an integer from 0 to"),
        ("exit_rule.min_timesteps", True, "exit_rule.min_timesteps must be an integer"),
        ("exit_rule.margin", 0, "exit_rule.margin must be a finite margin > 0"),
    ],
)
def test_values_of_the_right_type_but_inconsistent_are_refused(
    manifests: dict[str, dict], tmp_path: Path, key: str, value: object, message: str
) -> None:
    folder = write_fake_artifact(tmp_path / "a", _set(manifests["margin"], key, value))
    with pytest.raises(manifest_module.ManifestError, match=message.replace("[", r"\[")):
        read_manifest(folder)


@pytest.mark.parametrize(
    ("alter", "message"),
    [
        (lambda f: (f / "manifest.json").write_text('{"format": "masic-artifact/3", '), "not a masic artifact folder"),
        (lambda f: (f / "manifest.json").write_bytes(b'{"name": "\xff"}'), "not UTF-8 text"),
        (lambda f: (f / "manifest.json").write_text("[" * 100_000), "maximum recursion depth exceeded"),
        (lambda f: (f / "manifest.json").write_text("[]"), "format must be 'masic-artifact/3', got not a JSON"),
        (lambda f: (f / "manifest.json").write_text('{"format": 1}'), "format must be 'masic-artifact/3', got 1"),
        (lambda f: (f / "weights.bin").unlink(), "weights.bin is missing or not a file"),
        (lambda f: (f / "model").unlink(), "model is missing or not a file"),
        (lambda f: (f / "weights.bin").write_bytes(b"\0" * 10), "holds 10 bytes; the manifest's weights.bytes says"),
    ],
    ids=["truncated-json", "not-utf8", "deep", "not-object", "format", "no-weights", "no-model", "weights-size"],
)
def test_an_altered_folder_is_refused(
    manifests: dict[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str], alter, message: str
) -> None:
    folder = write_fake_artifact(tmp_path / "a", manifests["margin"], MARKER_SCRIPT)
    alter(folder)
    for args in _commands(folder, tmp_path).values():
        status, lines = _refusal(capsys, args)
        assert status == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "ran.txt").exists()


def test_a_manifest_that_is_a_fifo_or_too_large_is_refused(
    manifests: dict[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_fake_artifact(tmp_path / "a", manifests["margin"])
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 100)
    status, lines = _refusal(capsys, ["inspect", str(folder)])
    assert status == 2 and "larger than 100 bytes" in lines[0]
    (folder / "manifest.json").unlink()
    os.mkfifo(folder / "manifest.json")  # with no writer, reading it would wait forever
    status, lines = _refusal(capsys, ["inspect", str(folder)])
    assert status == 2 and "a FIFO, device or socket, not a regular file" in lines[0]


def test_run_starts_the_targets_own_emulator_not_the_manifests(
    manifests: dict[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifest names a script as the x86_64 target's emulator: masic runs the executable natively instead."""
    emulator = tmp_path / "bin" / "evil"
    emulator.parent.mkdir()
    emulator.write_text('#!/bin/sh\ntouch "$(dirname "$0")/../emulator-ran"\n')
    emulator.chmod(0o755)
    manifest = _set(manifests["margin"], "target.emulator", [str(emulator)])
    folder = write_fake_artifact(tmp_path / "a", manifest, MARKER_SCRIPT)
    assert main(_commands(folder, tmp_path)["run"]) == 0
    assert not (tmp_path / "emulator-ran").exists()
    assert (tmp_path / "ran.txt").read_text().startswith(str(folder / "model"))  # started directly

    foreign = _set(manifest, "target.name", "pdp11")
    write_fake_artifact(folder, foreign, MARKER_SCRIPT)
    (tmp_path / "ran.txt").unlink()
    status, lines = _refusal(capsys, _commands(folder, tmp_path)["run"])
    assert status == 2 and lines == [
        f"masic: error: {folder / 'manifest.json'}: target.name 'pdp11' is not a target masic knows "
        "(aarch64, cortex-a72, cortex-a76, x86_64)"
    ]
    assert not (tmp_path / "emulator-ran").exists() and not (tmp_path / "ran.txt").exists()


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ([{"name": "a", "shape": [4, 2]}, {"name": "b", "shape": [13]}], "input.ports must name two or more"),
        ([{"name": "a", "shape": [20]}], "input.ports must name two or more distinct parts"),
        ([{"name": "a", "shape": [10]}, {"name": "a", "shape": [10]}], "input.ports must name two or more distinct"),
        ([{"name": "a", "shape": [4, 2]}, {"shape": [12]}], r"input.ports\[1\].name is missing"),
        ([{"name": "a", "shape": [4, 0]}, {"name": "b", "shape": [20]}], r"input.ports\[0\].shape\[1\] must be"),
        ([["a", [20]], {"name": "b", "shape": [0]}], r"input.ports\[0\] must be a JSON object"),
        ({"a": [20]}, "input.ports must be a JSON list"),
    ],
)
def test_ports_are_checked(
    manifests: dict[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str], ports: object, message: str
) -> None:
    """The optional ports of the input (output) name parts whose sizes add up to its size (`masic.ir.graph.Port`);
    `inspect` lists them."""
    manifest = copy.deepcopy(manifests["margin"])
    manifest["input"]["ports"] = [{"name": "a", "shape": [4, 2]}, {"name": "b", "shape": [12]}]
    folder = write_fake_artifact(tmp_path / "good", manifest)
    assert [(p.name, p.shape) for p in read_manifest(folder).input_ports] == [("a", (4, 2)), ("b", (12,))]
    assert main(["inspect", str(folder)]) == 0 and "inputs     a[4, 2], b[12]" in capsys.readouterr().out
    manifest["input"]["ports"] = ports
    status, lines = _refusal(capsys, ["inspect", str(write_fake_artifact(tmp_path / "bad", manifest))])
    assert status == 2 and len(lines) == 1 and re.search(message, lines[0]), lines
