"""Fixtures for tests against a device: a real OpenSSH server on this machine (scripts/setup.sh installs it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.device.sshd import SSHD, SshServer, running_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not SSHD.exists():
        pytest.fail(f"{SSHD} not installed: run scripts/setup.sh")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
