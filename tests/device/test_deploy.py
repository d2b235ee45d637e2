"""`masic deploy` against a real sshd on this machine: artifacts copied, checked there, run there; a wrong
architecture, a runner that emulates another machine or is missing there, a folder in the way and an unreachable
device refused in one line; a deploy killed (SIGKILL) or terminated (SIGTERM) midway leaves the previous model
whole."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from norse.torch import LICell, SequentialState

from masic import manifest
from tests.artifacts import compile_model, fake_manifest, masic_cli, write_fake_artifact
from tests.device.sshd import SshServer, free_port
from tests.norse_models import MODELS, random_input

HERE = Path(__file__).resolve().parent
ARTIFACT_FILES = sorted(manifest.ARTIFACT_FILES)  # what a deployed folder holds, and nothing else


def contents(folder: Path) -> dict[str, bytes]:
    """Every file of an artifact folder (lib/ and include/ too) by its path inside it, and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The iaf test model compiled for each target, once."""
    factory, shape = MODELS["iaf"]
    built = {}
    for target in ("x86_64", "aarch64"):
        built[target] = compile_model(factory(), shape, target, tmp_path_factory.mktemp(target), "--timesteps", "4")
    return built


def deploy(sshd: SshServer, artifact: Path, folder: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    run = masic_cli("deploy", str(artifact), f"{sshd.host}:{folder}", *sshd.flags(), *flags)
    return subprocess.CompletedProcess([], run.returncode, run.stdout, run.stderr)


def run_printed_command(printed: str, x: Path) -> dict:
    """Runs the command deploy printed, with a real input for its x.npy; returns the model's JSON line."""
    argv = shlex.split(printed)
    remote = shlex.split(argv[-1])
    argv[-1] = shlex.join([str(x) if word == "x.npy" else word for word in remote])
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.deploy-"))


def local_prediction(artifact: Path, x: Path) -> int:
    run = masic_cli("run", str(artifact), "--input", str(x))
    assert run.returncode == 0, run.stderr
    return run.stats["prediction"]


def input_file(folder: Path) -> Path:
    _, shape = MODELS["iaf"]
    path = folder / "x.npy"
    np.save(path, random_input(shape, 4, seed=1).astype(np.float32))
    return path


@pytest.mark.slow
def test_x86_64_artifact_is_deployed_and_runs_there(
    sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "device" / "model"
    done = deploy(sshd, artifacts["x86_64"], folder)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ARTIFACT_FILES and leftovers(folder) == []
    assert contents(folder) == contents(artifacts["x86_64"])
    printed = done.stdout.strip().splitlines()[-1]
    assert printed.startswith("ssh -p ") and printed.endswith(shlex.quote(f"{folder}/model --input x.npy"))
    x = input_file(tmp_path)
    assert run_printed_command(printed, x)["prediction"] == local_prediction(artifacts["x86_64"], x)


@pytest.mark.slow
def test_aarch64_artifact_is_deployed_with_a_runner_and_runs_there(
    sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "pi" / "model"
    done = deploy(sshd, artifacts["aarch64"], folder, "--runner", "qemu-aarch64")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()[-1]
    assert printed.endswith(shlex.quote(f"qemu-aarch64 {folder}/model --input x.npy"))
    x = input_file(tmp_path)
    assert run_printed_command(printed, x)["prediction"] == local_prediction(artifacts["aarch64"], x)


@pytest.mark.slow
def test_a_wrong_architecture_is_refused(sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "device" / "model"
    done = deploy(sshd, artifacts["aarch64"], folder)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"masic: error: {sshd.host} is x86_64, but {artifacts['aarch64']} is built for aarch64 (target aarch64); "
        "compile for x86_64, or pass --runner for an emulator there"
    ]
    assert not folder.parent.exists(), "nothing is copied to a device the model cannot run on"


@pytest.mark.slow
def test_a_copy_failing_its_check_is_not_moved_into_place(
    sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """A runner that damages weights.bin stands for a bad copy: the previous model stays."""
    folder = tmp_path / "device" / "model"
    assert deploy(sshd, artifacts["x86_64"], folder).returncode == 0
    before = (folder / "weights.bin").stat().st_ino
    damage = (
        'sh -c \'printf x | dd of="$(dirname "$0")/weights.bin" bs=1 seek=10 conv=notrunc 2>/dev/null; exec "$0" "$@"\''
    )
    done = deploy(sshd, artifacts["x86_64"], folder, "--runner", damage)
    assert done.returncode == 2
    assert "failed its check, so" in done.stderr and "is corrupted (resident weight at bytes" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (folder / "weights.bin").stat().st_ino == before and leftovers(folder) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runner", "refusal"),
    [
        (
            "qemu-x86_64",
            "--runner qemu-x86_64 emulates x86_64, but {artifact} is built for aarch64 (target aarch64); "
            "pass --runner qemu-aarch64",
        ),
        (
            "qemu-aarch64-not-here",
            "{host} has no command qemu-aarch64-not-here (--runner); install it there, or name another",
        ),
    ],
)
def test_a_runner_that_cannot_run_the_artifact_there_is_refused(
    sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path, runner: str, refusal: str
) -> None:
    folder = tmp_path / "pi" / "model"
    done = deploy(sshd, artifacts["aarch64"], folder, "--runner", runner)
    assert done.returncode == 2
    message = refusal.format(artifact=artifacts["aarch64"], host=sshd.host)
    assert done.stderr.strip().splitlines() == [f"masic: error: {message}"]
    assert not folder.parent.exists(), "nothing is copied before the runner is known to fit"


def _interrupt_a_deploy(
    sshd: SshServer, previous: Path, tmp_path: Path, stop: Callable[[subprocess.Popen[bytes]], None]
) -> tuple[Path, Path, int]:
    """Deploys `previous`, then starts a deploy of a bigger artifact over a link of 200 kB/s (its copy takes
    seconds) and `stop`s it once weights.bin has begun to arrive in the temporary folder; checks that the previous
    model is still there, whole and runnable. Returns the destination folder, the bigger artifact and the stopped
    deploy's exit status."""
    folder = tmp_path / "device" / "model"
    assert deploy(sshd, previous, folder).returncode == 0
    before = contents(folder)
    big = compile_model(*_big_model(), "x86_64", tmp_path, "--timesteps", "2")
    proxy = f"ProxyCommand={sys.executable} {HERE / 'throttle.py'} 127.0.0.1 {sshd.port} 200000"
    command = [sys.executable, "-m", "masic.cli", "deploy", str(big), f"{sshd.host}:{folder}", *sshd.flags()]
    deploying = subprocess.Popen([*command, "-o", proxy], start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any((folder.parent / name / "weights.bin").exists() for name in leftovers(folder)):
            assert deploying.poll() is None and time.monotonic() < deadline, "the copy did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        stop(deploying)
        deploying.wait(timeout=60)
    finally:
        if deploying.poll() is None:
            os.killpg(deploying.pid, signal.SIGKILL)
            deploying.wait()
    assert contents(folder) == before
    assert sshd.ssh(f"{folder}/model --check").returncode == 0
    x = input_file(tmp_path)
    assert sshd.ssh(f"{folder}/model --input {x}").returncode == 0
    return folder, big, deploying.returncode


@pytest.mark.slow
def test_a_deploy_killed_midway_leaves_the_previous_model_runnable(
    sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    # SIGKILL to masic and the scp and ssh it started: nothing cleans up.
    folder, big, _ = _interrupt_a_deploy(
        sshd, artifacts["x86_64"], tmp_path, lambda deploying: os.killpg(deploying.pid, signal.SIGKILL)
    )
    # The next deploy removes what the killed one left.
    assert leftovers(folder)
    assert deploy(sshd, big, folder).returncode == 0
    assert leftovers(folder) == [] and (folder / "weights.bin").read_bytes() == (big / "weights.bin").read_bytes()


@pytest.mark.slow
def test_a_deploy_terminated_midway_leaves_the_previous_model_and_no_temporary_folder(
    sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    # SIGTERM to masic alone, as a service manager or `kill` stops it.
    folder, _, status = _interrupt_a_deploy(
        sshd, artifacts["x86_64"], tmp_path, lambda deploying: deploying.send_signal(signal.SIGTERM)
    )
    assert status == 128 + signal.SIGTERM
    assert leftovers(folder) == [], "a deploy that was asked to stop removes its temporary folder"


def _big_model() -> tuple[SequentialState, tuple[int, ...]]:
    """8 MB of weights."""
    torch.manual_seed(0)
    return SequentialState(torch.nn.Linear(1024, 2048), LICell()), (1024,)


def test_a_folder_in_the_way_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    artifact = write_fake_artifact(tmp_path / "out", fake_manifest((4,), (2,), 4))
    folder = tmp_path / "device" / "notes"
    folder.mkdir(parents=True)
    (folder / "diary.txt").write_text("mine")
    done = deploy(sshd, artifact, folder)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"masic: error: {sshd.host}:{folder} holds files that are not a masic artifact; choose another folder"
    ]
    assert (folder / "diary.txt").read_text() == "mine" and leftovers(folder) == []


def test_an_unreachable_device_is_refused_in_one_line(tmp_path: Path) -> None:
    artifact = write_fake_artifact(tmp_path / "out", fake_manifest((4,), (2,), 4))
    run = masic_cli("deploy", str(artifact), "root@127.0.0.1:model", "-p", str(free_port()), "-o", "BatchMode=yes")
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("masic: error: asking the machine's architecture on root@127.0.0.1 failed: ssh: connect")


@pytest.mark.slow
def test_profile_over_ssh_brings_the_profile_back_to_plan_with(
    sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "device" / "model"
    assert deploy(sshd, artifacts["x86_64"], folder).returncode == 0
    run = masic_cli(
        "profile", str(artifacts["x86_64"]), "--host", f"{sshd.host}:{folder}", "--runs", "2", *sshd.flags()
    )
    assert run.returncode == 0, run.stderr
    profile = json.loads((artifacts["x86_64"] / "profile.json").read_text())
    assert profile["runs"] == 2 and profile["machine"] == "x86_64" and profile["sites"]
    assert sorted(p.name for p in folder.iterdir()) == ARTIFACT_FILES, "the run leaves nothing in the model's folder"
    # ... and the model recompiles with what the device measured
    factory, shape = MODELS["iaf"]
    profile_path = artifacts["x86_64"] / "profile.json"
    replanned = compile_model(factory(), shape, "x86_64", tmp_path, "--timesteps", "4", "--profile", str(profile_path))
    planned = json.loads((replanned / "manifest.json").read_text())["planned"]
    assert planned["by"].startswith(f"profile {profile_path}, measured on x86_64 at ")


def test_profile_refuses_a_folder_that_holds_another_artifact(sshd: SshServer, tmp_path: Path) -> None:
    artifact = write_fake_artifact(tmp_path / "out", fake_manifest((4,), (2,), 4))
    folder = tmp_path / "device" / "empty"
    folder.mkdir(parents=True)
    run = masic_cli("profile", str(artifact), "--host", f"{sshd.host}:{folder}", *sshd.flags())
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"masic: error: {sshd.host}:{folder} does not hold {artifact}; run masic deploy {artifact} first"
    )
