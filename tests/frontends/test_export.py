"""torch.export frontend: plain PyTorch SNN steps (snnTorch style) from .pt2 archives and factories reproduce
PyTorch's own step-by-step run, and broken or hostile archives are refused without unpickling anything."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from masic.frontends.dispatch import ImportOptions, import_model
from masic.frontends.errors import FrontendError
from masic.frontends.export import export_module, import_export, load_export
from torch import nn

from masic.ir.interpret import run
from tests.artifacts import compile_spec, masic_cli, run_artifact
from tests.export_models import conv_snn, neurons, run_eager
from tests.pipelines import planned

STEPS = 40


def _input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.5, (STEPS, *shape)).astype(np.float32)


def _saved(tmp_path: Path) -> Path:
    module, example = conv_snn()
    path = tmp_path / "conv_snn.pt2"
    torch.export.save(torch.export.export(module, example), path)
    return path


def test_element_wise_updates_are_bit_exact_against_pytorch() -> None:
    """Each aten op maps to one IR op with PyTorch's float32 rounding, so neuron updates written in any style
    (buffers of per-neuron decays, reset by subtraction or with where, comparisons of two tensors) match exactly."""
    module, example = neurons()
    graph = import_export(export_module(module, example, "neurons"), timesteps=STEPS)
    assert [n.op for n in graph.nodes if n.op == "delay"] == ["delay"] * 3
    x = _input((64,))
    expected = run_eager(module, example, x)
    plan = planned(graph)
    np.testing.assert_array_equal(run(graph, x), expected)
    np.testing.assert_array_equal(run(plan, x, simulate_plan=True), expected)


def test_state_inputs_become_delays_of_the_new_state() -> None:
    module, example = conv_snn()
    graph = import_export(export_module(module, example, "conv"), timesteps=3)
    delays = {n.name: n.attr("source") for n in graph.nodes if n.op == "delay"}
    assert set(delays) == {"mem1", "mem2"}
    assert graph.node(delays["mem1"]).op == "sub" and delays["mem2"] == graph.output
    assert graph.inputs[0].type.shape == (2, 8, 8)


def test_an_archive_matches_pytorch(tmp_path: Path) -> None:
    module, example = conv_snn()
    graph = import_model(str(_saved(tmp_path)), ImportOptions(timesteps=STEPS))
    x = _input((2, 8, 8))
    expected = run_eager(module, example, x)
    np.testing.assert_allclose(run(graph, x), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_factories_may_return_an_exported_program() -> None:
    graph = import_model("tests.export_models:conv_snn_exported", ImportOptions(timesteps=2))
    assert graph.name == "conv_snn_exported" and graph.node(graph.output).op == "add"


def _rewrite(path: Path, out: Path, change: dict[str, bytes]) -> Path:
    """A copy of the archive with some members replaced."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            name = next((k for k in change if item.filename.endswith(k)), None)
            dst.writestr(item, change[name] if name else src.read(item.filename))
    return out


class _Payload:
    """Unpickling this object creates a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def test_hostile_archives_are_refused_without_running_code(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    marker = tmp_path / "pwned"
    evil_inputs = _rewrite(
        path, tmp_path / "inputs.pt2", {"/data/sample_inputs/model.pt": pickle.dumps(_Payload(marker))}
    )
    with pytest.raises(FrontendError, match=r"sample_inputs/model.pt is not plain tensors"):
        load_export(evil_inputs)
    with zipfile.ZipFile(path) as archive:
        (config,) = [n for n in archive.namelist() if n.endswith("model_weights_config.json")]
        weights = json.loads(archive.read(config))
    next(iter(weights["config"].values()))["use_pickle"] = True
    pickled = _rewrite(path, tmp_path / "pickled.pt2", {"model_weights_config.json": json.dumps(weights).encode()})
    with pytest.raises(FrontendError, match=r"stores conv.weight as a pickled object"):
        load_export(pickled)
    assert not marker.exists()


def test_broken_archives_are_refused_in_one_line(tmp_path: Path) -> None:
    data = _saved(tmp_path).read_bytes()
    (tmp_path / "truncated.pt2").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt2").write_text("not a model\n")
    for name in ("truncated.pt2", "text.pt2"):
        result = masic_cli("compile", str(tmp_path / name))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "is not a torch.export archive" in result.stderr.splitlines()[-1]


class _Tanh(nn.Module):
    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem = 0.5 * mem + torch.tanh(x)
        return mem, mem


class _Stateless(nn.Module):
    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        return x + mem


class _Divide(nn.Module):
    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem = torch.div(mem, 3.0, rounding_mode="floor") + x
        return mem, mem


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (_Tanh(), r"unsupported op aten.tanh.default \(%tanh\) at mem = 0.5 \* mem \+ torch.tanh\(x\)"),
        (_Stateless(), r"forward takes 2 tensors \(input and 1 states\) but returns 1"),
        (_Divide(), r"aten.div.Tensor_mode \(%div\) at mem = torch.div\(mem, 3.0, rounding_mode=.floor.\) \+ x"),
    ],
)
def test_unsupported_programs_are_named(module: nn.Module, message: str) -> None:
    program = export_module(module, (torch.zeros(1, 4), torch.zeros(1, 4)), "test")
    with pytest.raises(FrontendError, match=message):
        import_export(program)


def test_plain_modules_need_example_inputs(tmp_path: Path) -> None:
    (tmp_path / "plain_factory.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    result = masic_cli("compile", "plain_factory:make", "--emit", "ir", cwd=tmp_path)
    assert result.returncode == 2
    assert "return (module, example_inputs) or a torch.export.ExportedProgram" in result.stderr.splitlines()[-1]


@pytest.mark.slow
def test_compiled_archive_matches_pytorch(tmp_path: Path) -> None:
    module, example = conv_snn()
    out = compile_spec(str(_saved(tmp_path)), "x86_64", tmp_path, "--timesteps", str(STEPS))
    x = _input((2, 8, 8), seed=1)
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = run_eager(module, example, x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow
def test_compiled_element_wise_updates_are_bit_exact(tmp_path: Path) -> None:
    out = compile_spec("tests.export_models:neurons", "x86_64", tmp_path, "--timesteps", str(STEPS))
    x = _input((64,), seed=2)
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    module, example = neurons()
    np.testing.assert_array_equal(outputs, run_eager(module, example, x))
