"""`masic compile --weights F`: the format conv2d and dense weights are stored in, as the user asks for it."""

from __future__ import annotations

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
