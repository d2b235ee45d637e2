"""`masic profile OUT` here (natively, or under qemu-aarch64): every kernel call site timed and matched to a planned
layer of the manifest, streamed loads measured, the runs merged into OUT/profile.json."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from masic.manifest import read_manifest
from masic.profile import by_node
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


def test_compile_with_a_profile_plans_with_what_it_measured(tmp_path: Path) -> None:
    """Without a budget the schedule stays the same, so the replanned cost table is the old one scaled to the
    measured times: its median planned/measured over the layers is 1. A profile of another target is refused."""
    first = compile_model(weight_heavy_model(), (128,), "x86_64", tmp_path / "", "--timesteps", "6")
    assert masic_cli("profile", str(first), "--runs", "3").returncode == 0
    profile = json.loads((first / "profile.json").read_text())
    assert profile["target"] == "x86_64" and profile["planned_us"] == read_manifest(first).planned_node_us
    measured = by_node(profile)

    second = tmp_path / "replanned"
    spec = "tests.e2e.test_budget:weight_heavy_model"
    flags = ("--input-shape", "128", "--timesteps", "6", "--profile", str(first / "profile.json"))
    run = masic_cli("compile", spec, "--target", "x86_64", "-o", str(second), *flags)
    assert run.returncode == 0, run.stderr
    replanned = read_manifest(second)
    assert replanned.planned_by == f"profile {first / 'profile.json'}, measured on x86_64"
    assert read_manifest(first).planned_by == "the target's estimated figures"
    assert set(replanned.planned_node_us) == set(measured)
    ratios = [replanned.planned_node_us[name] / measured[name] for name in measured]
    assert statistics.median(ratios) == pytest.approx(1.0, rel=1e-6)

    refused = masic_cli("compile", spec, "--target", "aarch64", "-o", str(tmp_path / "arm"), *flags)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"masic: error: profile {first / 'profile.json'} was measured for target x86_64, not aarch64; "
        "profile an artifact built for aarch64"
    )
