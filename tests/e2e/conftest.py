"""Fixtures for end-to-end tests: the targets, each required to have its toolchain installed."""

from __future__ import annotations

import shutil

import pytest
from masic.targets import get_target

TARGETS = ("x86_64", "aarch64")


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    t = get_target(request.param)
    missing = [tool for tool in (t.cc, *t.emulator) if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    return request.param
