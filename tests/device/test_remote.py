"""How masic spells ssh and scp commands for a destination (masic/remote.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from masic.remote import Remote, RemoteError


@pytest.mark.parametrize(
    ("destination", "host", "folder"),
    [
        ("pi@device", "pi@device", "out"),
        ("device:models/vgg/", "device", "models/vgg"),
        ("pi@device:~/vgg", "pi@device", "vgg"),
        ("pi@device:/srv/vgg", "pi@device", "/srv/vgg"),
    ],
)
def test_destinations(destination: str, host: str, folder: str) -> None:
    remote = Remote.parse(destination, "out")
    assert (remote.host, remote.folder) == (host, folder)


@pytest.mark.parametrize("destination", ["", ":vgg", "pi@device:", "pi@device:.", "a/b:vgg", "pi device"])
def test_bad_destinations_are_refused(destination: str) -> None:
    with pytest.raises(RemoteError, match="destination"):
        Remote.parse(destination, "" if destination.endswith(":") else "out")


def test_options_reach_ssh_and_scp() -> None:
    remote = Remote.parse("pi@device:m", "out", port=2222, identity=Path("k"), options=("A=b",), runner=("qemu",))
    assert remote.ssh_argv("uname -m") == ["ssh", "-p", "2222", "-i", "k", "-o", "A=b", "pi@device", "uname -m"]
    assert remote.scp_argv([Path("x/model")], "m.tmp") == [
        *("scp", "-q", "-r", "-P", "2222", "-i", "k", "-o", "A=b"),
        *("x/model", "pi@device:m.tmp/"),
    ]
    assert remote.model_command("m b", "--input", "x.npy") == "qemu 'm b/model' --input x.npy"
