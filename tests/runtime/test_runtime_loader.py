"""End-to-end tests of loader.c, linked with the hand-written fake model, on the host and on ARM64 under qemu."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_model import (
    DEFAULT_TIMESTEPS,
    INPUT_SHAPE,
    build_artifact,
    confidences,
    reference_outputs,
    weights_bin,
)
from runtime_harness import RunResult, Target, run_executable, run_ok, save

pytestmark = pytest.mark.slow

REPORT_KEYS = {
    "model",
    "prediction",
    "timesteps",
    "max_timesteps",
    "exited_early",
    "exit_rule",
    "confidence",
    "wall_s",
    "load_s",
    "arena_bytes",
    "weights_bytes",
    "peak_rss_bytes",
    "threads",
}


def random_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values in [0, 1): every sample sums to more than 0, so the fake model's confidence grows step by step."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def assert_one_line_error(result: RunResult, exit_code: int, *fragments: str) -> None:
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("model: error: ")
    for fragment in fragments:
        assert fragment in line


def copy_executable(executable: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(executable, folder / "model"))


def exit_threshold(outputs: np.ndarray, stop_step: int) -> float:
    """A confidence threshold the summed outputs reach first at `stop_step` (1-based), well clear of rounding."""
    seen = confidences(outputs)
    assert all(a < b for a, b in itertools.pairwise(seen)), "the test needs a growing confidence"
    return (seen[stop_step - 2] + seen[stop_step - 1]) / 2


def test_outputs_of_every_step_match_numpy(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x = random_input((4, *INPUT_SHAPE))
    y_path = tmp_path / "y.npy"
    result = run_ok(target, fake_executable, "--input", save(tmp_path, "x.npy", x), "--output", y_path)

    y = np.load(y_path)
    assert y.dtype == np.float32 and y.shape == (4, 4)
    np.testing.assert_allclose(y, reference_outputs(x, 4), rtol=1e-6)
    assert result.report["timesteps"] == result.report["max_timesteps"] == 4


def test_one_sample_is_presented_at_every_step(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x = random_input(INPUT_SHAPE)
    one_path, seq_path = tmp_path / "one.npy", tmp_path / "seq.npy"
    run_ok(target, fake_executable, "--input", save(tmp_path, "x.npy", x), "--output", one_path)
    repeated = save(tmp_path, "repeated.npy", np.stack([x] * DEFAULT_TIMESTEPS))
    run_ok(target, fake_executable, "--input", repeated, "--output", seq_path)

    one = np.load(one_path)
    assert one.shape == (DEFAULT_TIMESTEPS, 4)
    np.testing.assert_allclose(one, reference_outputs(x, DEFAULT_TIMESTEPS), rtol=1e-6)
    np.testing.assert_array_equal(one, np.load(seq_path))


def test_timesteps_option(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    one = save(tmp_path, "one.npy", random_input(INPUT_SHAPE))
    sequence = random_input((4, *INPUT_SHAPE), seed=1)
    seq = save(tmp_path, "seq.npy", sequence)
    y_path = tmp_path / "y.npy"

    assert run_ok(target, fake_executable, "--input", one, "--timesteps", "7").report["timesteps"] == 7
    run_ok(target, fake_executable, "--input", seq, "--timesteps=2", "--output", y_path)
    np.testing.assert_allclose(np.load(y_path), reference_outputs(sequence, 2), rtol=1e-6)
    too_many = run_executable(target, fake_executable, ["--input", seq, "--timesteps", "5"])
    assert_one_line_error(too_many, 2, "--timesteps 5", "4 samples", str(seq))


def test_exit_confidence_stops_where_numpy_predicts(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x = random_input(INPUT_SHAPE)
    threshold = exit_threshold(reference_outputs(x, 8), stop_step=3)
    x_path, y_path = save(tmp_path, "x.npy", x), tmp_path / "y.npy"
    args = ["--input", x_path, "--timesteps", "8", "--exit-confidence", repr(threshold), "--output", y_path]

    report = run_ok(target, fake_executable, *args).report
    assert (report["timesteps"], report["max_timesteps"], report["exited_early"]) == (3, 8, True)
    assert report["exit_rule"] == "softmax_confidence"
    assert report["confidence"] >= threshold
    assert np.load(y_path).shape == (3, 4)

    delayed = run_ok(target, fake_executable, *args, "--min-timesteps", "5").report
    assert (delayed["timesteps"], delayed["exited_early"]) == (5, True)

    never = run_ok(target, fake_executable, "--input", x_path, "--timesteps", "8", "--exit-confidence", "1").report
    assert (never["timesteps"], never["exited_early"]) == (8, False)


def test_exit_rule_of_the_model_applies_by_default(target: Target, tmp_path: Path) -> None:
    x = random_input(INPUT_SHAPE)
    threshold = exit_threshold(reference_outputs(x, DEFAULT_TIMESTEPS), stop_step=3)
    defines = {
        "FAKE_EXIT_RULE": "MASIC_EXIT_SOFTMAX_CONFIDENCE",
        "FAKE_EXIT_THRESHOLD": repr(threshold),
        "FAKE_EXIT_MIN_TIMESTEPS": "2",
    }
    executable = build_artifact(target, tmp_path / "artifact", defines)
    x_path = save(tmp_path, "x.npy", x)

    report = run_ok(target, executable, "--input", x_path).report
    assert (report["timesteps"], report["exited_early"], report["exit_rule"]) == (3, True, "softmax_confidence")
    assert run_ok(target, executable, "--input", x_path, "--min-timesteps", "4").report["timesteps"] == 4


def test_report(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x = random_input(INPUT_SHAPE)
    result = run_ok(target, fake_executable, "--input", save(tmp_path, "x.npy", x), "--threads", "3")
    expected_prediction = int(np.argmax(reference_outputs(x, DEFAULT_TIMESTEPS).sum(axis=0)))

    assert result.stdout.splitlines()[0] == f"prediction: {expected_prediction}"
    report = result.report
    assert set(report) >= REPORT_KEYS
    assert report["model"] == 'fake "2x3" model'
    assert report["prediction"] == expected_prediction
    assert (report["timesteps"], report["max_timesteps"], report["exited_early"]) == (5, 5, False)
    assert report["exit_rule"] == "none"
    assert 0.25 <= report["confidence"] <= 1
    assert (report["arena_bytes"], report["weights_bytes"], report["threads"]) == (256, 32, 3)
    assert 0 <= report["wall_s"] < 10 and 0 <= report["load_s"] < 10
    assert 1 << 16 < report["peak_rss_bytes"] < 1 << 32


def test_runs_alone_from_another_folder(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    moved = copy_executable(fake_executable, tmp_path / "elsewhere")
    shutil.copy2(fake_executable.parent / "weights.bin", moved.parent)
    x_path = save(tmp_path, "x.npy", random_input(INPUT_SHAPE))
    result = run_executable(target, moved, ["--input", x_path], cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_weights_option(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    moved = copy_executable(fake_executable, tmp_path / "bare")
    weights = tmp_path / "kept" / "w.bin"
    weights.parent.mkdir()
    weights.write_bytes(weights_bin())
    x_path = save(tmp_path, "x.npy", random_input(INPUT_SHAPE))
    run_ok(target, moved, "--input", x_path, "--weights", weights)
    missing = run_executable(target, moved, ["--input", x_path])
    assert_one_line_error(missing, 2, str(moved.parent / "weights.bin"), "does not exist")


def truncated(data: bytes) -> bytes:
    return data[:-5]


def oversized(data: bytes) -> bytes:
    return data + b"\0"


def one_byte_altered(data: bytes) -> bytes:
    return data[:9] + bytes([data[9] ^ 0x01]) + data[10:]


@pytest.mark.parametrize(
    ("damage", "message"),
    [(truncated, "is truncated (27 of 32 bytes)"), (oversized, "is too large"), (one_byte_altered, "corrupted")],
)
def test_damaged_weights_are_rejected(
    target: Target, fake_executable: Path, tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    moved = copy_executable(fake_executable, tmp_path / "artifact")
    weights = moved.parent / "weights.bin"
    weights.write_bytes(damage(weights_bin()))
    result = run_executable(target, moved, ["--input", save(tmp_path, "x.npy", random_input(INPUT_SHAPE))])
    assert_one_line_error(result, 2, str(weights), message, "re-copy the artifact folder")


def write_bad_input(path: Path, kind: str) -> None:
    good = random_input(INPUT_SHAPE)
    if kind == "float64":
        np.save(path, good.astype(np.float64))
    elif kind == "big-endian":
        np.save(path, good.astype(">f4"))
    elif kind == "fortran-order":
        np.save(path, np.asfortranarray(random_input((3, 2)).T))
    elif kind == "wrong-shape":
        np.save(path, random_input((3, 2)))
    elif kind == "wrong-sequence-shape":
        np.save(path, random_input((4, 3, 2)))
    elif kind == "empty-sequence":
        np.save(path, random_input((0, *INPUT_SHAPE)))
    elif kind == "not-npy":
        path.write_text("0.1, 0.2, 0.3\n0.4, 0.5, 0.6\n")
    elif kind == "truncated-data":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:-3])
    elif kind == "truncated-header":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:40])
    elif kind != "missing":
        raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("float64", "dtype '<f8'"),
        ("big-endian", "dtype '>f4'"),
        ("fortran-order", "Fortran order"),
        ("wrong-shape", "has shape (3, 2); expected (2, 3) (one sample) or (S, 2, 3)"),
        ("wrong-sequence-shape", "has shape (4, 3, 2)"),
        ("empty-sequence", "has shape (0, 2, 3)"),
        ("not-npy", "is not a .npy file"),
        ("truncated-data", "truncated"),
        ("truncated-header", "truncated"),
        ("missing", "does not exist"),
    ],
)
def test_bad_inputs_are_rejected(
    target: Target, fake_executable: Path, tmp_path: Path, kind: str, message: str
) -> None:
    x_path = tmp_path / "x.npy"
    write_bad_input(x_path, kind)
    result = run_executable(target, fake_executable, ["--input", x_path])
    assert_one_line_error(result, 2, str(x_path), message)


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["extra.npy"],
        [],
        ["--input"],
        ["--timesteps", "0"],
        ["--timesteps", "3x"],
        ["--threads", "-1"],
        ["--exit-confidence", "0"],
        ["--exit-confidence", "1.5"],
        ["--exit-confidence", "nan"],
        ["--min-timesteps", "-2"],
    ],
    ids=lambda args: " ".join(args) or "no-arguments",
)
def test_usage_errors(target: Target, fake_executable: Path, tmp_path: Path, args: list[str]) -> None:
    x_path = save(tmp_path, "x.npy", random_input(INPUT_SHAPE))
    # --input goes last so that a flag missing its value swallows nothing.
    full_args = [*args] if args in ([], ["--input"]) else [*args, "--input", str(x_path)]
    assert_one_line_error(run_executable(target, fake_executable, full_args), 2)


def test_help(target: Target, fake_executable: Path) -> None:
    result = run_executable(target, fake_executable, ["--help"])
    assert result.returncode == 0
    assert result.stdout.startswith("usage: model --input x.npy")


def test_unwritable_output_fails_before_running(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    x_path = save(tmp_path, "x.npy", random_input(INPUT_SHAPE))
    y_path = tmp_path / "no-such-folder" / "y.npy"
    result = run_executable(target, fake_executable, ["--input", x_path, "--output", y_path])
    assert_one_line_error(result, 2, str(y_path))


def test_failing_step_exits_3(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    sequence = random_input((3, *INPUT_SHAPE))
    sequence[1, 0, 0] = np.nan
    result = run_executable(target, fake_executable, ["--input", save(tmp_path, "x.npy", sequence)])
    assert_one_line_error(result, 3, "timestep 2 of 3 failed with status 7")
