"""A device reached over SSH with the system's OpenSSH client (`ssh`, `scp`), so ~/.ssh/config, agents and known
hosts work as they do for the user. `-p PORT`, `-i KEY` and `-o OPTION` are passed through to both programs
(`scp` spells the port `-P`). Remote commands are single strings for the remote shell, every word quoted; a
runner (`qemu-aarch64` for an emulated device) prefixes the commands that run a model.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from masic.errors import MasicError

SSH_FAILED = 255  # ssh's status when the connection itself failed


class RemoteError(MasicError, RuntimeError):
    """The device could not be reached, or a command on it failed."""


@dataclass(frozen=True)
class Remote:
    host: str  # [user@]host, as ssh takes it
    folder: str  # the folder on the device the command is about
    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()  # ssh -o options
    runner: tuple[str, ...] = ()  # prefix of commands that run a model there

    @classmethod
    def parse(
        cls,
        destination: str,
        default_folder: str,
        port: int | None = None,
        identity: Path | None = None,
        options: tuple[str, ...] = (),
        runner: tuple[str, ...] = (),
    ) -> Remote:
        """`[user@]host[:folder]`; the folder defaults to `default_folder` (relative to the remote home)."""
        match = re.fullmatch(r"([^:/\s]+)(?::(.*))?", destination)
        if not match:
            raise RemoteError(f"destination {destination!r} is not [user@]host[:folder]")
        host, folder = match[1], (match[2] or default_folder).rstrip("/")
        folder = folder.removeprefix("~/")  # the remote shell's home: relative paths start there
        if not folder or folder in (".", ".."):
            raise RemoteError(f"destination {destination!r} names no folder to put the model in")
        return cls(host, folder, port, identity, options, runner)

    def _common(self) -> list[str]:
        flags: list[str] = []
        if self.identity:
            flags += ["-i", str(self.identity)]
        for option in self.options:
            flags += ["-o", option]
        return flags

    def ssh_argv(self, command: str) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *port, *self._common(), self.host, command]

    def scp_argv(self, files: Sequence[Path], folder: str) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        # -r: an artifact holds folders too (lib/, include/)
        return ["scp", "-q", "-r", *port, *self._common(), *map(str, files), f"{self.host}:{folder}/"]

    def run(self, command: str, what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs `command` on the device; a failed connection (or, with `check`, a failed command) is refused in one
        line saying `what` was being done."""
        done = subprocess.run(self.ssh_argv(command), capture_output=True, text=True, check=False)
        if done.returncode == SSH_FAILED or (check and done.returncode != 0):
            raise RemoteError(f"{what} on {self.host} failed: {last_line(done.stderr, done.returncode)}")
        return done

    def copy(self, files: Sequence[Path], folder: str) -> None:
        done = subprocess.run(self.scp_argv(files, folder), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RemoteError(f"copying to {self.host}:{folder} failed: {last_line(done.stderr, done.returncode)}")

    def model_command(self, folder: str, *args: str) -> str:
        """The remote shell command that runs the model in `folder` with `args`."""
        return shlex.join([*self.runner, f"{folder}/model", *args])

    def ssh_command_line(self, command: str) -> str:
        """How the user runs `command` there themselves."""
        return shlex.join(self.ssh_argv(command))


def last_line(stderr: str, status: int) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {status}"
