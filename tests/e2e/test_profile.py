"""`masic profile OUT` here (natively, or under qemu-aarch64): every kernel call site timed and matched to a planned
layer of the manifest, streamed loads measured, the runs merged into OUT/profile.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from masic.manifest import read_manifest
from tests.artifacts import compile_model, masic_cli
from tests.e2e.test_budget import weight_heavy_model

pytestmark = pytest.mark.slow


def test_profile_times_every_call_site_of_a_streamed_artifact(target: str, tmp_path: Path) -> None:
    out = compile_model(weight_heavy_model(), (128,), target, tmp_path, "--budget", "300KB", "--timesteps", "6")
    run = masic_cli("profile", str(out), "--runs", "2")
    assert run.returncode == 0, run.stderr
    profile = json.loads((out / "profile.json").read_text())
    manifest = read_manifest(out)
    assert profile["runs"] == 2 and profile["machine"] == manifest.target.arch
    sites = {site["node"] for site in profile["sites"]}
    assert sites == set(manifest.planned_node_us), "every call site is a planned layer, and every layer is called"
    assert all(site["calls"] == 1 and site["total_us"] > 0 for site in profile["sites"])  # one block of 6 steps
    streamed = sum(load["bytes"] * load["count"] for load in profile["loads"])
    assert streamed == profile["read"]["bytes"] > 0
    assert "measured/planned" in run.stdout and f"streamed: {streamed / 1e6:.1f} MB per run" in run.stdout
    assert read_manifest(out).name == manifest.name, "profile.json beside the artifact leaves it readable"


def test_profile_needs_a_runnable_artifact(tmp_path: Path) -> None:
    run = masic_cli("profile", str(tmp_path / "missing"))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
