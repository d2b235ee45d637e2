"""`model --profile FILE.json` in loader.c, with the streaming fake model, on the host and on ARM64 under qemu."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_model import STREAMING
from runtime_harness import Target, run_executable, run_ok, save
from test_runtime_loader import assert_one_line_error

pytestmark = pytest.mark.slow


def test_profile_counts_every_streamed_load(target: Target, fake_variant, tmp_path: Path) -> None:
    """8 steps in blocks of 3: each of the two 8-byte loads is read in 3 blocks."""
    x = save(tmp_path, "x.npy", np.random.default_rng(0).random((8, 2, 3), dtype=np.float32))
    out = tmp_path / "p.json"
    result = run_ok(target, fake_variant(STREAMING), "--input", x, "--profile", out)
    profile = json.loads(out.read_text())
    assert profile["format"] == "masic-profile/1" and profile["block"] == 3
    assert profile["machine"] == ("aarch64" if target.runner else "x86_64")
    assert [(load["bytes"], load["count"]) for load in profile["loads"]] == [(8, 3), (8, 3)]
    assert profile["read"]["bytes"] == 48 == result.report["weight_bytes_read"] - 16
    assert set(profile["startup_us"]) == {"open", "read", "check"}
    assert profile["peak_rss_bytes"] > 0 and profile["sites"] == []  # the fake model names no call sites
    assert result.stderr.startswith("profile: run ") and "streamed: 0.0 MB" in result.stderr


def test_profile_refuses_to_overwrite_the_input(target: Target, fake_variant, tmp_path: Path) -> None:
    x = save(tmp_path, "x.npy", np.random.default_rng(0).random((2, 3), dtype=np.float32))
    result = run_executable(target, fake_variant(STREAMING), ["--input", x, "--profile", x])
    assert_one_line_error(result, 2, "--profile")
    assert np.load(x).shape == (2, 3)


def test_check_takes_no_profile(target: Target, fake_variant, tmp_path: Path) -> None:
    result = run_executable(target, fake_variant(STREAMING), ["--check", "--profile", tmp_path / "p.json"])
    assert_one_line_error(result, 2, "--check takes only --weights")
