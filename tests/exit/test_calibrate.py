"""masic.calibrate: the search on synthetic outputs whose best rule is known, and refusal of bad calibration data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masic.calibrate import format_table, search
from masic.early_exit import decide
from tests.artifacts import fake_manifest, masic_cli, write_fake_artifact

N_EASY, N_HARD, STEPS, CLASSES = 90, 10, 8, 10


def synthetic_outputs() -> tuple[np.ndarray, np.ndarray]:
    """Outputs (N, T, C) and labels where only a margin rule stops early without losing a sample.

    Easy samples: +3 for their class at every step (margin 3, but only 0.69 confidence after step 1).
    Hard samples: step 1 puts a wrong class at 1 and every other class at -10, so the wrong class has a margin of
    only 1 but a confidence of 0.73; from step 2 the right class gains 2 a step (right at step 2, margin 3 at step 3).
    So a margin threshold in (1, 3] stops easy samples after 1 step and hard ones after 3 (mean 1.2, no loss);
    confidence must wait for step 2 on easy samples to skip the hard ones' step 1; the argmax of the hard samples
    changes at step 2, so stable_argmax either stops them wrong or waits 2 steps for everyone.
    """
    labels = np.arange(N_EASY + N_HARD) % CLASSES
    outputs = np.zeros((N_EASY + N_HARD, STEPS, CLASSES), dtype=np.float32)
    for n, label in enumerate(labels):
        if n < N_EASY:
            outputs[n, :, label] = 3.0
        else:
            wrong = (label + 1) % CLASSES
            outputs[n, 0, :] = -10.0
            outputs[n, 0, wrong], outputs[n, 0, label] = 1.0, 0.0
            outputs[n, 1:, label] = 2.0
    return outputs, labels


def test_search_picks_the_margin_rule_that_is_cheapest_without_loss() -> None:
    outputs, labels = synthetic_outputs()
    calibration = search(outputs, labels, max_accuracy_drop=0.5)
    chosen = calibration.chosen
    assert calibration.full.accuracy == 1.0 and calibration.full.mean_timesteps == STEPS
    assert chosen.rule.rule == "margin" and 1.0 < chosen.rule.threshold <= 3.0 and chosen.rule.min_timesteps == 1
    assert (chosen.correct, chosen.mean_timesteps) == (N_EASY + N_HARD, 1.2)
    assert min(c.mean_timesteps for c in calibration.front("softmax_confidence") if c.accuracy == 1.0) > 1.2
    decisions = decide(outputs, chosen.rule)
    assert (decisions.predictions == labels).all() and decisions.timesteps.mean() == 1.2
    table = format_table(calibration)
    assert table.splitlines()[1].split()[:2] == ["none", "-"]
    assert sum(line.startswith("* margin") for line in table.splitlines()) == 1


def test_search_uses_the_allowed_drop() -> None:
    outputs, labels = synthetic_outputs()
    just_below = search(outputs, labels, max_accuracy_drop=9.9)  # may lose 9 samples: the hard ones are 10
    assert just_below.chosen.mean_timesteps == 1.2
    allowed = search(outputs, labels, max_accuracy_drop=10)  # may lose the 10 hard samples: stop all after step 1
    assert (allowed.chosen.mean_timesteps, allowed.chosen.accuracy) == (1.0, 0.9)


def test_search_falls_back_to_every_timestep() -> None:
    """A model whose prediction flips at the last step: no rule may stop before it without losing samples."""
    outputs = np.zeros((20, 4, 2), dtype=np.float32)
    outputs[:, :3, 0] = 1.0
    outputs[:, 3, 1] = 5.0
    calibration = search(outputs, np.ones(20, dtype=np.int64), max_accuracy_drop=0.0)
    assert calibration.chosen.mean_timesteps == 4 and calibration.chosen.accuracy == 1.0


@pytest.fixture
def fake_artifact(tmp_path: Path) -> Path:
    """A complete manifest beside a stand-in executable: calibration data is checked before the executable runs."""
    return write_fake_artifact(tmp_path, fake_manifest((1, 8, 8), (10,), 16))


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


X = np.zeros((4, 1, 8, 8), dtype=np.float32)
Y = np.array([0, 1, 2, 3])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 8, 8)), "y": Y}, "x has shape (4, 8, 8); expected (N, 1, 8, 8) or (N, S, 1, 8, 8)"),
        ({"x": np.zeros((4, 3, 2, 8, 8)), "y": Y}, "x has shape (4, 3, 2, 8, 8)"),
        ({"x": np.zeros((0, 1, 8, 8)), "y": Y[:0]}, "x has shape (0, 1, 8, 8)"),
        ({"x": X, "y": np.array([0, 1, 10, 3])}, "label 10 of sample 2 is outside [0, 10) (the model has 10 outputs)"),
        ({"x": X, "y": np.array([0, -1, 2, 3])}, "label -1 of sample 1 is outside [0, 10)"),
        ({"x": X, "y": Y[:3]}, "x holds 4 samples but y has shape (3,); expected (4,)"),
        ({"x": X, "y": Y.astype(np.float64)}, "y has dtype float64; expected integer class labels"),
        ({"x": X.astype(np.complex64), "y": Y}, "x has dtype complex64; expected real numbers"),
        ({"x": X}, "is not a .npz file with arrays x and y"),
    ],
    ids=[
        "shape",
        "sequence-shape",
        "empty",
        "label-high",
        "label-negative",
        "length",
        "float-labels",
        "complex",
        "no-y",
    ],
)
def test_bad_calibration_data_is_refused(fake_artifact: Path, arrays: dict, message: str) -> None:
    data = write_npz(fake_artifact / "calib.npz", **arrays)
    result = masic_cli("calibrate", str(fake_artifact), "--data", str(data))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"masic: error: calibration data {data}") and message in line


@pytest.mark.parametrize("kind", ["missing", "text", "npy"])
def test_unreadable_calibration_data_is_refused(fake_artifact: Path, kind: str) -> None:
    data = fake_artifact / "calib.npz"
    if kind == "text":
        data.write_text("x,y\n1,2\n")
    elif kind == "npy":
        np.save(data.with_suffix(".npy"), X)
        data.with_suffix(".npy").rename(data)
    result = masic_cli("calibrate", str(fake_artifact), "--data", str(data))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert ("does not exist" if kind == "missing" else "write it with numpy.savez(path, x=x, y=y)") in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--exit-margin", "1", "--exit-confidence", "0.5"], "each choose the exit rule; pass one"),
        (["--min-timesteps", "3"], "--min-timesteps only applies with"),
        (["--max-accuracy-drop", "1"], "--max-accuracy-drop only applies with --calibrate"),
        (["--calibrate", "c.npz", "--exit-stable", "2"], "--calibrate chooses the exit rule"),
        (["--exit-margin", "-1"], "expected a margin > 0"),
        (["--calibrate", "c.npz", "--max-accuracy-drop", "101"], "percentage points from 0 to 100"),
    ],
)
def test_compile_exit_flag_errors(flags: list[str], message: str) -> None:
    result = masic_cli("compile", "tests.norse_models:dense_model", *flags)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("masic: error: ")
    assert message in result.stderr
