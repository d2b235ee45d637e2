"""Merging and reading profiles (masic/profile.py), without running anything."""

from __future__ import annotations

import json

import pytest

from masic.profile import ProfileError, by_node, merge, read_profile


def run_profile(scale: float, rss: int) -> dict:
    return {
        "format": "masic-profile/1",
        "model": "m",
        "machine": "aarch64",
        "threads": 1,
        "block": 2,
        "run_us": 100 * scale,
        "kernels_us": 90 * scale,
        "startup_us": {"open": 1 * scale, "read": 2 * scale, "check": 3 * scale},
        "peak_rss_bytes": rss,
        "sites": [
            {"site": 0, "node": "conv", "kernel": "k0", "calls": 2, "total_us": 50 * scale, "median_us": 25 * scale},
            {"site": 1, "node": "cat", "kernel": "k1", "calls": 2, "total_us": 10 * scale, "median_us": 5 * scale},
            {"site": 2, "node": "cat", "kernel": "k1", "calls": 2, "total_us": 30 * scale, "median_us": 15 * scale},
        ],
        "loads": [
            {
                "load": 0,
                "kind": 0,
                "bytes": 64,
                "count": 2,
                "total_us": scale,
                "mb_per_s": 128 / scale,
                "wait_us": 0.5 * scale,
            }
        ],
        "read": {"bytes": 128, "us": scale, "mb_per_s": 128 / scale, "wait_us": 0.5 * scale},
    }


def test_runs_merge_by_median_and_the_largest_peak() -> None:
    merged = merge([run_profile(1, 10), run_profile(3, 30), run_profile(2, 20)])
    assert merged["runs"] == 3 and merged["run_us"] == 200 and merged["peak_rss_bytes"] == 30
    assert merged["startup_us"] == {"open": 2, "read": 4, "check": 6}
    assert [site["total_us"] for site in merged["sites"]] == [100, 20, 60]
    assert merged["loads"][0]["wait_us"] == 1.0 and merged["read"]["mb_per_s"] == 64


def test_call_sites_add_up_per_layer_largest_first() -> None:
    assert by_node(run_profile(1, 0)) == {"conv": 50, "cat": 40}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "is not a profile: Expecting"),
        ('{"format": "other"}', "format must be 'masic-profile/1'"),
        (json.dumps({**run_profile(1, 0), "sites": {}}), "sites is missing or of the wrong type"),
    ],
)
def test_what_is_not_a_profile_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ProfileError, match=problem):
        read_profile(text, "p.json")
