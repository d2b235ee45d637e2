"""`masic opt` and the textual IR's weights: values from an .npz by name or deterministic random ones, the
command's output and its one-line refusals. The .ir cases under tests/filecheck run the passes through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.ir.graph import Param, TensorType
from masic.ir.text import parse, print_graph, random_weight
from masic.opt import OptError, read_graph, run_passes
from masic.passes import DEFAULT_PIPELINE, PassOptions
from tests.filecheck.test_ir_files import run_masic
from tests.strategies import graphs

TEXT = """// a comment, then a blank line

graph @tiny timesteps=2 {
  param @fc.w : f32[3,2]
  param @fc.b : f32[3]
  %in = input() : f32[2]
  %fc = dense(%in) {weight=@fc.w, bias=@fc.b, in_features=2, out_features=3} : ?
  // a comment inside the graph
  %z = lif(%fc) {dt_tau_mem=0.5, neg_dt_tau_syn=-0.5, v_leak=0.0, v_th=0.3, v_reset=0.0} : ?
  output %z
}
"""


@pytest.fixture
def ir_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.ir"
    path.write_text(TEXT)
    return path


@settings(max_examples=40)
@given(st.text(min_size=1, max_size=12), st.lists(st.integers(0, 5), max_size=3).map(tuple))
def test_random_weights_are_float32_in_the_unit_interval_and_depend_on_the_name_only(name, shape) -> None:
    values = random_weight(Param(name, TensorType(shape)))
    assert values.dtype == np.float32 and values.shape == shape
    assert np.all((values >= 0) & (values < 1))
    np.testing.assert_array_equal(values, random_weight(Param(name, TensorType(shape))))


def test_parameters_without_values_get_their_random_ones() -> None:
    given_b = np.arange(3, dtype=np.float32)
    graph = parse(TEXT, {"fc.b": given_b})
    np.testing.assert_array_equal(graph.weights["fc.b"], given_b)
    np.testing.assert_array_equal(graph.weights["fc.w"], random_weight(graph.param("fc.w")))
    assert not np.array_equal(random_weight(Param("fc.v", TensorType((3, 2)))), graph.weights["fc.w"])


def test_weights_come_from_an_npz_by_name(ir_file: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w.npz"
    np.savez(weights, **{"fc.w": np.ones((3, 2), np.float64)})
    graph = read_graph(ir_file, weights)
    assert graph.weights["fc.w"].dtype == np.float32 and np.all(graph.weights["fc.w"] == 1)
    np.testing.assert_array_equal(graph.weights["fc.b"], random_weight(graph.param("fc.b")))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"fc.q": np.ones(3)}, r"w.npz: 'fc.q' is not a parameter of the graph \(it declares fc.w, fc.b\)"),
        ({"fc.b": np.ones(4)}, r"w.npz: 'fc.b' has shape \(4,\), but the graph declares f32\[3\]"),
        ({"fc.b": np.array(["a", "b", "c"])}, r"array 'fc.b' holds <U1, not numbers"),
        ({"fc.b": np.array([None, 1, 2], dtype=object)}, "Object arrays cannot be loaded"),
    ],
)
def test_weights_that_do_not_fit_are_refused(ir_file: Path, tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(OptError, match=message):
        read_graph(ir_file, tmp_path / "w.npz")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("w.npy", None, "not an .npz file"),  # one array, no names
        ("w.npz", b"not a zip", "not an .npz file of arrays"),
    ],
)
def test_files_that_are_no_npz_are_refused(ir_file: Path, tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    if content is None:
        np.save(path, np.ones(3))
    else:
        path.write_bytes(content)
    with pytest.raises(OptError, match=message):
        read_graph(ir_file, path)


def test_opt_prints_the_ir_after_the_named_passes(ir_file: Path) -> None:
    status, out, err = run_masic(("opt", str(ir_file), "-p", "infer-shapes,spike-dtype"))
    assert status == 0 and not err
    expected = run_passes(read_graph(ir_file), ["infer-shapes", "spike-dtype"])
    assert out == print_graph(expected)
    assert (
        ": ?" not in out
        and "  %fc = dense(%in) {weight=@fc.w, bias=@fc.b, in_features=2, out_features=3} : f32[3]" in out
    )


def test_opt_without_passes_verifies_and_prints(ir_file: Path) -> None:
    status, out, _ = run_masic(("opt", str(ir_file)))
    assert status == 0 and out == print_graph(parse(TEXT))


def test_opt_writes_the_ir_to_a_file(ir_file: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "out.ir"
    status, out, _ = run_masic(("opt", str(ir_file), "-p", "infer-shapes", "-o", str(out_file)))
    assert status == 0 and not out
    assert parse(out_file.read_text()) == run_passes(read_graph(ir_file), ["infer-shapes"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("-p", "infer-shapes,fold-everything"), "unknown pass 'fold-everything'; known passes: infer-shapes, "),
        (("-p", "infer-shapes", "--budget", "lots"), "argument --budget: malformed byte count 'lots'"),
        (("-p", "infer-shapes", "--target", "z80"), "unknown target 'z80'"),
        (("-p", "infer-shapes", "--weights", "/nonexistent.npz"), "No such file or directory"),
    ],
)
def test_bad_options_are_one_line_errors(ir_file: Path, argv: tuple[str, ...], message: str) -> None:
    status, out, err = run_masic(("opt", str(ir_file), *argv))
    assert status == 2 and not out
    assert err.startswith("masic: error: ") and len(err.splitlines()) == 1 and message in err, err


def test_malformed_and_invalid_ir_are_one_line_errors(tmp_path: Path) -> None:
    malformed = tmp_path / "bad.ir"
    malformed.write_text(TEXT.replace("%z = lif", "%z == lif"))
    status, _, err = run_masic(("opt", str(malformed), "-p", "infer-shapes"))
    assert status == 2 and err == f"masic: error: {malformed}: line 9: unexpected line\n"
    binary = tmp_path / "binary.ir"
    binary.write_bytes(b"\x80\x81 not text")
    status, _, err = run_masic(("opt", str(binary)))
    assert status == 2 and err.startswith(f"masic: error: {binary}: 'utf-8' codec can't decode byte 0x80")
    invalid = tmp_path / "invalid.ir"
    invalid.write_text(TEXT.replace("lif(%fc)", "lif(%nope)"))
    status, _, err = run_masic(("opt", str(invalid)))
    assert status == 2 and err == f"masic: error: {invalid}: operand %nope is not defined before its use [at %z]\n"


@settings(max_examples=25, deadline=None)
@given(graphs(max_layers=4))
def test_the_text_between_two_passes_carries_all_they_need(graph) -> None:
    """Running the pipeline one `masic opt` at a time, each reading the text the one before printed (weights
    random again: no pass's decisions depend on their values), gives the text one run of all the passes gives."""
    options = PassOptions(alignment=64)
    text = print_graph(graph)
    for name in DEFAULT_PIPELINE:
        text = print_graph(run_passes(parse(text), [name], options))
    assert text == print_graph(run_passes(graph, DEFAULT_PIPELINE, options))
