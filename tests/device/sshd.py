"""A real OpenSSH server for tests: /usr/sbin/sshd on 127.0.0.1 at a free port, with its own temporary host key,
authorized key and configuration, and the client options that reach it with them."""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")  # scp speaks SFTP to the server since OpenSSH 9
PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")  # sshd refuses to start without it
START_TIMEOUT_S = 20


@dataclass(frozen=True)
class SshServer:
    port: int
    key: Path  # the client's private key, authorized for this user (root, as the tests run)
    known_hosts: Path  # holds the server's host key

    @property
    def host(self) -> str:
        return f"{getpass.getuser()}@127.0.0.1"

    def flags(self) -> list[str]:
        """masic deploy / profile options that reach this server, host key checked, never a prompt."""
        return ["-p", str(self.port), "-i", str(self.key), *(f for o in self.options() for f in ("-o", o))]

    def options(self) -> list[str]:
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes", "BatchMode=yes"]

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        """Runs a command there with the system's ssh."""
        argv = ["ssh", "-p", str(self.port), "-i", str(self.key), *(f"-o{o}" for o in self.options()), self.host]
        return subprocess.run([*argv, command], capture_output=True, text=True, timeout=120, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    """A new ed25519 key pair at path and path.pub; returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@contextmanager
def running_sshd(folder: Path) -> Iterator[SshServer]:
    """sshd in the foreground (-D), logging to stderr (-e), stopped when the block ends."""
    host_public = keygen(folder / "host_key")
    client_public = keygen(folder / "client_key")
    (folder / "authorized_keys").write_text(client_public + "\n")
    port = free_port()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"Subsystem sftp {SFTP_SERVER}\n"
    )
    PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755, exist_ok=True)
    log = (folder / "sshd.log").open("w")
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=log)
    try:
        sshd = SshServer(port, folder / "client_key", known_hosts)
        deadline = time.monotonic() + START_TIMEOUT_S
        while sshd.ssh("true").returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.2)
        yield sshd
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
