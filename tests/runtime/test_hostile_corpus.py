"""bench/fuzz.py's corpus of hostile loader inputs (headers numpy refuses, preambles, arrays, labels, weights files,
special files and outputs naming inputs, command lines): every case refused in one line with exit status 2 by the
loader built with the sanitizers. The benchmark prints the same table for docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = ("npy header", "npy preamble", "input array", "labels", "weights", "files", "arguments")


def test_every_hostile_input_is_refused_in_one_line() -> None:
    spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    text, failures = bench.hostile_table(headers=60)
    assert not failures, "\n".join(failures)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert set(rows) == {*CATEGORIES, "all"}
    cases, refused = (int(cell) for cell in rows["all"].split("|")[2:4])
    assert cases == refused >= 140
