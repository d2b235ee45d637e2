"""End to end: Norse model -> masic compile -> static executable (host natively, aarch64 under qemu) vs Norse."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from masic.manifest import ARTIFACT_FILES
from tests.artifacts import compile_model, run_artifact, spiking_prefix
from tests.norse_models import MODELS, random_input, run_norse

pytestmark = pytest.mark.slow
TIMESTEPS = 10


@pytest.mark.parametrize("name", MODELS)
def test_compiled_membrane_outputs_match_norse(name: str, target: str, tmp_path: Path) -> None:
    factory, shape = MODELS[name]
    model = factory()
    x = random_input(shape, TIMESTEPS, seed=1)
    expected = run_norse(model, x)
    out = compile_model(model, shape, target, tmp_path, "--timesteps", str(TIMESTEPS), "--budget", "64MB")
    run, outputs = run_artifact(out, x, tmp_path)
    assert run.returncode == 0, run.stderr
    assert outputs.shape == (TIMESTEPS, *expected.shape[1:])
    scale = np.abs(expected).max()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * scale)
    stats = run.stats
    assert stats["timesteps"] == TIMESTEPS
    assert stats["prediction"] == int(np.argmax(expected.sum(0)))
    assert stats["arena_bytes"] > 0 and stats["peak_rss_bytes"] > 0


@pytest.mark.parametrize("name", MODELS)
def test_compiled_spikes_match_norse(name: str, target: str, tmp_path: Path) -> None:
    factory, shape = MODELS[name]
    model = spiking_prefix(factory())
    x = random_input(shape, TIMESTEPS, seed=2)
    expected = run_norse(model, x)
    out = compile_model(model, shape, target, tmp_path)
    run, outputs = run_artifact(out, x, tmp_path)
    assert run.returncode == 0, run.stderr
    assert 0.02 < expected.mean() < 0.98, "the test input must make the layer spike, but not always"
    disagreement = np.mean(outputs != expected)
    assert disagreement < 1e-3, f"{disagreement:.2%} of spikes differ from Norse"


def test_one_sample_is_presented_at_every_step(target: str, tmp_path: Path) -> None:
    factory, shape = MODELS["dense"]
    model = factory()
    x = random_input(shape, 1, seed=3)[0]
    out = compile_model(model, shape, target, tmp_path, "--timesteps", "6")
    run, outputs = run_artifact(out, x, tmp_path)
    assert run.returncode == 0, run.stderr
    expected = run_norse(model, np.repeat(x[None], 6, axis=0))
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)
    shorter, outputs = run_artifact(out, x, tmp_path, "--timesteps", "3")
    assert shorter.stats["timesteps"] == 3 and outputs.shape[0] == 3


def test_exit_confidence_stops_early(tmp_path: Path) -> None:
    factory, shape = MODELS["dense"]
    out = compile_model(factory(), shape, "x86_64", tmp_path, "--timesteps", "12")
    x = random_input(shape, 1, seed=4)[0] * 3
    full, outputs = run_artifact(out, x, tmp_path)
    accumulated = np.cumsum(outputs, axis=0)
    softmax = np.exp(accumulated - accumulated.max(1, keepdims=True))
    confidence = (softmax / softmax.sum(1, keepdims=True)).max(1)
    threshold = float(confidence[4:].max() + confidence[4:].min()) / 2
    expected_steps = next(t + 1 for t in range(4, 12) if confidence[t] >= threshold)
    early, _ = run_artifact(out, x, tmp_path, "--exit-confidence", str(threshold), "--min-timesteps", "5")
    assert early.stats["timesteps"] == expected_steps < 12
    assert early.stats["exited_early"] is True and full.stats["exited_early"] is False


def test_artifact_copied_alone_runs_and_detects_corrupt_weights(target: str, tmp_path: Path) -> None:
    factory, shape = MODELS["iaf"]
    out = compile_model(factory(), shape, target, tmp_path / "")
    deployed = tmp_path / "device" / "model"
    shutil.copytree(out, deployed)
    shutil.rmtree(out)
    assert sorted(p.name for p in deployed.iterdir()) == sorted(ARTIFACT_FILES)
    x = random_input(shape, 4)
    run, outputs = run_artifact(deployed, x, tmp_path)
    assert run.returncode == 0, run.stderr
    assert outputs.shape == (4, 5)
    weights = deployed / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    corrupt, _ = run_artifact(deployed, x, tmp_path)
    assert corrupt.returncode == 2
    assert len(corrupt.stderr.strip().splitlines()) == 1 and "weights.bin" in corrupt.stderr
