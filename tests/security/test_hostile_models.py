"""Hostile model files (tests/hostile_models.py): every one is refused with one line naming the cause and exit 2,
and none runs its payload, reads a file it names or hangs."""

from __future__ import annotations

from pathlib import Path

import pytest

from masic.cli import main
from tests.hostile_models import Case, build_all


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Case], Path]:
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "payload-ran"
    return build_all(folder, marker), marker


def test_the_corpus_covers_every_category(corpus: tuple[list[Case], Path]) -> None:
    cases, _ = corpus
    counts = {c: sum(case.category == c for case in cases) for c in ("pickles", "archives", "hdf5")}
    assert min(counts.values()) >= 7, counts


def test_every_hostile_model_is_refused_in_one_line(
    corpus: tuple[list[Case], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cases, marker = corpus
    for case in cases:
        status = main(["compile", str(case.path), "--emit", "ir", *case.args])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2, f"{case.name}: exit {status}"
        assert err[-1].startswith("masic: error: ") and str(case.path) in err[-1], f"{case.name}: {err}"
        assert "Traceback" not in "\n".join(err) and len(err) <= 2, f"{case.name}: {err}"
        assert not marker.exists(), f"{case.name} ran its payload"


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("getattr-chain-to-eval", "names getattr(builtins.function, '__builtins__')"),
        ("reduce-os-system", "names os.system"),
        ("reduce-builtins-eval", "names builtins.eval"),
        ("stack-global-exec", "names builtins.exec"),
        ("newobj-pathlib", "names pathlib.Path"),
        ("duplicate-weights-config", "two members named"),
        ("pickled-weight", "as a pickled object"),
        ("sympy-expression", "symbolic shape expression"),
        ("guards-code", "dynamic shapes"),
        ("aotinductor-library", "data/aotinductor/model/model.so"),
        ("external-link", "external link"),
        ("external-storage", "external file"),
        ("virtual-dataset", "virtual dataset"),
        ("huge-unwritten-dataset", "larger than"),
    ],
)
def test_refusals_name_the_cause(
    corpus: tuple[list[Case], Path], capsys: pytest.CaptureFixture[str], name: str, cause: str
) -> None:
    (case,) = [c for c in corpus[0] if c.name == name]
    assert main(["compile", str(case.path), "--emit", "ir", *case.args]) == 2
    assert cause in capsys.readouterr().err
