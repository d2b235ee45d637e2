"""Neuron state loaded once per block in loader.c, as plans whose one block covers the whole run make it
(`masic.ir.graph.transient_states`), with a variant of the fake model, on the host and on ARM64 under qemu.

The state then comes from weights.bin through the loading thread at the start of every block instead of being copied
in before each sample: the outputs must not change, every sample must start from the initial state again, and a run
longer than one block, where the state would not carry over, must be refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_model import INITIAL_STATE, PLAIN, RESIDENT_BYTES, Variant, reference_outputs
from runtime_harness import Target, run_executable, run_ok, save

pytestmark = pytest.mark.slow

BuildVariant = Callable[[Variant], Path]
BLOCK = 3
STATE_LOADED = Variant(block=BLOCK, state_loaded=True)  # its default run is one block of 3 steps


def sequences(n: int, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, steps, 2, 3)).astype(np.float32)


@pytest.mark.parametrize("steps", [BLOCK, 2], ids=["whole-block", "short-block"])
def test_state_loaded_per_block_computes_as_state_copied_per_sample(
    target: Target, fake_variant: BuildVariant, tmp_path: Path, steps: int
) -> None:
    x = sequences(1, steps)[0]
    out = tmp_path / "out.npy"
    report = run_ok(target, fake_variant(STATE_LOADED), "--input", save(tmp_path, "x.npy", x), "--output", out).report
    np.testing.assert_allclose(np.load(out), reference_outputs(x, steps), rtol=1e-6)
    assert (report["block"], report["timesteps"]) == (BLOCK, steps)
    # Weights and state are counted apart: the state is not a weight, however it is read.
    assert (report["weight_bytes_read"], report["state_bytes_read"]) == (RESIDENT_BYTES, INITIAL_STATE.nbytes)


def test_every_sample_starts_from_the_initial_state(target: Target, fake_variant: BuildVariant, tmp_path: Path) -> None:
    n = 12
    x, labels, out = sequences(n, BLOCK), np.zeros(n, np.int64), tmp_path / "out.npy"
    x_path, y_path = save(tmp_path, "x.npy", x), save(tmp_path, "y.npy", labels)
    report = run_ok(target, fake_variant(STATE_LOADED), "--input", x_path, "--labels", y_path, "--output", out).report
    outputs = np.load(out)
    for i in range(n):
        np.testing.assert_allclose(outputs[i], reference_outputs(x[i], BLOCK), rtol=1e-6)
    assert report["state_bytes_read"] == n * INITIAL_STATE.nbytes
    assert report["weight_bytes_read"] == RESIDENT_BYTES


def test_state_copied_per_sample_is_counted_the_same(
    target: Target, fake_variant: BuildVariant, tmp_path: Path
) -> None:
    n = 5
    x_path, y_path = save(tmp_path, "x.npy", sequences(n, 4)), save(tmp_path, "y.npy", np.zeros(n, np.int64))
    report = run_ok(target, fake_variant(PLAIN), "--input", x_path, "--labels", y_path).report
    assert (report["weight_bytes_read"], report["state_bytes_read"]) == (RESIDENT_BYTES, n * INITIAL_STATE.nbytes)


@pytest.mark.parametrize(
    ("input_steps", "flags", "message"),
    [
        (
            None,
            ("--timesteps", "4"),
            "--timesteps 4 exceeds the 3 timesteps this model keeps neuron state for (one block of a layer-major "
            "plan); recompile with --timesteps 4",
        ),
        (
            5,
            (),
            "input sequence {x} has 5 timesteps, more than the 3 this model keeps neuron state for (one block of a "
            "layer-major plan); pass --timesteps 3 or fewer, or recompile with --timesteps 5",
        ),
    ],
    ids=["timesteps-flag", "long-sequence"],
)
def test_runs_longer_than_one_block_are_refused(
    target: Target,
    fake_variant: BuildVariant,
    tmp_path: Path,
    input_steps: int | None,
    flags: tuple[str, ...],
    message: str,
) -> None:
    x = sequences(1, input_steps or 1)[0]
    x_path = save(tmp_path, "x.npy", x if input_steps else x[0])
    result = run_executable(target, fake_variant(STATE_LOADED), ["--input", x_path, *flags])
    assert result.returncode == 2, result.stderr
    assert result.error_lines == [f"model: error: {message.format(x=x_path)}"]
    assert result.stdout == ""


def test_a_long_sequence_runs_its_first_block_when_asked(
    target: Target, fake_variant: BuildVariant, tmp_path: Path
) -> None:
    x, out = sequences(1, 5)[0], tmp_path / "out.npy"
    x_path = save(tmp_path, "x.npy", x)
    run_ok(target, fake_variant(STATE_LOADED), "--input", x_path, "--timesteps", str(BLOCK), "--output", out)
    np.testing.assert_allclose(np.load(out), reference_outputs(x, BLOCK), rtol=1e-6)
