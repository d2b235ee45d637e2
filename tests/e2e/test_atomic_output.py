"""Replacing an artifact folder while another process reads it (`tests/e2e/snapshot_reader.py`): concurrent
compiles into one -o, and compiles interrupted (SIGINT, SIGTERM) or killed (SIGKILL) at random points. Every
snapshot of the folder at rest is one complete generation, the folder never goes missing, an interrupted compile
cleans up and says so in one line, and what a killed compile left is swept by the next compile.

Two models alternate (a: the dense model, b: the conv model with IAF neurons), so that a mixture of their files
cannot pass for either; compiles are deterministic, so each generation's files have fixed hashes. The compiles get
their own TMPDIR, so their sweeps see only this test's build folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MODELS = {
    "a": ("tests.norse_models:dense_model",),
    "b": ("tests.norse_models:iaf_model", "--input-shape", "1,10,10"),
}
FLAGS = ("--target", "x86_64", "--timesteps", "8")
WRITING_SECONDS = 2.0  # about how long a compile of these models builds, links and swaps (kernels cached)
SIGNAL_TRIALS = (
    (signal.SIGINT, "anywhere"),
    (signal.SIGINT, "writing"),
    (signal.SIGINT, "writing"),
    (signal.SIGTERM, "writing"),
)
KILL_TRIALS = ("first-write", "writing", "anywhere")


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under an artifact folder (it has lib/ and include/), by its relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@dataclass(frozen=True)
class Workspace:
    out: Path
    tmp: Path  # the compiles' TMPDIR
    references: Path  # JSON: generation -> file name -> SHA-256
    seconds: float  # how long one compile took, start to exit

    def generation(self) -> str | None:
        files = _digests(self.out)
        return next((g for g, ref in json.loads(self.references.read_text()).items() if ref == files), None)

    def start(self, generation: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "masic.cli", "compile", *MODELS[generation], *FLAGS, "-o", str(self.out)]
        env = {**os.environ, "TMPDIR": str(self.tmp)}
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def leftovers(self) -> list[str]:
        """Temporary folders of compiles: staging folders beside the output, build folders in TMPDIR."""
        staging = [p.name for p in self.out.parent.iterdir() if p.name.startswith(f".{self.out.name}.")]
        return sorted(staging + [p.name for p in self.tmp.iterdir() if p.name.startswith("masic-")])


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """Both generations compiled once: their folders, and the seconds the second compile took."""
    root = tmp_path_factory.mktemp("references")
    folders = {}
    for generation in MODELS:
        folders[generation] = root / generation
        started = time.perf_counter()
        workspace = Workspace(folders[generation], root, root / "none.json", 0.0)
        _, stderr = workspace.start(generation).communicate()
        assert "masic: wrote" in stderr, stderr
        seconds = time.perf_counter() - started
    digests = {g: _digests(folder) for g, folder in folders.items()}
    assert digests["a"]["weights.bin"] != digests["b"]["weights.bin"]
    (root / "references.json").write_text(json.dumps(digests))
    return folders["a"], root / "references.json", seconds


@pytest.fixture
def workspace(references: tuple[Path, Path, float], tmp_path: Path) -> Workspace:
    """An output folder holding generation a, and an empty TMPDIR."""
    first, digests, seconds = references
    shutil.copytree(first, tmp_path / "out")
    (tmp_path / "tmp").mkdir()
    return Workspace(tmp_path / "out", tmp_path / "tmp", digests, seconds)


@contextmanager
def reading(workspace: Workspace) -> Iterator[dict]:
    """Runs the snapshot reader for the duration; the dict receives its summary at the end."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.snapshot_reader", str(workspace.out), str(workspace.references)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    summary: dict = {}
    try:
        yield summary
    finally:
        stdout, _ = reader.communicate("")
        summary.update(json.loads(stdout))


def _assert_only_complete_snapshots(summary: dict) -> None:
    assert summary["failed"] == 0, summary["failures"]
    at_rest = sum(n for g, n in summary["counts"].items() if g != "superseded")
    assert at_rest >= 50, f"the reader saw too little: {summary['counts']}"


def _other(generation: str | None) -> str:
    assert generation in MODELS, "the output folder must hold one complete generation"
    return "b" if generation == "a" else "a"


def test_concurrent_compiles_into_one_folder_leave_one_complete_artifact(workspace: Workspace) -> None:
    with reading(workspace) as summary:
        compiles = [workspace.start(g) for g in ("b", "a")]
        results = [c.communicate()[1] for c in compiles]
        assert [c.returncode for c in compiles] == [0, 0], results
        assert workspace.generation() in MODELS
    _assert_only_complete_snapshots(summary)
    assert workspace.leftovers() == []


def _wait_for_temporary_folders(workspace: Workspace, compile_: subprocess.Popen) -> None:
    """Returns once the compile has both its staging folder and its build folder (it is writing), or has ended."""
    staging, build = f".{workspace.out.name}.partial-p{compile_.pid}-", f"masic-build-p{compile_.pid}-"
    while compile_.poll() is None:
        names = [p.name for p in (*workspace.out.parent.iterdir(), *workspace.tmp.iterdir())]
        if any(n.startswith(staging) for n in names) and any(n.startswith(build) for n in names):
            return
        time.sleep(0.005)


def _wait_until(moment: str, workspace: Workspace, compile_: subprocess.Popen, rng: random.Random) -> None:
    """Waits until a moment of the compile: "anywhere" in its run (after masic's main has started, which
    handles signals from then on), "writing" somewhere after its temporary folders appeared (building, linking,
    swapping), or "first-write" just as they appeared."""
    if moment == "anywhere":
        compile_.stderr.readline()
        time.sleep(rng.uniform(0, workspace.seconds))
        return
    _wait_for_temporary_folders(workspace, compile_)
    if moment == "writing":
        time.sleep(rng.uniform(0, WRITING_SECONDS))


def test_an_interrupted_compile_cleans_up_and_keeps_a_complete_artifact(workspace: Workspace) -> None:
    rng = random.Random(14)
    interrupted = 0
    with reading(workspace) as summary:
        for signum, moment in SIGNAL_TRIALS:
            before = workspace.generation()
            compile_ = workspace.start(_other(before))
            _wait_until(moment, workspace, compile_, rng)
            compile_.send_signal(signum)
            _, stderr = compile_.communicate()
            assert "Traceback" not in stderr
            last = stderr.splitlines()[-1]
            if compile_.returncode == 0:  # finished before the signal
                assert workspace.generation() == _other(before) and last.startswith("masic: wrote")
            else:
                interrupted += 1
                assert (compile_.returncode, last) == (128 + signum, "masic: interrupted"), stderr
                assert workspace.generation() in (before, _other(before))
            assert workspace.leftovers() == []
    _assert_only_complete_snapshots(summary)
    assert interrupted >= 2


def test_a_killed_compile_keeps_a_complete_artifact_and_the_next_compile_sweeps_its_leftovers(
    workspace: Workspace,
) -> None:
    rng = random.Random(9)
    left = []
    with reading(workspace) as summary:
        for moment in KILL_TRIALS:
            before = workspace.generation()
            compile_ = workspace.start(_other(before))
            _wait_until(moment, workspace, compile_, rng)
            compile_.kill()
            compile_.communicate()
            assert workspace.generation() in (before, _other(before))
            left += workspace.leftovers()
        assert left, "the kill at the first write left temporary folders behind"
        after = workspace.start(_other(workspace.generation()))
        assert "masic: wrote" in after.communicate()[1]
    _assert_only_complete_snapshots(summary)
    assert workspace.leftovers() == []
