"""The loader against hostile inputs (issue 14): FIFOs and devices where files are expected, outputs that would
overwrite an input, integers out of range, shapes whose size overflows, and a --timesteps far beyond what runs.
Each is refused with one line and exit status 2 (or, for --timesteps, costs only what runs), on every target."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from fake_model import INPUT_SHAPE
from runtime_harness import RunResult, Target, run_executable, save

from masic.codegen.exit_section import BLOCK, block_offset

pytestmark = pytest.mark.slow


def x_input(tmp_path: Path, shape: tuple[int, ...] = INPUT_SHAPE, name: str = "x.npy") -> Path:
    return save(tmp_path, name, np.random.default_rng(0).random(shape, dtype=np.float32))


def assert_refused(result: RunResult, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    (line,) = result.error_lines
    assert line.startswith("model: error: ")
    for fragment in fragments:
        assert fragment in line, line
    return line


def artifact_copy(executable: Path, folder: Path) -> Path:
    """The executable and its weights.bin in a folder of the test's own, which it may change."""
    folder.mkdir()
    shutil.copy2(executable.parent / "weights.bin", folder / "weights.bin")
    return Path(shutil.copy2(executable, folder / "model"))


@pytest.mark.parametrize("option", ["--input", "--labels", "--weights"])
def test_a_fifo_is_refused_without_blocking(target: Target, fake_executable: Path, tmp_path: Path, option: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    x = x_input(tmp_path, (2, *INPUT_SHAPE))
    args = {"--input": ["--input", fifo], "--labels": ["--input", x, "--labels", fifo]}.get(
        option, ["--input", x, "--weights", fifo]
    )
    start = time.monotonic()
    result = run_executable(target, fake_executable, args, timeout=30)
    assert_refused(result, str(fifo), "is not a regular file")
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "."])
def test_devices_and_folders_are_refused(target: Target, fake_executable: Path, tmp_path: Path, special: str) -> None:
    result = run_executable(target, fake_executable, ["--input", special], timeout=30)
    assert_refused(result, "is not a regular file")


@pytest.mark.parametrize("link", ["same path", "symlink", "hard link"])
@pytest.mark.parametrize("victim", ["input", "labels", "weights"])
@pytest.mark.parametrize("option", ["--output", "--predictions"])
def test_an_output_naming_a_file_the_run_reads_is_refused_untouched(
    target: Target, fake_executable: Path, tmp_path: Path, option: str, victim: str, link: str
) -> None:
    executable = artifact_copy(fake_executable, tmp_path / "artifact")
    x = x_input(tmp_path, (2, *INPUT_SHAPE))
    labels = save(tmp_path, "y.npy", np.zeros(2, np.int64))
    victim_path = {"input": x, "labels": labels, "weights": executable.parent / "weights.bin"}[victim]
    named = victim_path
    if link == "symlink":
        named = tmp_path / "link.npy"
        named.symlink_to(victim_path)
    elif link == "hard link":
        named = tmp_path / "hard.npy"
        os.link(victim_path, named)
    before = victim_path.read_bytes()
    result = run_executable(target, executable, ["--input", x, "--labels", labels, option, named])
    assert_refused(result, f"{option} {named} is the same file as")
    assert victim_path.read_bytes() == before


def test_output_and_predictions_naming_one_file_are_refused(
    target: Target, fake_executable: Path, tmp_path: Path
) -> None:
    x = x_input(tmp_path, (2, *INPUT_SHAPE))
    labels = save(tmp_path, "y.npy", np.zeros(2, np.int64))
    out = tmp_path / "out.npy"
    result = run_executable(
        target, fake_executable, ["--input", x, "--labels", labels, "--output", out, "--predictions", out]
    )
    assert_refused(result, f"--predictions {out} is the same file as --output {out}")


@pytest.mark.parametrize(
    "args",
    [
        ["--min-timesteps", "4294967297"],  # the issue: wrapped to 1
        ["--min-timesteps", "2147483648"],
        ["--min-timesteps", "-1"],
        ["--min-timesteps", "+4"],
        ["--min-timesteps", " 4"],
        ["--min-timesteps", "4 "],
        ["--min-timesteps", "0x10"],
        ["--min-timesteps", ""],
        ["--timesteps", "1e3"],
        ["--timesteps", "1000001"],  # above MASIC_MAX_TIMESTEPS
        ["--timesteps", "99999999999999999999999"],
        ["--timesteps", "-0"],
        ["--threads", "4097"],
        ["--exit-stable", "2147483648"],
        ["--exit-confidence", " 0.5"],
        ["--exit-confidence", "0x1p-1"],
        ["--exit-margin", "infinity"],
    ],
    ids=lambda args: " ".join(args),
)
def test_integers_and_numbers_are_checked_in_full(
    target: Target, fake_executable: Path, tmp_path: Path, args: list[str]
) -> None:
    result = run_executable(target, fake_executable, [*args, "--input", x_input(tmp_path)])
    assert_refused(result, args[0], f"'{args[1]}'")


def test_largest_accepted_values(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    args = ["--input", x_input(tmp_path), "--exit-confidence", "1", "--min-timesteps", "2147483647", "--timesteps", "3"]
    ok = run_executable(target, fake_executable, args)
    assert ok.returncode == 0, ok.stderr
    assert ok.report["exit_params"]["min_timesteps"] == 2147483647 and ok.report["timesteps"] == 3


def npy_with_shape(path: Path, shape: tuple[int, ...], data: bytes) -> Path:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data)
    return path


def test_a_shape_too_large_for_any_file_names_its_true_size(
    target: Target, fake_executable: Path, tmp_path: Path
) -> None:
    # 2^40 sequences of (2, 3): 26388279066624 bytes, which the message states as such
    path = npy_with_shape(tmp_path / "big.npy", (2**40, *INPUT_SHAPE), bytes(24))
    line = assert_refused(run_executable(target, fake_executable, ["--input", path]), "holds 24 bytes")
    assert f"needs {2**40 * 24}" in line
    # 2^62 sequences: more than 2^63 - 1 bytes, which no file holds and no 64-bit count can wrap into
    huge = npy_with_shape(tmp_path / "huge.npy", (2**62, *INPUT_SHAPE), bytes(24))
    assert_refused(run_executable(target, fake_executable, ["--input", huge]), "exceeds 2^63 - 1 bytes")


def test_timesteps_far_beyond_what_runs_cost_only_what_runs(
    target: Target, fake_executable: Path, tmp_path: Path
) -> None:
    """The issue: --timesteps 1e8 on 4 samples made a 782 MB histogram and a 300 MB JSON line. Now the report is
    sized by the steps samples use: here at most 2 (the argmax is stable after 1 step, the minimum is 2)."""
    x = x_input(tmp_path, (4, *INPUT_SHAPE))
    labels = save(tmp_path, "y.npy", np.zeros(4, np.int64))
    args = ["--input", x, "--labels", labels, "--timesteps", "1000000", "--exit-stable", "1", "--min-timesteps", "2"]
    result = run_executable(target, fake_executable, args)
    assert result.returncode == 0, result.stderr
    report = result.report
    assert report["max_timesteps"] == 1_000_000 and report["timesteps_histogram"] == [0, 4]
    assert len(result.stdout) < 4096
    assert report["peak_rss_bytes"] < 256 << 20


def test_a_sequence_longer_than_the_limit_is_refused(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    path = npy_with_shape(tmp_path / "long.npy", (1_000_001, *INPUT_SHAPE), bytes(24 * 1_000_001))
    assert_refused(run_executable(target, fake_executable, ["--input", path]), "1000001 timesteps", "1000000")
    ok = run_executable(target, fake_executable, ["--input", path, "--timesteps", "2"])
    assert ok.returncode == 0, ok.stderr


def test_an_exit_section_with_a_bad_flag_is_refused(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    executable = artifact_copy(fake_executable, tmp_path / "artifact")
    data = bytearray(executable.read_bytes())
    offset = block_offset(bytes(data), executable)
    fields = list(BLOCK.unpack_from(data, offset))
    fields[2] = 2  # `set` is 0 or 1
    BLOCK.pack_into(data, offset, *fields)
    executable.write_bytes(bytes(data))
    result = run_executable(target, executable, ["--input", x_input(tmp_path)])
    assert result.returncode == 1 and "section is damaged" in result.stderr


def test_one_line_even_for_a_path_holding_a_newline(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    path = tmp_path / "two\nlines.npy"
    path.write_bytes(b"not numpy")
    assert_refused(run_executable(target, fake_executable, ["--input", path]), "two?lines.npy")


def test_weights_replaced_by_a_directory_are_refused(target: Target, fake_executable: Path, tmp_path: Path) -> None:
    executable = artifact_copy(fake_executable, tmp_path / "artifact")
    (executable.parent / "weights.bin").unlink()
    (executable.parent / "weights.bin").mkdir()
    assert_refused(run_executable(target, executable, ["--input", x_input(tmp_path)]), "is not a regular file")
