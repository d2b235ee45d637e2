"""Fixtures for runtime tests: the targets to build for, and one build of the fake model per target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fake_model import Variant, build_artifact
from runtime_harness import TARGETS, Target


@pytest.fixture(scope="session", params=TARGETS, ids=lambda target: target.name)
def target(request: pytest.FixtureRequest) -> Target:
    """Each target; its compiler and emulator must be installed (scripts/setup.sh does it)."""
    missing = request.param.missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    return request.param


@pytest.fixture(scope="session")
def fake_executable(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake model built for `target`, in an artifact folder that tests must not modify."""
    return build_artifact(target, tmp_path_factory.mktemp(f"fake-{target.name}"))


@pytest.fixture(scope="session")
def fake_variant(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Variant], Path]:
    """Builds (once per session) a variant of the fake model for `target`; tests must not modify its folder."""
    built: dict[Variant, Path] = {}

    def build(variant: Variant) -> Path:
        if variant not in built:
            built[variant] = build_artifact(target, tmp_path_factory.mktemp(f"fake-{target.name}"), variant=variant)
        return built[variant]

    return build
