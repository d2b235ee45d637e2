"""Blocks of timesteps and streamed weights in loader.c, with variants of the fake model, on the host and on ARM64
under qemu.

The variants compute the same function whatever their block size, so every block size must give the same outputs,
and the same exit decisions as running one step at a time; streamed weights must arrive in their shared slot exactly
when the model needs them, or the outputs change.
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_model import (
    PLAIN,
    RESIDENT_BYTES,
    STREAMED_BYTES,
    STREAMING,
    Variant,
    build_artifact,
    confidences,
    reference_outputs,
)
from runtime_harness import HOST, RunResult, Target, run_executable, run_ok, save

from masic.early_exit import ExitRule, decide

pytestmark = pytest.mark.slow

BuildVariant = Callable[[Variant], Path]
STEPS = 8  # blocks of 3 steps: 3 + 3 + 2, the last one short
STREAMING_ONE_STEP = Variant(block=1, streamed=True)
BLOCKED = Variant(block=3)  # blocks without streamed weights: no loading thread
MIB = 1 << 20


def sequence(steps: int = STEPS, seed: int = 0) -> np.ndarray:
    """Values in [0, 1): the sums stay positive, so the fake model's confidence grows step by step."""
    return np.random.default_rng(seed).random((steps, 2, 3), dtype=np.float32)


def signed_sequences(n: int, seed: int = 0) -> np.ndarray:
    """Values in [-1, 1): the argmax moves around, so exit rules stop at many different steps."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, STEPS, 2, 3)).astype(np.float32)


def blocks_run(steps_computed: int, block: int) -> int:
    return math.ceil(steps_computed / block)


def weight_bytes_read(blocks: int) -> int:
    return RESIDENT_BYTES + blocks * STREAMED_BYTES


def outputs_of(
    target: Target, executable: Path, folder: Path, x: np.ndarray, *flags: str
) -> tuple[RunResult, np.ndarray]:
    out = folder / f"out-{executable.parent.name}.npy"
    result = run_ok(target, executable, "--input", save(folder, "x.npy", x), "--output", out, *flags)
    return result, np.load(out)


@pytest.mark.parametrize(
    ("one_step", "blocked"), [(PLAIN, BLOCKED), (STREAMING_ONE_STEP, STREAMING)], ids=["resident", "streamed"]
)
@pytest.mark.parametrize("steps", [STEPS, 7, 2], ids=lambda steps: f"{steps}-steps")
def test_block_sizes_give_the_same_outputs(
    target: Target, fake_variant: BuildVariant, tmp_path: Path, one_step: Variant, blocked: Variant, steps: int
) -> None:
    """8 and 7 steps end with a short block (2 and 1 steps); 2 steps are one short block."""
    x = sequence(steps)
    one, one_out = outputs_of(target, fake_variant(one_step), tmp_path, x)
    many, many_out = outputs_of(target, fake_variant(blocked), tmp_path, x)

    np.testing.assert_array_equal(many_out, one_out)
    np.testing.assert_allclose(many_out, reference_outputs(x, steps, streamed=blocked.streamed), rtol=1e-6)
    assert (one.report["block"], many.report["block"]) == (1, 3)
    for run in (one, many):
        assert run.report["timesteps"] == run.report["timesteps_computed"] == steps
    assert many.report["prediction"] == one.report["prediction"]
    assert many.report["confidence"] == one.report["confidence"]


@pytest.mark.parametrize(("variant", "steps"), [(STREAMING_ONE_STEP, STEPS), (STREAMING, STEPS), (STREAMING, 7)])
def test_streamed_bytes_are_read_once_per_block(
    target: Target, fake_variant: BuildVariant, tmp_path: Path, variant: Variant, steps: int
) -> None:
    report = run_ok(target, fake_variant(variant), "--input", save(tmp_path, "x.npy", sequence(steps))).report
    assert report["weight_bytes_read"] == weight_bytes_read(blocks_run(steps, variant.block))
    assert report["start_bytes_read"] == RESIDENT_BYTES, "only the resident weights are read at start"
    assert report["weights_bytes"] == len(variant.weights_bin())
    assert 0 <= report["load_wait_s"] < 10


def test_resident_weights_are_read_once(target: Target, fake_variant: BuildVariant, tmp_path: Path) -> None:
    report = run_ok(target, fake_variant(BLOCKED), "--input", save(tmp_path, "x.npy", sequence())).report
    assert (report["weight_bytes_read"], report["load_wait_s"]) == (RESIDENT_BYTES, 0)


@pytest.mark.parametrize(
    ("stop_step", "computed"), [(4, 6), (6, 6), (7, 8), (2, 3)], ids=["first", "last", "short-block", "first-block"]
)
def test_exit_inside_a_block(
    target: Target, fake_variant: BuildVariant, tmp_path: Path, stop_step: int, computed: int
) -> None:
    """The steps after the exit are computed but count nowhere: not in timesteps, the prediction or --output."""
    x = sequence()
    seen = confidences(reference_outputs(x, STEPS, streamed=True))
    assert all(a < b for a, b in itertools.pairwise(seen)), "the test needs a growing confidence"
    threshold = repr((seen[stop_step - 2] + seen[stop_step - 1]) / 2)
    one, one_out = outputs_of(target, fake_variant(STREAMING_ONE_STEP), tmp_path, x, "--exit-confidence", threshold)
    many, many_out = outputs_of(target, fake_variant(STREAMING), tmp_path, x, "--exit-confidence", threshold)

    assert (one.report["timesteps"], one.report["timesteps_computed"]) == (stop_step, stop_step)
    assert (many.report["timesteps"], many.report["timesteps_computed"]) == (stop_step, computed)
    assert many.report["exited_early"] is True
    for key in ("prediction", "confidence"):
        assert many.report[key] == one.report[key]
    np.testing.assert_array_equal(many_out, one_out)
    assert many_out.shape == (stop_step, 4)
    assert many.report["weight_bytes_read"] == weight_bytes_read(blocks_run(computed, 3))


@pytest.mark.parametrize(
    "rule",
    [ExitRule("stable_argmax", 2.0, 1), ExitRule("margin", 1.5, 2), ExitRule("none", 0.0, 0)],
    ids=lambda rule: rule.rule,
)
def test_labelled_run_decides_as_one_step_at_a_time(
    target: Target, fake_variant: BuildVariant, tmp_path: Path, rule: ExitRule
) -> None:
    """Many samples and blocks: also a stress test of the hand-over between the compute and the loading thread."""
    n = 40
    x, labels = signed_sequences(n), np.zeros(n, np.int64)
    x_path, y_path, p_path = save(tmp_path, "x.npy", x), save(tmp_path, "y.npy", labels), tmp_path / "p.npy"
    full = tmp_path / "full.npy"
    run_ok(target, fake_variant(STREAMING), "--input", x_path, "--labels", y_path, "--no-exit", "--output", full)
    outputs = np.load(full)
    for i in range(n):
        np.testing.assert_allclose(outputs[i], reference_outputs(x[i], STEPS, streamed=True), rtol=1e-6)
    decisions = decide(outputs, rule)

    result = run_ok(
        target, fake_variant(STREAMING), "--input", x_path, "--labels", y_path, "--predictions", p_path,
        *rule.loader_flags(),
    )  # fmt: skip
    rows = np.load(p_path)
    np.testing.assert_array_equal(rows, np.stack([decisions.predictions, decisions.timesteps], axis=1))
    computed = np.minimum(np.ceil(decisions.timesteps / 3) * 3, STEPS).astype(int)
    blocks = int(sum(blocks_run(int(c), 3) for c in computed))
    report = result.report
    assert report["block"] == 3
    assert report["timesteps_computed"] == computed.sum()
    assert report["mean_timesteps_computed"] == pytest.approx(computed.mean(), abs=1e-6)
    assert report["weight_bytes_read"] == weight_bytes_read(blocks)
    assert report["streamed_bytes_per_sample"] == pytest.approx(blocks * STREAMED_BYTES / n)
    assert report["load_wait_s_per_sample"] == pytest.approx(report["load_wait_s"] / n, abs=1e-6)
    if rule.rule != "none":
        assert f"; mean {computed.mean():.2f} computed in blocks of 3" in result.stdout.splitlines()[1]


def test_weights_changed_while_streaming(target: Target, tmp_path: Path) -> None:
    """The second block truncates weights.bin before its second load, which must then fail cleanly (exit 2)."""
    executable = build_artifact(target, tmp_path / "artifact", {"FAKE_TRUNCATE_AT_BLOCK": "2"}, variant=STREAMING)
    x_path = save(tmp_path, "x.npy", sequence())
    result = run_executable(target, executable, ["--input", x_path], cwd=executable.parent)
    assert result.returncode == 2, result.stderr
    assert result.error_lines == [
        f"model: error: weights file {executable.parent / 'weights.bin'} changed while the model was running "
        "(streamed load 1 is past its end); re-copy the artifact folder"
    ]


@pytest.mark.parametrize(
    ("defines", "message"),
    [
        ({"FAKE_LOAD1_START": "4"}, "streamed load 1 starts at position 4, out of order or past the 3 positions"),
        ({"FAKE_WAIT_TOO_EARLY": "1"}, "the model waits for streamed load 1 at position 1, before it may begin"),
    ],
    ids=["past-the-block", "wait-too-early"],
)
def test_broken_schedules_fail_instead_of_hanging(
    target: Target, tmp_path: Path, defines: dict[str, str], message: str
) -> None:
    executable = build_artifact(target, tmp_path / "artifact", defines, variant=STREAMING)
    result = run_executable(target, executable, ["--input", save(tmp_path, "x.npy", sequence())], timeout=20)
    assert result.returncode == 1, result.stderr
    assert len(result.error_lines) == 1 and f"inconsistent build: {message}" in result.error_lines[0]


def test_failing_block_names_its_steps(target: Target, fake_variant: BuildVariant, tmp_path: Path) -> None:
    x = sequence(5)
    x[4, 0, 0] = np.nan
    result = run_executable(target, fake_variant(STREAMING), ["--input", save(tmp_path, "x.npy", x)])
    assert result.returncode == 3
    assert result.error_lines == ["model: error: timesteps 4 to 5 of 5 (one block) failed with status 7"]


HOST_STATIC = Target("host-static", "cc", flags=("-static",))


@pytest.mark.parametrize("host", [HOST, HOST_STATIC], ids=lambda target: target.name)
def test_memory_beyond_the_arena_is_small(host: Target, tmp_path: Path) -> None:
    """Peak RSS counts the arena (zeroed, so every page is touched) and what the loader adds, which must stay
    within 4 MiB, although weights.bin (streamed from; its padding never read) is larger than the arena."""
    variant = Variant(block=3, streamed=True, pad_bytes=24 * MIB, arena_bytes=16 * MIB)
    folder = tmp_path / "artifact"
    try:
        executable = build_artifact(host, folder, variant=variant)
    except RuntimeError as error:
        if host is HOST_STATIC:
            pytest.fail(f"no static C library on this host (scripts/setup.sh installs it): {error}")
        raise
    report = run_ok(host, executable, "--input", save(tmp_path, "x.npy", sequence()), "--threads", "2").report
    shutil.rmtree(folder)

    assert report["arena_bytes"] == 16 * MIB and report["weights_bytes"] == 24 * MIB + 48
    assert report["peak_rss_bytes"] >= report["arena_bytes"], "the arena must be resident for the check to mean much"
    assert report["peak_rss_bytes"] - report["arena_bytes"] <= 4 * MIB, report
