"""masic.workdirs and masic.interrupts: a folder replaced in one step (with and without renameat2's exchange),
leftovers of killed runs swept and live ones kept, SIGINT/SIGTERM turned into a clean exception and deferred."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from masic import workdirs
from masic.interrupts import Interrupted, deferred, handling_signals
from masic.workdirs import owned_dir, partial_prefix, replacing, sweep


@pytest.fixture(params=["exchange", "rename-aside"])
def swap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with renameat2, and again as on a system without it."""
    if request.param == "rename-aside":
        monkeypatch.setattr(workdirs, "_libc_renameat2", lambda: None)
    else:
        assert workdirs._libc_renameat2() is not None, "this glibc has renameat2 (2.28 and later do)"
    return request.param


def _fill(folder: Path, text: str) -> None:
    for name in ("model", "weights.bin", "manifest.json"):
        (folder / name).write_text(f"{text} {name}")


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_new_folder_appears_complete(tmp_path: Path, swap: str) -> None:
    out = tmp_path / "out"
    with replacing(out) as staging:
        _fill(staging, "new")
        assert not out.exists()
    assert _contents(out) == {name: f"new {name}" for name in ("model", "weights.bin", "manifest.json")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_is_replaced_and_the_previous_content_removed(tmp_path: Path, swap: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _fill(out, "old")
    (out / "memory.png").write_text("old picture")
    inode = out.stat().st_ino
    with replacing(out) as staging:
        _fill(staging, "new")
        assert _contents(out)["model"] == "old model"  # untouched until the block completes
    assert _contents(out) == {name: f"new {name}" for name in ("model", "weights.bin", "manifest.json")}
    assert out.stat().st_ino != inode  # a different folder took the name: one step, not a refill
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("error", [RuntimeError("link failed"), Interrupted(signal.SIGINT)])
def test_a_failed_or_interrupted_build_leaves_the_previous_folder(
    tmp_path: Path, swap: str, error: BaseException
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _fill(out, "old")
    with pytest.raises(type(error)), replacing(out) as staging:
        _fill(staging, "new")
        raise error
    assert _contents(out)["weights.bin"] == "old weights.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_with_the_exchange_the_folder_is_complete_before_and_after_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic where the reader of tests/e2e/test_atomic_output.py is statistical: each file-system call of
    the replacement is wrapped, and before and after each the output folder holds one complete generation."""
    out = tmp_path / "out"
    out.mkdir()
    _fill(out, "old")
    generations = [{name: f"{g} {name}" for name in ("model", "weights.bin", "manifest.json")} for g in ("old", "new")]
    calls = []

    def checked(name: str, function):
        def call(*args, **kwargs):
            assert out.is_dir() and _contents(out) in generations, f"before {name}"
            calls.append(name)
            result = function(*args, **kwargs)
            assert out.is_dir() and _contents(out) in generations, f"after {name}"
            return result

        return call

    monkeypatch.setattr(workdirs, "_rename2", checked("renameat2", workdirs._rename2))
    monkeypatch.setattr(os, "rename", checked("rename", os.rename))
    monkeypatch.setattr(workdirs.shutil, "rmtree", checked("rmtree", workdirs.shutil.rmtree))
    with replacing(out) as staging:
        _fill(staging, "new")
    assert _contents(out) == generations[1]
    assert calls[-2:] == ["renameat2", "rmtree"]  # one exchange, then the previous folder is deleted


def test_a_symlinked_output_replaces_the_folder_it_points_to(tmp_path: Path, swap: str) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    with replacing(tmp_path / "out") as staging:
        _fill(staging, "new")
    assert (tmp_path / "out").is_symlink() and _contents(tmp_path / "real")["model"] == "new model"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _holding_lock(folder: Path) -> subprocess.Popen:
    """A process that holds the folder's flock, as a live owner in another pid namespace would."""
    code = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_sweep_removes_only_abandoned_folders(tmp_path: Path) -> None:
    prefix = partial_prefix(tmp_path / "out")
    dead = _dead_pid()
    abandoned = [tmp_path / f"{prefix}p{dead}-abc", tmp_path / f"{prefix}p{dead}-def.old"]
    live = tmp_path / f"{prefix}p{os.getpid()}-ghi"  # a compile running in this process
    locked = tmp_path / f"{prefix}p{dead}-jkl"  # its pid means nothing here, but its owner holds the lock
    foreign = tmp_path / f"{prefix}p{dead}-mno"  # another user's
    unnamed = tmp_path / f"{prefix}qrstuvwx"  # no pid: another program's, or an earlier masic's
    not_folder = tmp_path / f"{prefix}p{dead}-file"
    for folder in (*abandoned, live, locked, foreign, unnamed):
        folder.mkdir()
        (folder / "weights.bin").write_text("w")
    not_folder.write_text("a file")
    os.chown(foreign, 12345, 12345)
    holder = _holding_lock(locked)
    try:
        sweep(tmp_path, prefix)
    finally:
        holder.communicate("")
    assert not any(folder.exists() for folder in abandoned)
    assert all(p.exists() for p in (live, locked, foreign, unnamed, not_folder))


def test_owned_dir_sweeps_first_and_cleans_up_after(tmp_path: Path) -> None:
    stale = tmp_path / f"masic-build-p{_dead_pid()}-xyz"
    stale.mkdir()
    with owned_dir(tmp_path, "masic-build-") as folder:
        assert not stale.exists()
        assert folder.name.startswith(f"masic-build-p{os.getpid()}-")
        (folder / "kernels.o").write_text("o")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_raise_interrupted_and_wait_for_deferred_sections(signum: int) -> None:
    steps = []
    with handling_signals():
        with pytest.raises(Interrupted) as raised:
            os.kill(os.getpid(), signum)
            signal.pause()  # the handler runs and raises
        assert raised.value.exit_status == 128 + signum
        with pytest.raises(Interrupted):
            with deferred():
                os.kill(os.getpid(), signum)
                steps.append("finished the section")
            steps.append("went on after it")
    assert steps == ["finished the section"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the previous handlers are back
