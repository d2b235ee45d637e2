"""`masic profile OUT` here (natively, or under qemu-aarch64): every kernel call site timed and matched to a planned
layer of the manifest, streamed loads measured, the runs merged into OUT/profile.json."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from masic.manifest import read_manifest
from masic.profile import by_node
from tests.artifacts import Run, compile_model, masic_cli
from tests.e2e.test_budget import weight_heavy_model
from tests.norse_models import MODELS

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


def test_a_profile_from_the_same_artifact_reproduces_its_measured_kernel_times(tmp_path: Path) -> None:
    """Compiled, profiled, and compiled again with the profile: every call site of the new plan's cost table takes
    the time the profile measured for its kernel description key, per step the median over the profiled call sites
    with that key. One timestep, so the plan's block (1) and with it every key stays the same. A profile of another
    target, and one that times no kernel of the model, are refused in one line."""
    factory, shape = MODELS["conv"]
    flags = ("--timesteps", "1")
    first = compile_model(factory(), shape, "x86_64", tmp_path, *flags)
    assert masic_cli("profile", str(first), "--runs", "3", "--threads", "1").returncode == 0
    profile_path = first / "profile.json"
    profile = json.loads(profile_path.read_text())
    assert profile["threads"] == 1
    assert profile["target"] == "x86_64" and profile["keys"] == read_manifest(first).planned_node_keys
    per_key: dict[str, list[float]] = {}
    for name, total_us in by_node(profile).items():
        per_key.setdefault(profile["keys"][name], []).append(total_us / profile["timesteps"])

    second = tmp_path / "replanned"
    second.mkdir()
    replanned = read_manifest(compile_model(factory(), shape, "x86_64", second, *flags, "--profile", str(profile_path)))
    assert replanned.planned_by == f"profile {profile_path}, measured on x86_64 at 1 thread(s)"
    assert read_manifest(first).planned_by == "the target's estimated figures"
    assert set(replanned.planned_node_keys.values()) == set(per_key), "the same kernels are called"
    for name, us in replanned.planned_node_us.items():
        measured = statistics.median(per_key[replanned.planned_node_keys[name]])
        assert us == pytest.approx(replanned.timesteps * measured, rel=1e-9), name
    outside = profile["run_us"] - sum(by_node(profile).values()) - profile["read"]["wait_us"]
    assert replanned.planned_latency_us == pytest.approx(sum(replanned.planned_node_us.values()) + max(outside, 0))

    def compile_with_profile(spec: Path, target: str, out: str, model_shape: tuple[int, ...], *extra: str) -> Run:
        shape_flags = ("--input-shape", ",".join(map(str, model_shape)))
        args = ("--target", target, "-o", str(tmp_path / out), *shape_flags, *flags, *extra)
        return masic_cli("compile", str(spec), *args, "--profile", str(profile_path))

    spec = tmp_path / "model.pt"
    sweep = compile_with_profile(spec, "x86_64", "sweep", shape, "--budget-sweep", "16MB:32MB")
    assert sweep.returncode == 0, sweep.stderr
    assert f"planned by profile {profile_path}, measured on x86_64 at 1 thread(s)" in sweep.stdout.splitlines()[0]
    chosen_table = sweep.stdout.split("\n\n")[0].splitlines()  # the sweep of --weights, before the formats' table
    latency_ms = chosen_table[-1].split()[-2]  # everything resident, as without a budget
    assert latency_ms == f"{replanned.planned_latency_us / 1e3:.2f}"
    arm = compile_with_profile(spec, "aarch64", "arm", shape)
    assert arm.returncode == 2
    assert arm.stderr.strip().splitlines()[-1] == (
        f"masic: error: profile {profile_path} was measured for target x86_64, not aarch64; "
        "profile an artifact built for aarch64"
    )
    other_factory, other_shape = MODELS["dense"]
    torch.save(other_factory(), tmp_path / "other.pt")
    other = compile_with_profile(tmp_path / "other.pt", "x86_64", "other", other_shape)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1] == (
        f"masic: error: profile {profile_path} times no kernel of other; profile an artifact of this model"
    )
