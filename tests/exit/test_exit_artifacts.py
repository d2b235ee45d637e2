"""End to end: calibrate compiled digits SNNs, deploy the rule inside the executable, and compare host with aarch64.

One small digits model (examples/digits.py, a few epochs of the per-step loss) is compiled for x86_64 with
`--calibrate` and for aarch64 without, then calibrated with `masic calibrate` under qemu.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from masic.frontends.norse import install_pickle_aliases
from masic.targets import get_target

from examples.digits import TIMESTEPS, load_splits, train
from masic.codegen.exit_section import read_exit_rule
from masic.early_exit import ExitRule, decide
from tests.artifacts import Run, build_embed_example, import_runtime, masic_cli

pytestmark = pytest.mark.slow
CALIBRATION_SAMPLES, TEST_SAMPLES = 150, 60


@dataclass(frozen=True)
class Digits:
    folder: Path
    model: Path
    calibration: Path  # .npz with x and y
    test_x: Path
    test_y: Path
    host: Path  # artifact compiled with --calibrate
    host_compile: Run


def compile_digits(model: Path, target: str, out: Path, *flags: str) -> Run:
    command = ["--target", target, "--input-shape", "1,8,8", "--timesteps", str(TIMESTEPS), "-o", str(out), *flags]
    result = masic_cli("compile", str(model), *command)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    for name in ("x86_64", "aarch64"):
        target = get_target(name)
        missing = [tool for tool in (target.cc, *target.emulator) if shutil.which(tool) is None]
        if missing:
            pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    folder = tmp_path_factory.mktemp("digits-exit")
    (x_train, y_train), (x_calib, y_calib), (x_test, y_test) = load_splits()
    torch.set_num_threads(1)
    model = train(x_train, y_train, epochs=4, per_step=True)
    install_pickle_aliases()
    torch.save(model, folder / "digits.pt")
    calibration = folder / "calib.npz"
    np.savez(calibration, x=x_calib[:CALIBRATION_SAMPLES], y=y_calib[:CALIBRATION_SAMPLES])
    np.save(folder / "test_x.npy", x_test[:TEST_SAMPLES])
    np.save(folder / "test_y.npy", y_test[:TEST_SAMPLES].astype(np.int64))
    host = folder / "host"
    flags = ("--calibrate", str(calibration), "--max-accuracy-drop", "1")
    compiled = compile_digits(folder / "digits.pt", "x86_64", host, *flags)
    return Digits(
        folder, folder / "digits.pt", calibration, folder / "test_x.npy", folder / "test_y.npy", host, compiled
    )


def run_test_set(artifact: Path, digits: Digits, *flags: str) -> tuple[dict, np.ndarray]:
    """`masic run` on the held-out digits; returns the report and the (N, 2) predictions file."""
    predictions = digits.folder / "predictions.npy"
    predictions.unlink(missing_ok=True)
    result = masic_cli(
        "run", str(artifact), "--input", str(digits.test_x), "--labels", str(digits.test_y),
        "--predictions", str(predictions), *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stats, np.load(predictions)


def full_outputs(artifact: Path, digits: Digits) -> np.ndarray:
    outputs = digits.folder / "outputs.npy"
    run_test_set(artifact, digits, "--no-exit", "--output", str(outputs))
    return np.load(outputs)


def decisions(outputs: np.ndarray, rule: ExitRule) -> np.ndarray:
    decided = decide(outputs, rule)
    return np.stack([decided.predictions, decided.timesteps], axis=1)


def test_compile_with_calibrate_records_the_rule(digits: Digits) -> None:
    manifest = json.loads((digits.host / "manifest.json").read_text())
    entry = manifest["exit_rule"]
    rule = ExitRule.from_manifest(entry)
    assert entry["source"] == "calibrated" and entry["calibration"]["samples"] == CALIBRATION_SAMPLES
    assert entry["calibration"]["accuracy"] >= entry["calibration"]["full_accuracy"] - 0.01
    assert entry["calibration"]["mean_timesteps"] < TIMESTEPS
    assert read_exit_rule(digits.host / "model") == rule
    assert (digits.host / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = digits.host_compile.stdout.splitlines()
    assert stdout[0].split() == ["rule", "parameters", "accuracy", "mean", "timesteps"]
    assert sum(line.startswith(f"* {rule.rule} ") for line in stdout) == 1
    assert any(line.startswith(f"chosen: {rule.rule}, {rule.describe()}: accuracy") for line in stdout)


def run_executable(executable: Path, digits: Digits, *flags: str) -> tuple[dict, np.ndarray]:
    """The executable run directly, as on a device, on the held-out digits: its report and predictions."""
    predictions = digits.folder / "predictions.npy"
    args = ["--input", str(digits.test_x), "--labels", str(digits.test_y), "--predictions", str(predictions), *flags]
    done = subprocess.run([str(executable), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), np.load(predictions)


def test_the_executable_alone_applies_the_calibrated_rule_and_flags_override_it(digits: Digits) -> None:
    rule = ExitRule.from_manifest(json.loads((digits.host / "manifest.json").read_text())["exit_rule"])
    device = digits.folder / "device"
    device.mkdir()
    for name in ("model", "weights.bin"):  # all a device needs; no manifest
        shutil.copy2(digits.host / name, device / name)
    outputs = digits.folder / "device-outputs.npy"
    run_executable(device / "model", digits, "--no-exit", "--output", str(outputs))
    expected = decisions(np.load(outputs), rule)

    stats, rows = run_executable(device / "model", digits)
    assert (stats["exit_rule"], stats["exit_source"]) == (rule.rule, "calibrated")
    np.testing.assert_array_equal(rows, expected)
    assert stats["correct"] == int((expected[:, 0] == np.load(digits.test_y)).sum())
    # the histogram runs up to the most timesteps a sample used
    assert stats["timesteps_histogram"] == np.bincount(expected[:, 1])[1:].tolist()
    assert stats["mean_timesteps"] < TIMESTEPS

    stats, rows = run_test_set(digits.host, digits)  # through `masic run`
    assert stats["exit_source"] == "calibrated"
    np.testing.assert_array_equal(rows, expected)
    stats, rows = run_test_set(digits.host, digits, "--no-exit")
    assert stats["exit_source"] == "command_line" and (rows[:, 1] == TIMESTEPS).all()
    _, rows = run_test_set(digits.host, digits, "--exit-stable", "3", "--min-timesteps", "2")
    np.testing.assert_array_equal(rows, decisions(np.load(outputs), ExitRule("stable_argmax", 3.0, 2)))


def test_the_libraries_apply_the_calibrated_rule(digits: Digits, tmp_path: Path) -> None:
    """masic calibrate wrote the rule into lib/libmasic_model.so (masic_runtime) and .a (examples/embed) too."""
    _, expected = run_test_set(digits.host, digits)
    x = np.load(digits.test_x)
    with import_runtime(digits.host).Model(str(digits.host)) as model:
        rows = [(r["prediction"], r["steps_run"]) for r in (model.run(sample, steps=TIMESTEPS) for sample in x)]
    np.testing.assert_array_equal(rows, expected)
    assert (expected[:, 1] < TIMESTEPS).any()  # the rule stops some samples early
    np.repeat(x[:1], TIMESTEPS, axis=0).tofile(tmp_path / "frames.raw")
    predict = build_embed_example(digits.host, "cc", tmp_path)
    run = subprocess.run([str(predict), str(digits.host / "weights.bin"), str(tmp_path / "frames.raw")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    first = next(line for line in run.stdout.splitlines() if line.startswith("prediction"))
    assert first == f"prediction {expected[0, 0]} after {expected[0, 1]} steps"


def test_host_and_aarch64_make_the_same_exit_decisions(digits: Digits) -> None:
    """Their kernels sum in different orders, so outputs agree to rounding, not bit for bit: calibration of each
    picks the same rule with thresholds equal to rounding, and every sample stops at the same step either way."""
    arm = digits.folder / "aarch64"
    compile_digits(digits.model, "aarch64", arm)
    calibrated = masic_cli("calibrate", str(arm), "--data", str(digits.calibration), "--max-accuracy-drop", "1")
    assert calibrated.returncode == 0, calibrated.stderr
    host_rule = ExitRule.from_manifest(json.loads((digits.host / "manifest.json").read_text())["exit_rule"])
    arm_rule = ExitRule.from_manifest(json.loads((arm / "manifest.json").read_text())["exit_rule"])
    assert (arm_rule.rule, arm_rule.min_timesteps) == (host_rule.rule, host_rule.min_timesteps)
    assert arm_rule.threshold == pytest.approx(host_rule.threshold, rel=1e-5)

    host_outputs, arm_outputs = full_outputs(digits.host, digits), full_outputs(arm, digits)
    np.testing.assert_allclose(arm_outputs, host_outputs, rtol=1e-5, atol=1e-5 * np.abs(host_outputs).max())
    host_stats, host_rows = run_test_set(digits.host, digits)
    arm_stats, arm_rows = run_test_set(arm, digits)
    np.testing.assert_array_equal(arm_rows, host_rows)
    assert arm_stats["timesteps_histogram"] == host_stats["timesteps_histogram"]
    _, arm_rows_with_host_rule = run_test_set(arm, digits, *host_rule.loader_flags())
    np.testing.assert_array_equal(arm_rows_with_host_rule, host_rows)
    assert len(set(host_rows[:, 1].tolist())) >= 2, "the test set should exit at different steps"
