"""`masic profile OUT [--host DEST] [--input x.npy] [--runs N] [--threads N]`: where an artifact's time goes on the
device.

Runs `model --input X --no-exit --threads N --profile P` (see runtime/profile.c) N times: here (under qemu-aarch64
for the ARM targets) or, with --host, over SSH in the folder `masic deploy` put the artifact in (its manifest must
be this artifact's). The runs are merged into OUT/profile.json: each call site's, load's and start-up figure the median
over the runs, peak RSS the largest. Then it prints the layers by share of the kernels' time, the measured read
bandwidth against the target's figure, and each layer's planned time (the cost model's, `masic.analysis.cost`, as
recorded in the manifest) against the measured one. Without --input the input is one sample uniform in [0, 1)
(seed 0), presented at every timestep.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from masic.errors import MasicError
from masic.manifest import MANIFEST_FILE, Manifest
from masic.remote import Remote, last_line
from masic.targets import Target
from masic.targets.machine import Machine, Measured

PROFILE_FILE = "profile.json"
PROFILE_FORMAT = "masic-profile/1"
TABLE_ROWS = 15

Profile = dict[str, Any]


class ProfileError(MasicError, RuntimeError):
    """A profiling run failed, or its output is not a profile of this artifact."""


def default_input(manifest: Manifest, folder: Path) -> Path:
    path = folder / "x.npy"
    np.save(path, np.random.default_rng(0).random(manifest.input_shape, dtype=np.float32))
    return path


def profile_locally(manifest: Manifest, x: Path, runs: int, threads: int = 0) -> list[Profile]:
    """`runs` profiled runs here, natively or under the target's emulator, with `threads` workers (0: per core)."""
    profiles = []
    with tempfile.TemporaryDirectory(prefix="masic-profile-") as scratch:
        out = Path(scratch) / PROFILE_FILE
        for _ in range(runs):
            flags = ["--input", str(x), "--no-exit", "--threads", str(threads), "--profile", str(out)]
            command = [*manifest.command(), *flags]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ProfileError(f"the profiled run failed: {last_line(done.stderr, done.returncode)}")
            profiles.append(read_profile(out.read_text(), str(out)))
    return profiles


def profile_remotely(manifest: Manifest, remote: Remote, x: Path, runs: int, threads: int = 0) -> list[Profile]:
    """`runs` profiled runs in remote.folder, which must hold this artifact (as `masic deploy` left it)."""
    deployed = shlex.quote(f"{remote.folder}/{MANIFEST_FILE}")
    there = remote.run(f"cat {deployed}", "reading the deployed manifest", check=False)
    if there.returncode != 0 or there.stdout != (manifest.folder / MANIFEST_FILE).read_text():
        raise ProfileError(
            f"{remote.host}:{remote.folder} does not hold {manifest.folder}; run masic deploy {manifest.folder} first"
        )
    scratch = remote.run("mktemp -d", "creating a temporary folder").stdout.strip()
    try:
        remote.copy([x], scratch)
        remote_x, out = f"{scratch}/{x.name}", f"{scratch}/{PROFILE_FILE}"
        profiles = []
        for _ in range(runs):
            flags = ("--input", remote_x, "--no-exit", "--threads", str(threads), "--profile", out)
            command = remote.model_command(remote.folder, *flags)
            remote.run(command, "the profiled run")
            profiles.append(read_profile(remote.run(f"cat {shlex.quote(out)}", "reading the profile").stdout, out))
        return profiles
    finally:
        remote.run(f"rm -rf {shlex.quote(scratch)}", "removing the temporary folder", check=False)


def read_profile(text: str, source: str) -> Profile:
    """A profile as the executable writes it; anything else is refused in one line."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProfileError(f"{source} is not a profile: {err}") from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{source} is not a profile: format must be {PROFILE_FORMAT!r}")
    for key, kind in (("sites", list), ("loads", list), ("read", dict), ("startup_us", dict), ("machine", str)):
        if not isinstance(data.get(key), kind):
            raise ProfileError(f"{source} is not a profile: {key} is missing or of the wrong type")
    return data


def _median_of(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """The first row with each of `keys` replaced by its median over the rows."""
    return {**rows[0], **{key: statistics.median(row[key] for row in rows) for key in keys}}


def merge(profiles: Sequence[Profile]) -> Profile:
    """One profile of many runs of the same artifact: medians, and the largest peak RSS."""
    first = profiles[0]

    def per_index(name: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        return [_median_of([p[name][i] for p in profiles], keys) for i in range(len(first[name]))]

    return {
        **_median_of(profiles, ("run_us", "kernels_us")),
        "runs": len(profiles),
        "startup_us": _median_of([p["startup_us"] for p in profiles], tuple(first["startup_us"])),
        "peak_rss_bytes": max(p["peak_rss_bytes"] for p in profiles),
        "sites": per_index("sites", ("total_us", "median_us")),
        "loads": per_index("loads", ("total_us", "mb_per_s", "wait_us")),
        "read": _median_of([p["read"] for p in profiles], ("us", "mb_per_s", "wait_us")),
    }


def by_node(profile: Profile) -> dict[str, float]:
    """Microseconds of the run per IR node (the steps of a block and a concat's copies added up), largest first."""
    totals: dict[str, float] = {}
    for site in profile["sites"]:
        totals[site["node"]] = totals.get(site["node"], 0.0) + site["total_us"]
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def summary(profile: Profile, manifest: Manifest) -> str:
    """Layers by share of time, the read bandwidth, planned against measured per layer."""
    nodes = by_node(profile)
    kernels = sum(nodes.values()) or 1.0
    planned = manifest.planned_node_us
    lines = [
        f"{manifest.name} on {profile['machine']}, {profile['runs']} run(s), {profile['threads']} thread(s): "
        f"run {profile['run_us'] / 1e3:.3f} ms, kernels {kernels / 1e3:.3f} ms (medians)",
        f"start-up: open {_ms(profile['startup_us']['open'])}, read resident weights "
        f"{_ms(profile['startup_us']['read'])}, check them {_ms(profile['startup_us']['check'])}; "
        f"peak RSS {profile['peak_rss_bytes'] / 1e6:.1f} MB",
    ]
    read = profile["read"]
    target_rate = manifest.planned_read_bytes_per_second / 1e6
    if read["bytes"]:
        lines.append(
            f"streamed: {read['bytes'] / 1e6:.1f} MB per run at {read['mb_per_s']:.0f} MB/s measured "
            f"(the target's figure: {target_rate:.0f} MB/s); kernels waited {_ms(read['wait_us'])}"
        )
    else:
        lines.append(f"streamed: nothing (every weight resident; the target's read figure: {target_rate:.0f} MB/s)")
    lines.append("")
    lines.append(f"{'layer':<32} {'share':>6} {'measured ms':>12} {'planned ms':>11} {'measured/planned':>17}")
    for name, measured in list(nodes.items())[:TABLE_ROWS]:
        plan = planned.get(name)
        ratio = f"{measured / plan:.2f}" if plan else "-"
        plan_text = f"{plan / 1e3:.3f}" if plan is not None else "-"
        share = 100 * measured / kernels
        lines.append(f"{name:<32.32} {share:5.1f}% {measured / 1e3:12.3f} {plan_text:>11} {ratio:>17}")
    if len(nodes) > TABLE_ROWS:
        rest = sum(list(nodes.values())[TABLE_ROWS:])
        lines.append(f"{f'({len(nodes) - TABLE_ROWS} more)':<32} {100 * rest / kernels:5.1f}% {rest / 1e3:12.3f}")
    ratios = [nodes[name] / planned[name] for name in nodes if planned.get(name)]
    if ratios:
        lines.append(f"median measured/planned over {len(ratios)} layers: {statistics.median(ratios):.2f}")
    return "\n".join(lines)


def _ms(us: float) -> str:
    return f"{us / 1e3:.3f} ms"


def measured_machine(target: Target, profile: Profile, source: str) -> Machine:
    """The target's cost-model figures with what a profile of one of its artifacts measured (`masic compile
    --profile`): a table of seconds per timestep by kernel description key (the median over the call sites with
    that key: pieces of a sliced layer and identical layers share one), the median over the call sites of measured
    / estimated time (how much slower or faster than the estimate the device is, for the kernels it did not
    run), and the read figure replaced by the measured bandwidth when the run streamed."""
    if profile.get("target") != target.name:
        raise ProfileError(
            f"{source} was measured for target {profile.get('target')}, not {target.name}; "
            f"profile an artifact built for {target.name}"
        )
    keys, estimated, timesteps = profile.get("keys"), profile.get("estimated_us"), profile.get("timesteps")
    if not isinstance(keys, dict) or not isinstance(estimated, dict) or not isinstance(timesteps, int):
        raise ProfileError(f"{source} is not a profile masic profile wrote: keys, estimated_us or timesteps missing")
    per_key: dict[str, list[float]] = {}
    ratios = []
    for name, total_us in by_node(profile).items():
        if isinstance(keys.get(name), str):
            per_key.setdefault(keys[name], []).append(total_us / 1e6 / timesteps)
        if isinstance(estimated.get(name), float | int) and estimated[name] > 0:
            ratios.append(total_us / estimated[name])
    if not per_key or not ratios:
        raise ProfileError(f"{source} times no kernel call the cost model plans")
    table = {key: statistics.median(seconds) for key, seconds in per_key.items()}
    machine = target.machine
    read = profile["read"]["mb_per_s"] * 1e6 if profile["read"]["bytes"] else machine.read_bytes_per_second
    # the run less its call sites' and waits' times (sums of medians, as the table is: so that a plan of the
    # profiled artifact comes to the profile's median run)
    kernels_us = sum(by_node(profile).values())
    outside_us = profile["run_us"] - kernels_us - profile["read"]["wait_us"]
    reads = sum(load["count"] for load in profile["loads"] if load["bytes"])
    # the waits beyond what the bandwidth explains (reads longer than the kernels), per read
    handover_us = profile["read"]["wait_us"] - max(profile["read"]["us"] - kernels_us, 0.0)
    wait_per_load = max(handover_us, 0.0) / reads / 1e6 if reads else 0.0
    measured = Measured(
        table, statistics.median(ratios), int(profile.get("threads", 1)), max(outside_us, 0.0) / 1e6, wait_per_load
    )
    return replace(machine, read_bytes_per_second=read, measured=measured)


def collect(
    manifest: Manifest,
    remote: Remote | None,
    x: Path | None,
    runs: int,
    progress: Callable[[str], None],
    threads: int = 0,
) -> Profile:
    """Profiles the artifact with `threads` workers (0: one per core), writes OUT/profile.json and returns the
    merged profile."""
    with tempfile.TemporaryDirectory(prefix="masic-input-") as scratch:
        x = x or default_input(manifest, Path(scratch))
        where = f"{remote.host}:{remote.folder}" if remote else "here"
        progress(f"profiling {manifest.folder} {where}, {runs} run(s)")
        if remote:
            profiles = profile_remotely(manifest, remote, x, runs, threads)
        else:
            profiles = profile_locally(manifest, x, runs, threads)
    merged = {
        **merge(profiles),
        "target": manifest.target.name,
        "timesteps": manifest.timesteps,
        "planned_us": dict(manifest.planned_node_us),
        "estimated_us": dict(manifest.planned_node_estimated_us),
        "keys": dict(manifest.planned_node_keys),
    }
    (manifest.folder / PROFILE_FILE).write_text(json.dumps(merged, indent=1) + "\n")
    return merged
