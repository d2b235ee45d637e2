"""runtime/npy.c against numpy: the loader accepts a .npy file exactly when numpy.load does.

Differential tests on generated and mutated headers (npy_headers.py): npy_check.c (npy.c alone, built with the
sanitizers) must give numpy's verdict, fortran_order and shape on every file; the loader itself (the fake model, built
with the sanitizers) must accept exactly the files numpy reads as an input it takes, and refuse the rest in one line
with exit status 2. Then the issue's cases, and the three documented refusals of headers numpy accepts.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fake_model import INPUT_SHAPE, build_artifact
from npy_headers import MAGIC, Verdict, generated, mutated, numpy_verdict, preamble, with_data
from runtime_harness import HOST_SANITIZED, SANITIZER_ENV, build_executable, run_executable

from masic.codegen.sources import RUNTIME_DIR

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
GRAMMAR_FILES = 5000  # about 1000 accepted, 100 through numpy's Python 2 retry; under a minute
LOADER_FILES = 400  # each a run of the executable


@pytest.fixture(scope="module")
def npy_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = [HERE / "npy_check.c", RUNTIME_DIR / "npy.c"]
    return build_executable(HOST_SANITIZED, sources, tmp_path_factory.mktemp("npy") / "npy_check", with_loader=False)


def loader_verdicts(npy_check: Path, files: Sequence[bytes]) -> list[tuple[Verdict, bool, str]]:
    """npy_check's verdict on each file, whether numpy's Python 2 retry was needed, and its line."""
    stream = b"".join(struct.pack("<I", len(f)) + f for f in files)
    done = subprocess.run(
        [str(npy_check)], input=stream, capture_output=True, check=False, env=dict(SANITIZER_ENV), timeout=600
    )
    assert done.returncode == 0 and not done.stderr, done.stderr.decode(errors="replace")
    verdicts = []
    for line in done.stdout.decode().splitlines():
        words = line.split()
        if words[0] == "accept":
            ndim = int(words[2])
            shape = tuple(map(int, words[3 : 3 + ndim]))
            verdicts.append((Verdict((bool(int(words[1])), shape)), words[-1] == "1", line))
        else:
            verdicts.append((Verdict(None), False, line))
    assert len(verdicts) == len(files)
    return verdicts


def corpus(n: int, seed: int, model_shapes: tuple[tuple[int, ...], ...] = ()) -> list[bytes]:
    """n files, each generated and then mutated 0 to 2 times."""
    rng = np.random.default_rng(seed)
    files = []
    for _ in range(n):
        data = generated(rng, model_shapes)
        for _ in range(int(rng.integers(0, 3))):
            data = mutated(rng, data)
        files.append(data)
    return files


def test_the_header_grammar_is_numpys(npy_check: Path) -> None:
    files = corpus(GRAMMAR_FILES, seed=14)
    mismatches = []
    accepted = python2 = 0
    for data, (mine, retried, line) in zip(files, loader_verdicts(npy_check, files), strict=True):
        theirs = numpy_verdict(data)
        accepted += theirs.accepted
        python2 += retried
        if mine != theirs:
            mismatches.append(f"numpy {theirs.array}, npy.c {line}: {data[:200]!r}")
    assert not mismatches, f"{len(mismatches)} of {len(files)} differ:\n" + "\n".join(mismatches[:10])
    print(f"{len(files)} files: numpy and npy.c accept {accepted}, {python2} of them through the Python 2 retry")
    assert accepted > GRAMMAR_FILES // 10 and python2 > 30  # the corpus reaches both verdicts and the retry


def npy_file(header: str, version: tuple[int, int] = (1, 0), data: bytes | None = None) -> bytes:
    """A file with this header (and as much float32 data as numpy reads from it, unless given)."""
    raw = header.encode("utf-8" if version[0] == 3 else "latin-1")
    file = preamble(version, raw) + raw
    return with_data(file) if data is None else file + data


GOOD = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"


@pytest.mark.parametrize(
    ("header", "version", "accepted"),
    [
        (GOOD + " " * 6 + "\n", (1, 0), True),
        (GOOD + " garbage", (1, 0), False),  # the issue: text after the dict
        (GOOD, (1, 9), False),  # the issue: minor version 9
        (GOOD, (2, 0), True),
        (GOOD, (3, 0), True),
        (GOOD, (4, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (+2, 3)}", (1, 0), True),  # numpy's literal_eval takes +2
        ("{'descr': '<f4', 'fortran_order': False, 'shape': ( 2, 3)}", (1, 0), True),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (- 2, 3)}", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L)}", (1, 0), True),  # Python 2
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L)}", (3, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (True, 3)}", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': False}", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}\n  ", (3, 0), False),  # an indented last line
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}  # comment\n", (1, 0), True),
        ("{'descr': '<' 'f4', 'fortran_order': False, 'shape': (0x2, 0o3)}", (1, 0), True),
        ("{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (2, 3)}", (1, 0), True),
        ("{'descr': b'<f4', 'fortran_order': False, 'shape': (2, 3)}", (1, 0), False),
        ("{'descr': [1], 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", (1, 0), True),
        ("{'descr': {[1]: 2}, 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}\x00", (1, 0), False),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 0)}", (1, 0), False),
        ("({'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)})", (1, 0), True),
    ],
)
def test_cases(npy_check: Path, header: str, version: tuple[int, int], accepted: bool) -> None:
    data = npy_file(header, version)
    ((mine, _, line),) = loader_verdicts(npy_check, [data])
    assert numpy_verdict(data).accepted == accepted, "the case's expectation is numpy's"
    assert mine == numpy_verdict(data), line


def test_documented_refusals_of_headers_numpy_accepts(npy_check: Path) -> None:
    """A \\N{name} escape (it needs Unicode's name table), brackets nested 200 deep, and a Python 2 header with a
    line starting with a lone carriage return: refused in one line (npy.c's header comment says why)."""
    named = npy_file("{'descr': '\\N{LESS-THAN SIGN}f4', 'fortran_order': False, 'shape': (2, 3)}")

    def nested(depth: int) -> bytes:  # `depth` brackets inside the header's dict
        return npy_file(
            "{'descr': " + "[" * depth + "]" * depth + ", 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}"
        )

    deep, deep_enough = nested(199), nested(198)
    carriage = npy_file("{'shape': (2L, 3),\n\r'descr': '<f4', 'fortran_order': False}")
    assert all(numpy_verdict(f).accepted for f in (named, deep, deep_enough, carriage))
    (named_verdict, _, named_line), (deep_verdict, _, deep_line), (ok, _, ok_line), (cr_verdict, _, cr_line) = (
        loader_verdicts(npy_check, [named, deep, deep_enough, carriage])
    )
    assert not named_verdict.accepted and "\\N{...} escape" in named_line
    assert not deep_verdict.accepted and "nested too deep" in deep_line
    assert ok == numpy_verdict(deep_enough), ok_line
    assert not cr_verdict.accepted and "malformed number" in cr_line  # the strict grammar's reason: the 'L'


def test_preamble_refusals(npy_check: Path) -> None:
    good = npy_file(GOOD)
    cases = {
        b"": "not a .npy file",
        MAGIC[:5]: "not a .npy file",
        MAGIC + b"\x01": "truncated",
        good[:9]: "truncated",
        good[:40]: "the file ends inside it",
        MAGIC + b"\x02\x00" + struct.pack("<I", 40001) + b"{": "above numpy's limit",
        b"PK\x03\x04" + good[4:]: "not a .npy file",  # a .npz archive
    }
    verdicts = loader_verdicts(npy_check, list(cases))
    for (data, reason), (verdict, _, line) in zip(cases.items(), verdicts, strict=True):
        assert not verdict.accepted and not numpy_verdict(data).accepted
        assert reason in line, (data, line)


def test_the_loader_accepts_exactly_the_inputs_numpy_reads(tmp_path: Path) -> None:
    """The fake model takes (2, 3), (S, 2, 3); with labels (N, 2, 3) and (N, S, 2, 3): the executable must run exactly
    the files numpy reads as such a float32 C-order array (with exactly the data it needs), and refuse every other in
    one line with status 2."""
    executable = build_artifact(HOST_SANITIZED, tmp_path / "artifact")
    shapes = (INPUT_SHAPE, (1, *INPUT_SHAPE), (3, *INPUT_SHAPE))
    files = corpus(LOADER_FILES, seed=15, model_shapes=shapes)
    path = tmp_path / "x.npy"
    mismatches, runs = [], 0
    for data in files:
        theirs = numpy_verdict(data)
        fortran, shape = theirs.array if theirs.accepted else (True, ())
        takes = (
            theirs.accepted
            and not fortran
            and len(shape) in (2, 3)
            and shape[-2:] == INPUT_SHAPE
            and all(d >= 1 for d in shape)
            and exact_data(data, shape)
        )
        path.write_bytes(data)
        result = run_executable(HOST_SANITIZED, executable, ["--input", path, "--timesteps", "1"])
        runs += 1
        ran = result.returncode == 0
        if ran != takes or (not ran and (result.returncode != 2 or len(result.error_lines) != 1)):
            mismatches.append(f"numpy {theirs.array} takes={takes}, loader {result.returncode}: {result.stderr!r}")
    assert not mismatches, f"{len(mismatches)} of {runs} differ:\n" + "\n".join(mismatches[:10])


def exact_data(data: bytes, shape: tuple[int, ...]) -> bool:
    """True if the file holds exactly the float32 data of `shape` after its header (numpy ignores extra bytes, the
    loader refuses them)."""
    length = struct.unpack_from("<H" if data[6] == 1 else "<I", data, 8)[0]
    offset = (10 if data[6] == 1 else 12) + length
    return len(data) - offset == 4 * int(np.prod(shape))
