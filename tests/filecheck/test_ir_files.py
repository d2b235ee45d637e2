"""Runs every .ir case under tests/filecheck/<pass>/: its `// RUN:` line in-process, its CHECK lines on the output.

A case is a graph in textual IR whose comments say how to run it and what to expect:

    // RUN: masic opt %s -p infer-shapes,spike-dtype [--budget 4KB] [--target ...]
    // CHECK: %z = lif(%c) {{.*}} : spike[4,6,6]

`%s` stands for the file itself. `RUN: not masic opt ...` expects the command to fail with exit status 2 and the
CHECK lines to match its error output (one line naming the pass and the node), otherwise they match the printed IR.
The folder names the pass under test: its RUN line runs that pass. Directives: `tests.filecheck`.
"""

from __future__ import annotations

import contextlib
import io
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from masic.cli import main
from masic.passes import REGISTRY
from tests.filecheck import Check, filecheck, parse_checks

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*/*.ir"))
MIN_CASES = 40


@dataclass(frozen=True)
class Case:
    path: Path
    argv: tuple[str, ...]  # after `masic`
    fails: bool  # RUN: not masic ...
    checks: tuple[Check, ...]

    @classmethod
    def read(cls, path: Path) -> Case:
        text = path.read_text()
        runs = [line.split("RUN:", 1)[1] for line in text.splitlines() if line.lstrip().startswith("// RUN:")]
        assert len(runs) == 1, f"{path}: one // RUN: line expected, found {len(runs)}"
        words = shlex.split(runs[0])
        fails = words[0] == "not"
        words = words[1:] if fails else words
        assert words[:2] == ["masic", "opt"], f"{path}: RUN runs masic opt, not {' '.join(words[:2])}"
        argv = tuple(str(path) if word == "%s" else word for word in words[1:])
        return cls(path, argv, fails, tuple(parse_checks(text, str(path.relative_to(HERE)))))

    @property
    def passes(self) -> list[str]:
        flag = next(i for i, word in enumerate(self.argv) if word in ("-p", "--passes"))
        return self.argv[flag + 1].split(",")


def run_masic(argv: tuple[str, ...]) -> tuple[int, str, str]:
    """Exit status, standard output and error of `masic ARGV`, run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("path", CASES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_ir_case(path: Path) -> None:
    case = Case.read(path)
    assert path.parent.name in case.passes, f"{path}: a case under {path.parent.name}/ runs that pass"
    status, out, err = run_masic(case.argv)
    if case.fails:
        assert status == 2 and not out, f"expected a refusal, got status {status}:\n{out}{err}"
        assert len(err.splitlines()) == 1 and err.startswith("masic: error: "), err
        filecheck(err, list(case.checks))
    else:
        assert status == 0, err
        filecheck(out, list(case.checks))


def test_every_pass_has_cases_and_refusals() -> None:
    """At least MIN_CASES cases; a folder for every registered pass and no other, each with a case the pass
    accepts and one it refuses."""
    assert len(CASES) >= MIN_CASES
    folders = {path.parent.name for path in CASES}
    assert folders == set(REGISTRY)
    for name in REGISTRY:
        outcomes = {Case.read(path).fails for path in CASES if path.parent.name == name}
        assert outcomes == {False, True}, name
