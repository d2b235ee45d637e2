"""Compiled artifacts built with AddressSanitizer and UndefinedBehaviorSanitizer (MASIC_SANITIZE=1, host target):
the loader and the generated model.c of real models, run as a user runs them (one sample, sequences, labelled
batches with --output and --predictions, early exit, streamed weights under a small budget, neuron state loaded by
the loading thread, several worker threads, refusals of bad input). Every run must give Norse's outputs and a
clean stderr: a sanitizer report aborts the program, and leaks are reports too."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from masic.codegen.sources import SANITIZE_ENV
from tests.artifacts import compile_model, masic_cli
from tests.e2e.test_budget import weight_heavy_model
from tests.e2e.test_transient_state import INPUT_SHAPE as STATE_HEAVY_SHAPE
from tests.e2e.test_transient_state import state_heavy_model
from tests.norse_models import MODELS, random_input, run_norse

pytestmark = [pytest.mark.slow, pytest.mark.sanitizer]
TIMESTEPS = 6
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


@pytest.fixture(autouse=True)
def sanitize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SANITIZE_ENV, "1")


def run(out: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs the artifact's executable directly, with the sanitizers set to abort on the first report."""
    return subprocess.run(
        [str(out / "model"), *map(str, args)],
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, **SANITIZER_ENV},
        timeout=300,
        check=False,
    )


def run_clean(out: Path, *args: str | Path) -> dict:
    done = run(out, *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def assert_close(outputs: np.ndarray, expected: Sequence[np.ndarray] | np.ndarray) -> None:
    expected = np.asarray(expected)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_the_build_is_instrumented(tmp_path: Path) -> None:
    factory, shape = MODELS["dense"]
    out = compile_model(factory(), shape, "x86_64", tmp_path)
    assert b"__asan_init" in (out / "model").read_bytes()
    assert b"__ubsan_handle" in (out / "model").read_bytes()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_single_samples_and_sequences_of_a_conv_model(threads: str, tmp_path: Path) -> None:
    factory, shape = MODELS["conv"]
    model = factory()
    out = compile_model(model, shape, "x86_64", tmp_path, "--timesteps", str(TIMESTEPS))
    x = random_input(shape, TIMESTEPS, seed=1)
    y = tmp_path / "y.npy"
    stats = run_clean(out, "--input", save(tmp_path / "x.npy", x), "--output", y, "--threads", threads, "--no-exit")
    assert stats["timesteps"] == TIMESTEPS
    assert_close(np.load(y), run_norse(model, x))
    one = run_clean(out, "--input", save(tmp_path / "one.npy", x[0]), "--timesteps", "3", "--output", y)
    assert one["timesteps"] == 3
    assert_close(np.load(y), run_norse(model, np.repeat(x[:1], 3, axis=0)))


def test_labelled_batches_with_outputs_predictions_and_early_exit(tmp_path: Path) -> None:
    factory, shape = MODELS["dense"]
    model = factory()
    out = compile_model(model, shape, "x86_64", tmp_path, "--timesteps", str(TIMESTEPS))
    x = np.stack([random_input(shape, TIMESTEPS, seed=s) for s in range(5)])
    expected = np.stack([run_norse(model, sample) for sample in x])
    labels = expected.sum(axis=1).argmax(axis=1).astype(np.int64)
    x_path, y_path = save(tmp_path / "x.npy", x), save(tmp_path / "labels.npy", labels)
    outputs, predictions = tmp_path / "outputs.npy", tmp_path / "predictions.npy"
    args = ("--input", x_path, "--labels", y_path, "--output", outputs, "--predictions", predictions)
    stats = run_clean(out, *args, "--no-exit")
    assert stats["correct"] == 5 and stats["timesteps_histogram"] == [0] * (TIMESTEPS - 1) + [5]
    assert_close(np.load(outputs), expected)
    np.testing.assert_array_equal(np.load(predictions), np.stack([labels, np.full(5, TIMESTEPS)], axis=1))

    early = run_clean(out, *args, "--exit-stable", "1", "--min-timesteps", "2")
    assert early["timesteps_histogram"] == [0, 5]  # sized by the steps run: all samples stop after step 2
    written = np.load(outputs)
    assert written.shape == (5, TIMESTEPS, *expected.shape[2:])
    assert np.isnan(written[:, 2:]).all() and not np.isnan(written[:, :2]).any()


def test_streamed_weights_under_a_small_budget(tmp_path: Path) -> None:
    refusal = masic_cli("compile", "tests.e2e.test_budget:weight_heavy_model", "--budget", "1", "--emit", "plan")
    minimum = int(refusal.stderr.split("use --budget ")[1].split()[0])
    model = weight_heavy_model()
    out = compile_model(model, (128,), "x86_64", tmp_path, "--budget", str(minimum), "--timesteps", str(TIMESTEPS))
    x = random_input((128,), TIMESTEPS, seed=5)
    y = tmp_path / "y.npy"
    stats = run_clean(out, "--input", save(tmp_path / "x.npy", x), "--output", y, "--no-exit", "--threads", "2")
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert stats["arena_bytes"] < weights / 2 and stats["weight_bytes_read"] > weights  # streamed, block by block
    assert_close(np.load(y), run_norse(model, x))


def test_state_loaded_by_the_loading_thread(tmp_path: Path) -> None:
    spec = "tests.e2e.test_transient_state:state_heavy_model"
    refusal = masic_cli("compile", spec, "--budget", "1", "--timesteps", "4", "--emit", "plan")
    minimum = int(refusal.stderr.split("use --budget ")[1].split()[0])
    model = state_heavy_model()
    out = compile_model(model, STATE_HEAVY_SHAPE, "x86_64", tmp_path, "--budget", str(minimum), "--timesteps", "4")
    x = random_input(STATE_HEAVY_SHAPE, 4, seed=7)
    y = tmp_path / "y.npy"
    stats = run_clean(out, "--input", save(tmp_path / "x.npy", x), "--output", y, "--no-exit")
    assert stats["block"] == 4 and stats["state_bytes_read"] > 0
    assert_close(np.load(y), run_norse(model, x))


def test_refusals_are_clean_one_line_errors(tmp_path: Path) -> None:
    factory, shape = MODELS["iaf"]
    out = compile_model(factory(), shape, "x86_64", tmp_path)
    x_path = save(tmp_path / "x.npy", random_input(shape, 2))
    bad_header = tmp_path / "bad.npy"
    bad_header.write_bytes(x_path.read_bytes().replace(b"}", b"} x", 1))
    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    cases = [
        ["--input", bad_header],
        ["--input", fifo],
        ["--input", x_path, "--output", x_path],
        ["--input", x_path, "--timesteps", "4294967297"],
        ["--input", x_path, "--min-timesteps", "+4"],
        ["--input", x_path, "--weights", fifo],
    ]
    for args in cases:
        done = run(out, *args)
        assert done.returncode == 2, (args, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("model: error: ")
