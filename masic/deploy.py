"""`masic deploy OUT [user@]host[:folder]`: put an artifact on a device over SSH, whole or not at all.

1. The artifact is checked here (`read_manifest`), then the device: without a runner, `uname -m` there must be the
   target's machine (aarch64 for the ARM targets). With one (`--runner qemu-aarch64`, an emulated device) the
   runner stands for the device's processor: it must be a command there (`command -v`), and a QEMU user-mode
   runner (`qemu-ARCH`, `qemu-ARCH-static`) must emulate the target's machine; the copy's own check below then
   shows that the runner runs the executable. Other runners (a wrapper script) are taken at their word until that
   check. The folder there must be missing, empty or a previous artifact.
2. The three files are copied into a fresh temporary folder beside the destination (`.NAME.deploy-XXXXXX`), and the
   copy verifies itself there: `model --check` (size and every piece's CRC-32C), exit 0.
3. Only then does it take the destination's place: the previous folder is renamed aside, the new one in, the old
   one removed, in one remote shell that ignores hang-ups, so a dropped connection does not split the step.

An interrupted deploy (Ctrl-C, SIGTERM, a dropped connection) leaves the previous model in place, whole; its
temporary folder is removed then, or by the next deploy to that destination when the deploy was killed outright.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
from pathlib import Path

from masic.errors import MasicError
from masic.interrupts import deferred
from masic.manifest import ARTIFACT_FILES, MANIFEST_FILE, Manifest, read_manifest
from masic.remote import Remote, RemoteError, last_line

STAGING_INFIX = ".deploy-"  # temporary folders beside the destination: .NAME.deploy-XXXXXX
NOT_A_FOLDER = "masic-deploy: not a folder"


class DeployError(MasicError, RuntimeError):
    """The device is not one the artifact runs on, its folder is in the way, or the copy failed its check."""


def deploy(artifact: Path, remote: Remote) -> str:
    """Copies the artifact to `remote.folder` on the device and returns the command that runs it there."""
    manifest = read_manifest(artifact)
    if remote.runner:
        _check_runner(artifact, manifest, remote)
    else:
        machine = remote.run("uname -m", "asking the machine's architecture").stdout.strip()
        if machine != manifest.target.arch:
            raise DeployError(
                f"{remote.host} is {machine}, but {artifact} is built for {manifest.target.arch} "
                f"(target {manifest.target.name}); compile for {machine}, or pass --runner for an emulator there"
            )
    _check_replaceable(remote)
    staging = _make_staging(remote)
    try:
        remote.copy([artifact / name for name in ARTIFACT_FILES], staging)
        check = remote.run(remote.model_command(staging, "--check"), "checking the copy", check=False)
        if check.returncode != 0:
            raise DeployError(
                f"the copy on {remote.host} failed its check, so {remote.folder} was left as it was: "
                f"{last_line(check.stderr, check.returncode)}"
            )
        with deferred():  # once the previous folder moves aside, the new one must follow
            remote.run(_swap_script(staging, remote.folder), "moving the model into place")
    except BaseException:
        # If the link is gone, the next deploy to this folder removes it; the first error is the one to show.
        with contextlib.suppress(RemoteError):
            remote.run(f"rm -rf {shlex.quote(staging)}", "removing the temporary folder", check=False)
        raise
    return remote.ssh_command_line(remote.model_command(remote.folder, "--input", "x.npy"))


def _check_runner(artifact: Path, manifest: Manifest, remote: Remote) -> None:
    """A QEMU user-mode runner must emulate the target's machine, and the runner must be a command on the device."""
    program = remote.runner[0]
    emulated = re.fullmatch(r"qemu-(\w+?)(?:-static)?", posixpath.basename(program))
    if emulated and emulated[1] != manifest.target.arch:
        raise DeployError(
            f"--runner {program} emulates {emulated[1]}, but {artifact} is built for {manifest.target.arch} "
            f"(target {manifest.target.name}); pass --runner qemu-{manifest.target.arch}"
        )
    found = remote.run(f"command -v {shlex.quote(program)}", "looking for the runner", check=False)
    if found.returncode != 0:
        raise DeployError(f"{remote.host} has no command {program} (--runner); install it there, or name another")


def _parent_and_name(folder: str) -> tuple[str, str]:
    parent, name = posixpath.split(folder)
    return parent or ".", name


def _check_replaceable(remote: Remote) -> None:
    """The destination must be missing, an empty folder or a previous artifact."""
    folder = shlex.quote(remote.folder)
    listing = remote.run(
        f"if [ -d {folder} ]; then ls -A {folder}; elif [ -e {folder} ]; then echo '{NOT_A_FOLDER}'; fi",
        "looking at the destination",
    ).stdout.split("\n")
    contents = {name for name in listing if name}
    if NOT_A_FOLDER in contents:
        raise DeployError(f"{remote.host}:{remote.folder} exists and is not a folder")
    if contents and not (contents <= set(ARTIFACT_FILES) and MANIFEST_FILE in contents):
        raise DeployError(
            f"{remote.host}:{remote.folder} holds files that are not a masic artifact; choose another folder"
        )


def _make_staging(remote: Remote) -> str:
    """A new empty folder beside the destination, after removing those deploys killed outright left there."""
    parent, name = _parent_and_name(remote.folder)
    pattern = posixpath.join(parent, f".{name}{STAGING_INFIX}")
    quoted = shlex.quote(pattern)
    command = f"mkdir -p {shlex.quote(parent)} && rm -rf {quoted}* && mktemp -d {quoted}XXXXXX"
    return remote.run(command, "creating a temporary folder").stdout.strip()


def _swap_script(staging: str, folder: str) -> str:
    """Remote shell: the staged folder takes the destination's place; the previous one (if any) is removed."""
    new, dest, old = map(shlex.quote, (staging, folder, f"{staging}.previous"))
    return (
        "trap '' HUP INT TERM; set -e; "
        f"if [ -e {dest} ]; then mv {dest} {old}; mv {new} {dest}; rm -rf {old}; else mv {new} {dest}; fi"
    )
