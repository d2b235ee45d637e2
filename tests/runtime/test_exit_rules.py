"""Exit rules and labelled (multi-sample) runs of loader.c with the fake model, on the host and on ARM64 under qemu.

Every decision is checked against masic.early_exit, the numpy model of the loader that calibration relies on,
applied to the loader's own per-step outputs: predictions and timesteps must agree exactly, even for thresholds that
sit exactly on an observed score.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_model import DEFAULT_TIMESTEPS, INPUT_SHAPE, reference_outputs
from runtime_harness import RunResult, Target, run_executable, run_ok, save

from masic.codegen.exit_section import SECTION, ExitSectionError, block_offset, read_exit_rule, write_exit_rule
from masic.early_exit import ExitRule, accumulate, decide, step_scores

pytestmark = pytest.mark.slow

N_SAMPLES, STEPS = 24, 8


def sequences(n: int = N_SAMPLES, steps: int = STEPS, seed: int = 0) -> np.ndarray:
    """Inputs in [-1, 1): their sums change sign from step to step, so the fake model's argmax moves around."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, steps, *INPUT_SHAPE)).astype(np.float32)


def labelled_run(
    target: Target, executable: Path, folder: Path, x: np.ndarray, y: np.ndarray, *flags: str
) -> tuple[RunResult, np.ndarray]:
    """Runs a labelled input; returns the run and its (N, 2) predictions file."""
    x_path, y_path, p_path = save(folder, "x.npy", x), save(folder, "y.npy", y), folder / "p.npy"
    result = run_ok(target, executable, "--input", x_path, "--labels", y_path, "--predictions", p_path, *flags)
    return result, np.load(p_path)


def full_outputs(target: Target, executable: Path, folder: Path, x: np.ndarray) -> np.ndarray:
    """Every step's output (N, T, 4), from a run with --no-exit."""
    out = folder / "full.npy"
    labelled_run(target, executable, folder, x, np.zeros(len(x), dtype=np.int64), "--no-exit", "--output", str(out))
    return np.load(out)


def expected_rows(outputs: np.ndarray, rule: ExitRule) -> np.ndarray:
    decisions = decide(outputs, rule)
    return np.stack([decisions.predictions, decisions.timesteps], axis=1)


def rules_to_check(outputs: np.ndarray) -> list[ExitRule]:
    """For each rule: thresholds exactly on observed scores (the hardest case for an exact model) and between them,
    with minima 1 and 3."""
    acc = accumulate(outputs)
    rules = []
    for name in ("softmax_confidence", "margin"):
        scores = np.unique(step_scores(acc, name))
        picked = scores[np.linspace(len(scores) // 4, len(scores) - 2, 3).astype(int)]
        thresholds = [*picked, *((picked + scores[np.searchsorted(scores, picked) + 1]) / 2)]
        rules += [ExitRule(name, float(t), m) for t in thresholds for m in (1, 3) if t > 0]
    rules += [ExitRule("stable_argmax", float(k), m) for k in (1, 2, 3) for m in (1, 3)]
    return rules


def test_every_rule_decides_as_numpy_predicts(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x = sequences()
    outputs = full_outputs(target, fake_executable, tmp_path, x)
    np.testing.assert_allclose(outputs[0], reference_outputs(x[0], STEPS), rtol=1e-6)
    predictions_seen, steps_seen = set(), set()
    for rule in rules_to_check(outputs):
        _, rows = labelled_run(
            target, fake_executable, tmp_path, x, np.zeros(N_SAMPLES, np.int64), *rule.loader_flags()
        )
        np.testing.assert_array_equal(rows, expected_rows(outputs, rule), err_msg=str(rule))
        predictions_seen |= set(rows[:, 0].tolist())
        steps_seen |= set(rows[:, 1].tolist())
    assert len(predictions_seen) >= 2 and len(steps_seen) >= 4, "the inputs must exercise the rules"


def test_labelled_run_reports_accuracy_histogram_and_time(
    target: Target, fake_executable: Path, tmp_path: Path
) -> None:
    x = sequences()
    outputs = full_outputs(target, fake_executable, tmp_path, x)
    rule = ExitRule("margin", 1.5, 2)
    decisions = decide(outputs, rule)
    labels = decisions.predictions.copy()
    labels[:5] = (labels[:5] + 1) % 4  # five wrong
    result, rows = labelled_run(target, fake_executable, tmp_path, x, labels.astype(np.int32), *rule.loader_flags())

    np.testing.assert_array_equal(rows, expected_rows(outputs, rule))
    histogram = np.bincount(decisions.timesteps)[1:]  # up to the most timesteps a sample used
    report = result.report
    assert report["samples"] == N_SAMPLES and report["correct"] == N_SAMPLES - 5
    assert report["accuracy"] == pytest.approx((N_SAMPLES - 5) / N_SAMPLES, abs=1e-6)
    assert report["timesteps_histogram"] == histogram.tolist()
    assert report["mean_timesteps"] == pytest.approx(decisions.timesteps.mean(), abs=1e-6)
    assert report["max_timesteps"] == STEPS
    assert (report["exit_rule"], report["exit_params"]) == ("margin", {"margin": 1.5, "min_timesteps": 2})
    assert report["exit_source"] == "command_line"
    assert 0 < report["wall_s_per_sample"] <= report["wall_s"]
    lines = result.stdout.splitlines()
    assert lines[0] == f"accuracy: {100 * (N_SAMPLES - 5) / N_SAMPLES:.2f}% ({N_SAMPLES - 5} of {N_SAMPLES} samples)"
    assert lines[1].startswith(f"timesteps: mean {decisions.timesteps.mean():.2f} of {STEPS}")
    assert "exit rule: margin >= 1.5 from step 2 (command_line)" in lines[1]
    assert lines[2] == "timesteps used:"
    rows_shown = {int(line.split()[0]): int(line.split()[1]) for line in lines[3:-2]}
    assert rows_shown == {t: int(histogram[t - 1]) for t in range(min(rows_shown), max(rows_shown) + 1)}
    assert lines[-2].startswith("time per sample: ")


def test_state_is_reset_between_samples(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    """The fake model's state grows by 1 each step: a loader that forgot to reset it would change later samples."""
    one = sequences(n=1, seed=3)
    x = np.concatenate([one, sequences(n=2, seed=4), one])
    outputs = full_outputs(target, fake_executable, tmp_path, x)
    np.testing.assert_array_equal(outputs[0], outputs[3])
    np.testing.assert_allclose(outputs[3], reference_outputs(one[0], STEPS), rtol=1e-6)
    _, rows = labelled_run(target, fake_executable, tmp_path, x, np.zeros(4, np.int64), "--exit-stable", "2")
    np.testing.assert_array_equal(rows[0], rows[3])


def test_samples_presented_at_every_step(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x = sequences(n=3)[:, 0]  # (N, *input): each sample is presented at every one of the default timesteps
    outputs = full_outputs(target, fake_executable, tmp_path, x)
    assert outputs.shape == (3, DEFAULT_TIMESTEPS, 4)
    for sample, got in zip(x, outputs, strict=True):
        np.testing.assert_allclose(got, reference_outputs(sample, DEFAULT_TIMESTEPS), rtol=1e-6)


def test_output_of_a_labelled_run_is_nan_after_each_exit(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x = sequences()
    outputs = full_outputs(target, fake_executable, tmp_path, x)
    out = tmp_path / "early.npy"
    _, rows = labelled_run(
        target, fake_executable, tmp_path, x, np.zeros(N_SAMPLES, np.int64), "--exit-stable", "2", "--output", str(out)
    )
    early = np.load(out)
    assert early.shape == outputs.shape and early.dtype == np.float32
    for sample, steps in enumerate(rows[:, 1]):
        np.testing.assert_array_equal(early[sample, :steps], outputs[sample, :steps])
        assert np.isnan(early[sample, steps:]).all()


def test_calibrated_rule_written_into_the_executable(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    patched = Path(shutil.copy2(fake_executable, tmp_path / "model"))
    shutil.copy2(fake_executable.parent / "weights.bin", tmp_path)
    assert read_exit_rule(patched) is None
    x = sequences()
    outputs = full_outputs(target, patched, tmp_path, x)
    rule = ExitRule("stable_argmax", 2.0, 3)
    write_exit_rule(patched, rule)
    assert read_exit_rule(patched) == rule

    result, rows = labelled_run(target, patched, tmp_path, x, np.zeros(N_SAMPLES, np.int64))
    assert (result.report["exit_rule"], result.report["exit_source"]) == ("stable_argmax", "calibrated")
    np.testing.assert_array_equal(rows, expected_rows(outputs, rule))
    result, rows = labelled_run(target, patched, tmp_path, x, np.zeros(N_SAMPLES, np.int64), "--min-timesteps", "5")
    assert result.report["exit_source"] == "command_line"
    np.testing.assert_array_equal(rows, expected_rows(outputs, ExitRule("stable_argmax", 2.0, 5)))
    result, rows = labelled_run(target, patched, tmp_path, x, np.zeros(N_SAMPLES, np.int64), "--no-exit")
    assert result.report["exit_rule"] == "none" and (rows[:, 1] == STEPS).all()
    single = run_ok(target, patched, "--input", save(tmp_path, "one.npy", x[0])).report
    assert (single["exit_source"], single["timesteps"]) == ("calibrated", expected_rows(outputs, rule)[0, 1])


def test_a_damaged_exit_section_is_refused(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    damaged = Path(shutil.copy2(fake_executable, tmp_path / "model"))
    shutil.copy2(fake_executable.parent / "weights.bin", tmp_path)
    data = bytearray(damaged.read_bytes())
    data[block_offset(bytes(data), damaged)] ^= 0xFF  # the first byte of the magic
    damaged.write_bytes(bytes(data))
    result = run_executable(target, damaged, ["--input", save(tmp_path, "x.npy", sequences(n=1)[0])])
    assert result.returncode == 1 and f"the {SECTION} section is damaged" in result.stderr
    with pytest.raises(ExitSectionError, match="unknown format"):
        read_exit_rule(damaged)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(3, np.int64), "have shape (3,); expected (4,)"),
        (np.array([0, 1, 4, 0]), "sample 2 has label 4, outside [0, 4)"),
        (np.array([0, -1, 0, 0], np.int32), "sample 1 has label -1"),
        (np.zeros(4, np.float32), "dtype '<f4'"),
        (np.zeros((4, 1), np.int64), "have shape (4, 1)"),
    ],
    ids=["length", "too-large", "negative", "float", "2-d"],
)
def test_bad_labels_are_refused(
    target: Target, fake_executable: Path, tmp_path: Path, labels: np.ndarray, message: str
) -> None:
    x_path, y_path = save(tmp_path, "x.npy", sequences(n=4)), save(tmp_path, "y.npy", labels)
    result = run_executable(target, fake_executable, ["--input", x_path, "--labels", y_path])
    assert result.returncode == 2 and len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("model: error: labels ") and message in result.error_lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exit-margin", "1", "--exit-confidence", "0.5"], "--exit-margin and --exit-confidence choose different"),
        (["--no-exit", "--exit-stable", "2"], "--no-exit and --exit-stable choose different"),
        (["--no-exit=1"], "--no-exit takes no value"),
        (["--exit-margin", "0"], "--exit-margin expects a number with M > 0"),
        (["--exit-margin", "inf"], "--exit-margin expects"),
        (["--exit-stable", "0"], "--exit-stable expects an integer from 1"),
        (["--predictions", "p.npy"], "--predictions needs --labels"),
    ],
)
def test_exit_usage_errors(
    target: Target, fake_executable: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    x_path = save(tmp_path, "x.npy", sequences(n=1)[0])
    result = run_executable(target, fake_executable, [*args, "--input", x_path])
    assert result.returncode == 2 and len(result.error_lines) == 1, result.stderr
    assert message in result.error_lines[0]


def test_labelled_input_of_the_wrong_shape_is_refused(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x_path = save(tmp_path, "x.npy", np.zeros((4, 3, 2), np.float32))
    y_path = save(tmp_path, "y.npy", np.zeros(4, np.int64))
    result = run_executable(target, fake_executable, ["--input", x_path, "--labels", y_path])
    assert result.returncode == 2
    assert "has shape (4, 3, 2); with --labels expected (N, 2, 3) (N >= 1 samples) or (N, S, 2, 3)" in result.stderr
