"""`masic compile --weights F`: the format conv2d and dense weights are stored in, as the user asks for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.artifacts import masic_cli
from tests.e2e.test_cli import FACTORY, _assert_one_line_error


def _smallest_budget(weights: str, tmp_path: Path) -> int:
    """The minimum budget `masic compile --weights` states when it refuses one byte."""
    result = masic_cli("compile", FACTORY, "--weights", weights, "--budget", "1", "-o", str(tmp_path / "out"))
    _assert_one_line_error(result, "use --budget")
    return int(result.stderr.split("use --budget ")[-1].strip())


def test_auto_without_calibration_data_is_refused_asking_for_it() -> None:
    result = masic_cli("compile", FACTORY, "--weights", "auto")
    _assert_one_line_error(result, "--weights auto chooses per layer by accuracy", "--calibrate DATA.npz")


def test_an_unknown_format_lists_the_choices() -> None:
    _assert_one_line_error(masic_cli("compile", FACTORY, "--weights", "int4"), "float32", "float16", "int8", "auto")


@pytest.mark.parametrize(("weights", "dtype"), [("float16", "f16"), ("int8", "i8")])
def test_the_planned_graph_stores_the_weights_in_the_format(weights: str, dtype: str) -> None:
    result = masic_cli("compile", FACTORY, "--weights", weights, "--emit", "plan")
    assert result.returncode == 0, result.stderr
    for weight in ("@0.weight", "@3.weight"):  # the model's two dense layers
        assert f"param {weight} : {dtype}[" in result.stdout, result.stdout
    assert ("weight_scale=" in result.stdout) == (dtype == "i8")


def test_compressed_weights_lower_the_minimum_budget_it_states(tmp_path: Path) -> None:
    minimum = {weights: _smallest_budget(weights, tmp_path) for weights in ("float32", "float16", "int8")}
    assert minimum["int8"] <= minimum["float16"] <= minimum["float32"]
    assert minimum["int8"] < minimum["float32"]
    fits = masic_cli("compile", FACTORY, "--weights", "int8", "--budget", str(minimum["int8"]), "--emit", "plan")
    assert fits.returncode == 0, fits.stderr
    below = masic_cli("compile", FACTORY, "--weights", "float32", "--budget", str(minimum["int8"]), "--emit", "plan")
    _assert_one_line_error(below, "use --budget")


def test_the_manifest_and_inspect_show_each_layers_format(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = masic_cli("compile", FACTORY, "--weights", "int8", "--target", "x86_64", "-o", str(out))
    assert result.returncode == 0, result.stderr
    stored, full = 48 * 20 + 4 * 48 + 10 * 48 + 4 * 10, 4 * (48 * 20 + 10 * 48)  # a byte each, a scale per row
    assert f"(int8: layer weights {stored / full:.2f}x float32's)" in result.stderr.splitlines()[-1]
    layers = json.loads((out / "manifest.json").read_text())["weights"]["layers"]
    assert [row["weight"] for row in layers] == ["0.weight", "3.weight"]
    for row, (outputs, inputs) in zip(layers, [(48, 20), (10, 48)], strict=True):
        assert row["format"] == "int8" and row["scale"] == f"{row['weight']}.scale"
        assert row["bytes"] == outputs * inputs + 4 * outputs and row["float32_bytes"] == 4 * outputs * inputs
    shown = masic_cli("inspect", str(out), "--png", str(tmp_path / "m.png"))
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.split("\n\n")[1].splitlines()
    assert table[0].split()[:3] == ["weight", "format", "scale"]
    assert table[1].split()[:5] == ["@0.weight", "int8", "@0.weight.scale", str(48 * 20 + 4 * 48), str(4 * 48 * 20)]
    assert table[-1].startswith("total")
