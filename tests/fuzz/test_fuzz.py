"""Bounded fuzzing of every parser of untrusted bytes in the loader (fuzz/driver.py): the .npy header, inputs,
labels, weights.bin with the build's constants, the exit-rule section and the command line, each for
fuzz/driver.py's CI_SECONDS under libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer. No crash, failed
check, sanitizer report or hang is allowed; the executions of each target are printed (pytest -s) and recorded in
docs/benchmarks.md by bench/fuzz.py. The driver itself must catch a planted bug."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]
ROOT = Path(__file__).resolve().parents[2]
MIN_EXECUTIONS = 10_000  # each target runs tens of thousands of inputs a second on an idle core


def load_driver():
    spec = importlib.util.spec_from_file_location("fuzz_driver", ROOT / "fuzz" / "driver.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def driver():
    module = load_driver()
    if problem := module.clang_missing():
        pytest.fail(problem)
    return module


def test_every_parser_fuzzes_clean(driver, tmp_path: Path) -> None:
    results = driver.fuzz(list(driver.TARGETS), driver.CI_SECONDS, tmp_path)
    print("\n" + driver.table(results))
    for r in results:
        assert r.clean, f"{r.target}: status {r.returncode}, {r.first_report}\n{r.log_tail}"
        assert r.executions >= MIN_EXECUTIONS, (r.target, r.executions)
        assert r.corpus_units > len(list((ROOT / "fuzz" / "corpus" / r.target).iterdir()))  # it explored


PLANTED = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* Reads one byte past a heap buffer when the input starts with "BUG". */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *copy = malloc(size ? size : 1);
  memcpy(copy, data, size);
  volatile char c = size >= 3 && !memcmp(data, "BUG", 3) ? copy[size] : 0;
  (void)c;
  free(copy);
  return 0;
}
"""


def test_the_driver_catches_a_planted_bug(driver, tmp_path: Path) -> None:
    source = tmp_path / "planted.c"
    source.write_text(PLANTED)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "almost").write_bytes(b"BUF")
    binary = driver.build("planted", tmp_path / "bin", source)
    result = driver.run("planted", binary, 20, tmp_path / "work", seeds)
    assert not result.clean
    assert result.crashes == 1 and result.sanitizer_reports >= 1
    assert "AddressSanitizer: heap-buffer-overflow" in result.first_report
