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
    counts = {c: sum(case.category == c for case in cases) for c in ("pickles", "archives", "hdf5", "nir-values")}
    assert min(counts.values()) >= 7 and counts["nir-values"] >= 25, counts


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
        ("delay-nan", "node 'm' (Delay) in the graph has delay nan"),
        ("delay-negative", "delay -0.001 is negative"),
        ("delay-a-million-seconds", "is 10000000000 steps of dt=0.0001; masic compiles delays of at most 1024 steps"),
        ("delay-state-beyond-the-tensor-limit", "a delay of 100 steps of f32[4096,4096] holds more than 268435456"),
        ("sumpool-stride-0", "sumpool2d stride (0, 0) is out of range (each from 1 to 65536)"),
        ("sumpool-kernel-0", "sumpool2d kernel (0, 0) is out of range"),
        ("pool-negative-padding", "sumpool2d padding (-1, -1) is out of range (each from 0 to 65536)"),
        ("conv-padding-a-million", "conv2d padding (1000000, 1000000) is out of range"),
        ("conv-padded-input-beyond-the-tensor-limit", "its padded input f32[1,120004,120004] has more than 268435456"),
        ("conv-dilation-0", "conv2d dilation (0, 0) is out of range"),
        ("conv-stride-0", "node 'm' (Conv2d) in the graph is not a valid NIR node"),
        ("conv-fractional-stride", "stride [1.5, 1.5] is not whole numbers"),
        ("conv-groups-0", "groups 0 is below 1"),
        ("lif-threshold-nan", "has v_threshold nan"),
        ("lif-tau-inf", "has tau inf"),
        ("lif-tau-zero", "time constant 0 is not positive"),
        ("lif-tau-negative", "time constant -0.01 is not positive"),
        ("lif-tau-subnormal", "dt_tau_mem holds inf"),
        ("linear-complex-weights", "has weight of complex64 values"),
        ("linear-weight-1e300", "has weight 1e+300, which is NaN, infinite or beyond float32's range"),
        ("affine-bias-inf", "has bias inf"),
        ("scale-nan", "has scale nan"),
        ("input-of-zero-elements", "f32[0]: every dimension must be a positive integer"),
        ("input-of-negative-size", "f32[-3]: every dimension must be a positive integer"),
        ("input-beyond-the-tensor-limit", "f32[32768,16384] has more than 268435456 elements"),
        ("flatten-dimension-out-of-range", "start_dim 5 is not a dimension of a value of shape (3,)"),
        ("groups-nested-too-deep", "is nested more than 64 groups deep"),
        ("edges-beyond-the-limit", "masic reads at most 4096 nodes and 16384 edges"),
    ],
)
def test_refusals_name_the_cause(
    corpus: tuple[list[Case], Path], capsys: pytest.CaptureFixture[str], name: str, cause: str
) -> None:
    (case,) = [c for c in corpus[0] if c.name == name]
    assert main(["compile", str(case.path), "--emit", "ir", *case.args]) == 2
    assert cause in capsys.readouterr().err
