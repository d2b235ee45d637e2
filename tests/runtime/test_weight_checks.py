"""weights.bin checked piece by piece as it is read (resident weights at start, initial state before each sample,
streamed pieces by the loading thread), and whole by `model --check`; CRC-32C computed by the CPU's instructions
where it has them, on the host and on ARM64 under qemu, agreeing with the portable table and with masic's Python."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from fake_model import STREAMING, Variant, build_artifact
from runtime_harness import RunResult, Target, build_executable, run_executable, save
from test_runtime_loader import assert_one_line_error

from masic.codegen.crc32c import crc32c
from masic.codegen.sources import RUNTIME_DIR

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
# Pieces of the streaming fake model's weights.bin (fake_model.c): name in the error, byte range.
RESIDENT = ("resident weight", 0, 16)
STATE = ("initial state", 16, 32)
SECOND_STREAMED = ("streamed weight", 40, 48)


@pytest.fixture
def artifact(target: Target, tmp_path: Path) -> Path:
    """A fresh build of the streaming fake model, whose weights.bin a test may damage."""
    return build_artifact(target, tmp_path / "artifact", variant=STREAMING)


def flip_byte(weights: Path, offset: int) -> None:
    data = bytearray(weights.read_bytes())
    data[offset] ^= 0x10
    weights.write_bytes(bytes(data))


def piece_error(weights: Path, piece: tuple[str, int, int]) -> str:
    what, start, end = piece
    return f"weights file {weights} is corrupted ({what} at bytes {start}..{end}: CRC-32C"


def run_sequence(target: Target, executable: Path, folder: Path) -> RunResult:
    x = np.random.default_rng(0).random((6, 2, 3), dtype=np.float32)
    return run_executable(target, executable, ["--input", save(folder, "x.npy", x)])


@pytest.mark.parametrize("piece", [RESIDENT, STATE, SECOND_STREAMED], ids=lambda piece: piece[0])
def test_a_corrupted_piece_is_refused_by_its_reader(
    target: Target, artifact: Path, tmp_path: Path, piece: tuple[str, int, int]
) -> None:
    """Resident weights are refused at start, the initial state before the sample, the second streamed piece by
    the loading thread when it reads it (nothing else reads it), each in one line with exit code 2."""
    weights = artifact.parent / "weights.bin"
    flip_byte(weights, piece[1] + 3)
    result = run_sequence(target, artifact, tmp_path)
    assert_one_line_error(result, 2, piece_error(weights, piece), "re-copy the artifact folder")
    assert "prediction" not in result.stdout


def test_bytes_no_piece_holds_are_not_read(target: Target, tmp_path: Path) -> None:
    """Padding after the pieces is never read, so a run does not see it change (only the size is checked)."""
    folder = tmp_path / "padded"
    executable = build_artifact(target, folder, variant=Variant(block=3, streamed=True, pad_bytes=64))
    flip_byte(folder / "weights.bin", 48 + 10)
    assert run_sequence(target, executable, tmp_path).returncode == 0


def test_check_passes_an_intact_file(target: Target, artifact: Path) -> None:
    result = run_executable(target, artifact, ["--check"])
    assert result.returncode == 0, result.stderr
    weights = artifact.parent / "weights.bin"
    assert result.stdout.startswith(f"weights file {weights} is intact: 48 bytes, 48 of them in checksummed pieces")


@pytest.mark.parametrize("piece", [RESIDENT, SECOND_STREAMED], ids=lambda piece: piece[0])
def test_check_finds_a_corrupted_piece(target: Target, artifact: Path, piece: tuple[str, int, int]) -> None:
    weights = artifact.parent / "weights.bin"
    flip_byte(weights, piece[2] - 1)
    result = run_executable(target, artifact, ["--check"])
    assert_one_line_error(result, 2, piece_error(weights, piece))


def test_check_finds_a_truncated_file(target: Target, artifact: Path) -> None:
    weights = artifact.parent / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-1])
    assert_one_line_error(run_executable(target, artifact, ["--check"]), 2, "is truncated (47 of 48 bytes)")


def test_check_takes_no_input(target: Target, artifact: Path, tmp_path: Path) -> None:
    result = run_executable(target, artifact, ["--check", "--input", tmp_path / "x.npy"])
    assert_one_line_error(result, 2, "--check takes only --weights")


@pytest.fixture(scope="session")
def crc_check(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = [HERE / "crc_check.c", RUNTIME_DIR / "crc32c.c"]
    return build_executable(target, sources, tmp_path_factory.mktemp("crc") / "crc_check", with_loader=False)


# 12288: three lanes of 4096 bytes, the hardware loop's interleaved block (crc32c.c)
@pytest.mark.parametrize("size", [0, 1, 5, 8, 9, 31, 32, 33, 100, 4099, 12287, 12288, 12289, 3 * 12288 + 77, 1 << 16])
def test_cpu_instructions_agree_with_the_table_and_python(target: Target, crc_check: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    done = subprocess.run([*target.runner, str(crc_check)], input=data, capture_output=True, check=True, timeout=60)
    kind, *rows, continued = done.stdout.decode().split("\n")[:-1]
    assert kind == "hardware", "both this x86-64 host (SSE4.2) and qemu's ARM CPU (CRC32) have CRC instructions"
    expected = [f"{crc32c(data[offset:]):08x}" for offset in range(min(8, size + 1))]
    assert [row.split() for row in rows] == [[crc, crc] for crc in expected]
    assert continued == expected[0]


def test_known_value(target: Target, crc_check: Path) -> None:
    done = subprocess.run([*target.runner, str(crc_check)], input=b"123456789", capture_output=True, check=True)
    lines = done.stdout.decode().split("\n")
    assert (lines[1], lines[-2]) == ("e3069283 e3069283", "e3069283")
