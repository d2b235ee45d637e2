"""The model inside the user's program: the artifact's C library (examples/embed, embed_check.c), `out/model --stream`
and `masic_runtime.py`, checked against `out/model`'s batch runs bit for bit, natively and under qemu-aarch64, on the
digits model resident with an early exit and with its weights streamed under a small budget."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from masic.targets import get_target

from masic.codegen.sources import SANITIZE_ENV, SANITIZER_FLAGS
from tests.artifacts import EMBED_EXAMPLE, build_embed_example, compile_spec, import_runtime
from tests.runtime.runtime_harness import SANITIZER_ENV

pytestmark = pytest.mark.slow

CHECK_SOURCE = Path(__file__).with_name("embed_check.c")
MODEL = "examples.digits:digits_model"
SHAPE = (1, 8, 8)
STEPS = 16
# (flags, what they give): an exit rule that fires early on random weights, and a budget under which the weights
# stream in blocks of two steps.
KINDS = {"early-exit": ("--exit-stable", "3"), "streamed": ("--budget", "20KB")}


def _compile(tmp: Path, target: str, kind: str) -> Path:
    t = get_target(target)
    missing = [tool for tool in (t.cc, *t.emulator) if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    tmp.mkdir(parents=True, exist_ok=True)
    return compile_spec(MODEL, target, tmp, "--input-shape", ",".join(map(str, SHAPE)), *KINDS[kind])


class _Artifacts(dict):
    """(target, kind) -> artifact folder, compiled on first use."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, key: tuple[str, str]) -> Path:
        self[key] = _compile(self.root / "-".join(key), *key)
        return self[key]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> _Artifacts:
    return _Artifacts(tmp_path_factory.mktemp("embed"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path, Path]:
    """A sequence of STEPS inputs, as .npy for out/model and as raw frames for the library's programs."""
    folder = tmp_path_factory.mktemp("frames")
    x = np.random.default_rng(7).random((STEPS, *SHAPE), dtype=np.float32)
    np.save(folder / "x.npy", x)
    x.tofile(folder / "x.raw")
    return x, folder / "x.npy", folder / "x.raw"


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **kwargs)


def _batch(out: Path, x_npy: Path, tmp: Path, *flags: str) -> tuple[dict, np.ndarray]:
    """out/model on the sequence: its JSON line and the outputs of the steps it ran."""
    y = tmp / "y.npy"
    run = _run([*_command(out), "--input", str(x_npy), "--output", str(y), *flags])
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1]), np.load(y)


def _command(out: Path) -> list[str]:
    """How to start out/model here: under the target's emulator, if any."""
    manifest = json.loads((out / "manifest.json").read_text())
    return [*manifest["target"]["emulator"], str(out / "model")]


def _first_sample(text: str) -> tuple[np.ndarray, int, int]:
    """predict's step lines up to its first prediction line, as float32, and that prediction and step count."""
    rows = []
    for line in text.splitlines():
        if line.startswith("prediction"):
            _, prediction, _, steps, _ = line.split()
            return np.array(rows, dtype=np.float32), int(prediction), int(steps)
        rows.append([float(v) for v in line.split(":")[1].split()])
    raise AssertionError(f"no prediction line in {text!r}")


@pytest.mark.parametrize("target", ["x86_64", "aarch64"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_c_example_equals_the_executable(
    artifacts: _Artifacts, frames: tuple, target: str, kind: str, tmp_path: Path
) -> None:
    out = artifacts[target, kind]
    _, x_npy, x_raw = frames
    predict = build_embed_example(out, get_target(target).cc, tmp_path)
    run = _run([*get_target(target).emulator, str(predict), str(out / "weights.bin"), str(x_raw)])
    assert run.returncode == 0, run.stderr
    outputs, prediction, steps = _first_sample(run.stdout)
    stats, expected = _batch(out, x_npy, tmp_path)
    assert (prediction, steps) == (stats["prediction"], stats["timesteps"])
    assert outputs.tobytes() == expected.astype(np.float32).tobytes()
    if kind == "early-exit":
        assert steps < STEPS and stats["exited_early"]
    else:
        assert stats["weight_bytes_read"] > stats["weights_bytes"]  # weights were streamed, more than once


def _build_check(out: Path, binary: Path, flags: tuple[str, ...] = ()) -> Path:
    command = ["cc", "-O1", "-std=c11", "-Wall", "-Wextra", "-Werror", *flags, f"-I{out / 'include'}"]
    build = _run([*command, "-o", str(binary), str(CHECK_SOURCE), str(out / "lib" / "libmasic_model.a"), "-lpthread"])
    assert build.returncode == 0, build.stderr
    return binary


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_sessions_interleaved_reset_and_run_agree(
    artifacts: _Artifacts, frames: tuple, kind: str, tmp_path: Path
) -> None:
    out = artifacts["x86_64", kind]
    check = _build_check(out, tmp_path / "embed_check")
    run = _run([str(check), str(out / "weights.bin"), str(frames[2]), str(STEPS)])
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok: ")


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The streamed digits model built with AddressSanitizer and UndefinedBehaviorSanitizer (library and model)."""
    os.environ[SANITIZE_ENV] = "1"
    try:
        return _compile(tmp_path_factory.mktemp("sanitized"), "x86_64", "streamed")
    finally:
        del os.environ[SANITIZE_ENV]


@pytest.mark.sanitizer
def test_library_under_sanitizers_reports_nothing(sanitized: Path, frames: tuple, tmp_path: Path) -> None:
    check = _build_check(sanitized, tmp_path / "embed_check", SANITIZER_FLAGS)
    env = {**os.environ, **dict(SANITIZER_ENV)}
    run = _run([str(check), str(sanitized / "weights.bin"), str(frames[2]), str(STEPS)], env=env)
    assert run.returncode == 0, run.stderr
    assert "ok: " in run.stdout and "runtime error" not in run.stderr
    with frames[2].open("rb") as stdin:
        stream = _run([str(sanitized / "model"), "--stream"], stdin=stdin, env=env)
    assert stream.returncode == 0, stream.stderr
    assert len(stream.stdout.splitlines()) == STEPS


# ---- out/model --stream ----


def _stream(out: Path, stdin_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    with stdin_path.open("rb") as stdin:
        return _run([*_command(out), *flags], stdin=stdin)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_stream_equals_the_batch_run(artifacts: _Artifacts, frames: tuple, kind: str, tmp_path: Path) -> None:
    out = artifacts["x86_64", kind]
    run = _stream(out, frames[2], "--stream", "--no-exit")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    rows = np.array([line.split() for line in run.stdout.splitlines()], dtype=np.float64)
    stats, expected = _batch(out, frames[1], tmp_path, "--no-exit")
    assert rows[:, 0].tolist() == list(range(1, STEPS + 1))  # one sample of STEPS steps
    assert rows[:, 3:].astype(np.float32).tobytes() == expected.tobytes()
    assert int(rows[-1, 1]) == stats["prediction"]


def test_stream_samples_equal_the_labelled_run(artifacts: _Artifacts, frames: tuple, tmp_path: Path) -> None:
    out = artifacts["x86_64", "early-exit"]
    x = frames[0]
    x.tofile(tmp_path / "samples.raw")
    np.save(tmp_path / "samples.npy", x)
    np.save(tmp_path / "labels.npy", np.zeros(len(x), dtype=np.int64))
    run = _stream(out, tmp_path / "samples.raw", "--stream-samples")
    assert run.returncode == 0, run.stderr
    command = [*_command(out), "--input", str(tmp_path / "samples.npy"), "--labels"]
    batch = _run([*command, str(tmp_path / "labels.npy"), "--predictions", str(tmp_path / "p.npy")])
    assert batch.returncode == 0, batch.stderr
    assert np.loadtxt(run.stdout.splitlines(), dtype=np.int64).tolist() == np.load(tmp_path / "p.npy").tolist()


def test_stream_refuses_a_truncated_frame(artifacts: _Artifacts, frames: tuple, tmp_path: Path) -> None:
    out = artifacts["x86_64", "early-exit"]
    (tmp_path / "short.raw").write_bytes(frames[2].read_bytes()[: 256 + 100])
    run = _stream(out, tmp_path / "short.raw", "--stream", "--no-exit")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "model: error: standard input ended inside frame 2: 100 of its 256 bytes (a frame is one float32 input of "
        "shape (1, 8, 8))"
    ]
    assert len(run.stdout.splitlines()) == 1  # the whole frame before it was answered


def test_stream_reports_a_closed_pipe(artifacts: _Artifacts, frames: tuple) -> None:
    out = artifacts["x86_64", "early-exit"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before the model starts: its first line meets EPIPE, never a buffer
    try:
        with frames[2].open("rb") as stdin:
            run = subprocess.run(
                [str(out / "model"), "--stream"], stdin=stdin, stdout=write_end, stderr=subprocess.PIPE, timeout=120
            )
    finally:
        os.close(write_end)
    assert run.returncode == 1
    assert run.stderr.decode().splitlines() == [
        "model: error: standard output was closed after 0 lines (the reader of the pipe went away)"
    ]


# ---- masic_runtime.py ----


def test_python_runtime_run_step_reset(artifacts: _Artifacts, frames: tuple, tmp_path: Path) -> None:
    out = artifacts["x86_64", "early-exit"]
    runtime = import_runtime(out)
    x, x_npy, _ = frames
    stats, expected = _batch(out, x_npy, tmp_path)
    with runtime.Model(str(out)) as model:
        result = model.run(x, steps=STEPS, outputs=True)
        assert (result["prediction"], result["steps_run"]) == (stats["prediction"], stats["timesteps"])
        assert result["exited_early"] and result["outputs"].tobytes() == expected.tobytes()
        model.reset()
        stepped = []
        for frame in x:
            y, exit_now = model.step(frame)
            stepped.append(y)
            if exit_now:
                break
        assert np.stack(stepped).tobytes() == expected.tobytes()
        assert model.stats()["prediction"] == stats["prediction"]
        with pytest.raises(runtime.MasicError, match="the input holds 3 values; the model takes 64"):
            model.step([1.0, 2.0, 3.0])


def test_python_example_equals_the_executable(artifacts: _Artifacts, frames: tuple, tmp_path: Path) -> None:
    out = artifacts["x86_64", "early-exit"]
    run = _run([sys.executable, str(EMBED_EXAMPLE / "predict.py"), str(out), str(frames[2])])
    assert run.returncode == 0, run.stderr
    outputs, prediction, steps = _first_sample(run.stdout)
    stats, expected = _batch(out, frames[1], tmp_path)
    assert (prediction, steps) == (stats["prediction"], stats["timesteps"])
    assert outputs.tobytes() == expected.tobytes()


def test_python_runtime_without_numpy(artifacts: _Artifacts, frames: tuple) -> None:
    """masic_runtime on a device without numpy: lists in, lists out, the same floats."""
    out = artifacts["x86_64", "early-exit"]
    x = frames[0]
    script = (
        "import json, sys; sys.modules['numpy'] = None; sys.path.insert(0, sys.argv[1]); import masic_runtime\n"
        "model = masic_runtime.Model(sys.argv[1]); frame = json.loads(sys.argv[2])\n"
        "y, exit_now = model.step(frame); stats = model.run(frame, steps=4, outputs=True)\n"
        "print(json.dumps([y, exit_now, stats['outputs'], stats['steps_run']]))"
    )
    run = _run([sys.executable, "-c", script, str(out), json.dumps(x[0].tolist())])
    assert run.returncode == 0, run.stderr
    y, exit_now, outputs, steps_run = json.loads(run.stdout)
    with import_runtime(out).Model(str(out)) as model:
        expected_y, expected_exit = model.step(x[0])
        expected = model.run(x[0], steps=4, outputs=True)
    assert np.array(y, dtype=np.float32).tobytes() == expected_y.tobytes() and exit_now == expected_exit
    assert np.array(outputs, dtype=np.float32).tobytes() == expected["outputs"].tobytes()
    assert isinstance(outputs[0], list) and steps_run == expected["steps_run"]


def test_python_runtime_two_models_side_by_side(artifacts: _Artifacts, frames: tuple) -> None:
    """Two artifacts' libraries (same symbol names, different plans) in one process, stepped in turn."""
    x = frames[0]
    folders = [artifacts["x86_64", kind] for kind in sorted(KINDS)]
    alone = []
    for out in folders:
        with import_runtime(out).Model(str(out)) as model:
            model.set_exit_rule("none")
            alone.append(np.stack([model.step(frame)[0] for frame in x]))
    models = [import_runtime(out).Model(str(out)) for out in folders]
    for model in models:
        model.set_exit_rule("none")
    together: list[list[np.ndarray]] = [[], []]
    for frame in x:
        for k, model in enumerate(models):
            together[k].append(model.step(frame)[0])
    for k, model in enumerate(models):
        model.close()
        assert np.stack(together[k]).tobytes() == alone[k].tobytes()


def test_python_runtime_names_a_corrupted_weights_file(artifacts: _Artifacts, tmp_path: Path) -> None:
    out = artifacts["x86_64", "early-exit"]
    damaged = tmp_path / "weights.bin"
    data = bytearray((out / "weights.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    runtime = import_runtime(out)
    with pytest.raises(
        runtime.MasicError,
        match=r"weights file .*weights.bin is corrupted \(resident weight at bytes \d+\.\.\d+: CRC-32C",
    ) as error:
        runtime.Model(str(out), weights=str(damaged))
    assert error.value.status == 2
    with pytest.raises(runtime.MasicError, match="cannot load the model's library"):
        runtime.Model(str(tmp_path))
