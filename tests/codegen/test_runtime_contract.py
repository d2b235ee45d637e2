"""The contract between the Python side and the loader's C sources: the limits and enum names lower.py emits match
the headers', every C file of runtime/ is compiled into artifacts and shipped in the wheel, and lower.py refuses the
integers a C initializer would wrap."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from masic.codegen import lower
from masic.codegen.lower import LoweringError, _c_int, _c_uint, _load_kind
from masic.codegen.sources import LOADER_SOURCES, PARALLEL_SOURCE, PARSER_SOURCES, RUNTIME_DIR
from masic.codegen.weights import Segment
from masic.ir import names

ROOT = Path(__file__).resolve().parents[2]


def define(header: str, name: str) -> int:
    return int(re.search(rf"#define {name} (\d+)", (RUNTIME_DIR / header).read_text())[1])


def test_limits_and_enum_names_match_the_headers() -> None:
    assert define("args.h", "MASIC_MAX_TIMESTEPS") == lower.MAX_TIMESTEPS
    assert define("model_check.h", "MASIC_MAX_BLOCK") == lower.MAX_BLOCK
    enum = (RUNTIME_DIR / "masic_model.h").read_text()
    for value, name in enumerate((lower.LOAD_WEIGHT, lower.LOAD_STATE, lower.LOAD_STATE_FILL)):
        assert f"{name} = {value}," in enum


def test_every_runtime_file_is_compiled_and_shipped() -> None:
    c_files = {p.name for p in RUNTIME_DIR.glob("*.c")}
    assert c_files == {*LOADER_SOURCES, PARALLEL_SOURCE}
    assert set(PARSER_SOURCES) < set(LOADER_SOURCES) and "loader.c" not in PARSER_SOURCES
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for path in RUNTIME_DIR.iterdir():
        if path.suffix in (".c", ".h"):
            assert any(fnmatch(f"runtime/{path.name}", p) for p in patterns["masic.codegen"]), path.name


def test_load_kinds_are_emitted_by_name() -> None:
    weight = Segment(names.param("w"), "w", 0, 64, 64)
    assert _load_kind(weight, state=False) == ("MASIC_LOAD_WEIGHT", 0)
    assert _load_kind(weight, state=True) == ("MASIC_LOAD_STATE", 0)
    filled = Segment(names.state("n", "v"), "n.v", 0, 64, 64, fill=-0.5)
    assert _load_kind(filled, state=True) == ("MASIC_LOAD_STATE_FILL", int(np.float32(-0.5).view(np.uint32)))


@pytest.mark.parametrize(
    ("call", "ok"),
    [
        (lambda: _c_int(2**31, "x"), False),
        (lambda: _c_int(-1, "x"), False),
        (lambda: _c_int(lower.MAX_TIMESTEPS + 1, "timesteps", 1, lower.MAX_TIMESTEPS), False),
        (lambda: _c_int(lower.MAX_TIMESTEPS, "timesteps", 1, lower.MAX_TIMESTEPS), True),
        (lambda: _c_uint(2**32, 32, "x"), False),
        (lambda: _c_uint(2**64, 64, "x"), False),
        (lambda: _c_uint(2**64 - 1, 64, "x"), True),
    ],
)
def test_integers_a_c_initializer_would_wrap_are_refused(call, ok: bool) -> None:
    if ok:
        call()
    else:
        with pytest.raises(LoweringError):
            call()
