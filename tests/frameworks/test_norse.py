"""Norse's recurrent, adaptive, exponential, refractory, conductance-based and Izhikevich cells, as their users write
them (tests/frameworks/norse_models.py): Norse's own modules against masic's interpreter (every case) and against
the compiled artifacts on x86_64 and aarch64 (all cases side by side in one artifact per target), by the rule of
tests/frameworks/compare.py."""

from __future__ import annotations

import re
from pathlib import Path

import norse.torch as nt
import numpy as np
import pytest
import torch
from masic.frontends.norse import import_norse, install_pickle_aliases, load_model
from norse.torch import SequentialState
from torch import nn

from examples.digits import load_data
from masic.cli import main
from masic.ir.interpret import run
from masic.ir.ports import split
from masic.ir.text import print_graph
from tests.artifacts import compile_graph, compile_spec, masic_cli
from tests.frameworks.compare import Trace, check, observed, run_norse, side_by_side
from tests.frameworks.norse_models import CASES, DIGITS_GAIN, DIGITS_STEPS, Case, digits_scores, train_digits

BY_NAME = {case.name: case for case in CASES}


def _input(case: Case) -> np.ndarray:
    return case.inputs(np.random.default_rng(sum(map(ord, case.name))), case.steps, case.input_shape)


def _graph(case: Case):
    return observed(import_norse(case.factory(), case.input_shape, case.steps, case.name))


def _trace(packed: np.ndarray, ports) -> Trace:
    parts = split(ports, packed)
    return Trace(parts["z"].reshape(len(packed), -1), parts["v"])


@pytest.mark.parametrize("name", BY_NAME)
def test_interpreter_matches_norse(name: str) -> None:
    case = BY_NAME[name]
    x = _input(case)
    norse = run_norse(case, x)
    assert case.steps >= 32 and norse.z.sum() >= case.min_spikes, f"{name}: {norse.z.sum()} spikes"
    graph = _graph(case)
    check(name, norse, _trace(run(graph, x), graph.output_ports))


def test_saved_models_load_without_running_code(tmp_path: Path) -> None:
    """torch.save files of every case load with the safe unpickler (the new cells, their step functions, parameter
    tuples and Izhikevich behaviours allowed) into the same IR as the models themselves."""
    install_pickle_aliases()
    for case in CASES:
        model = case.factory()
        torch.save(model, tmp_path / f"{case.name}.pt")
        loaded = load_model(str(tmp_path / f"{case.name}.pt"))
        graphs = [import_norse(m, case.input_shape, case.steps, case.name) for m in (model, loaded)]
        assert print_graph(graphs[0]) == print_graph(graphs[1]), case.name
        assert all(np.array_equal(graphs[0].weights[k], graphs[1].weights[k]) for k in graphs[0].weights)


@pytest.mark.slow
def test_artifacts_match_norse(target: str, tmp_path: Path) -> None:
    """Every case in one artifact (so that CI builds two, not fifty), side by side: each case's input and outputs
    are ports, given and read as .npz files by `masic run`; shorter cases' inputs repeat to the longest's steps."""
    steps = max(case.steps for case in CASES)
    graphs = {case.name: _graph(case) for case in CASES}
    inputs = {case.name: np.resize(_input(case), (steps, *case.input_shape)) for case in CASES}
    out = compile_graph(side_by_side(graphs, steps), target, tmp_path / "out")
    np.savez(tmp_path / "x.npz", **inputs)
    result = masic_cli("run", str(out), "--input", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz"))
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "y.npz") as outputs:
        for case in CASES:
            trace = Trace(*(outputs[f"{case.name}.{port}"][: case.steps].reshape(case.steps, -1) for port in "zv"))
            check(f"{case.name} ({target})", run_norse(case, inputs[case.name][: case.steps]), trace)


def _lsnn_with_lif_step() -> SequentialState:
    """A cell whose activation is not its own step (a pickle can set any allowed function there)."""
    cell = nt.LSNNCell()
    cell.activation = nt.functional.lif.lif_feed_forward_step
    return SequentialState(nn.Linear(4, 4), cell)


REFUSED = {
    "adex_refrac": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LIFAdExRefracCell()),
        r"unsupported module model.1 \(LIFAdExRefracCell\): norse.torch.module.lif_adex_refrac.LIFAdExRefracCell",
    ),
    "mc": (
        lambda: SequentialState(nt.LIFRecurrentCell(4, 4), nt.LIFMCRecurrentCell(4, 4)),
        r"unsupported module model.1 \(LIFMCRecurrentCell\)",
    ),
    "activation": (
        _lsnn_with_lif_step,
        r"model.1 \(LSNNCell\): its activation norse.torch.functional.lif.lif_feed_forward_step is not "
        r"lsnn_feed_forward_step",
    ),
    "tau_adapt": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LSNNCell(nt.LSNNParameters(tau_adapt_inv=torch.tensor(-1.0)))),
        r"model.1 \(LSNNCell\): tau_adapt_inv -1 is not positive and finite",
    ),
    "delta_T": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LIFExCell(nt.LIFExParameters(delta_T=torch.tensor(0.0)))),
        r"model.1 \(LIFExCell\): delta_T 0 is not positive and finite",
    ),
    "hidden": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LIFCell(), return_hidden=True),
        r"model \(SequentialState\): return_hidden=True outputs every layer's value",
    ),
    "outputs": (
        lambda: nt.RecurrentSequential(nn.Linear(4, 4), nt.LIFCell(), output_modules=[0, 1]),
        r"model \(RecurrentSequential\): output_modules=\[0, 1\] outputs several layers' values",
    ),
    "feedback": (
        lambda: nt.RecurrentSequential(nn.Linear(4, 6), nt.LIFCell()),
        r"model \(RecurrentSequential\): its output f32\[6\] cannot be added to its input f32\[4\]",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_unsupported_constructs_are_refused_with_their_place(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """By `masic compile` (from a factory spec), in one line, exit 2, naming the module path."""
    status = main(["compile", f"tests.frameworks.test_norse:refused_{name}", "--input-shape", "4", "--emit", "ir"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("masic: ")]
    assert status == 2 and len(errors) == 2 and errors[0].startswith("masic: importing"), errors
    assert errors[1].startswith("masic: error: ") and re.search(REFUSED[name][1], errors[1]), errors[1]


def __getattr__(name: str) -> object:
    """refused_<name>: the factories `masic compile` calls by spec."""
    if name.startswith("refused_") and name.removeprefix("refused_") in REFUSED:
        return REFUSED[name.removeprefix("refused_")][0]
    raise AttributeError(name)


@pytest.mark.slow
def test_a_trained_recurrent_model_keeps_its_accuracy(target: str, tmp_path: Path) -> None:
    """An LSNN network trained on scikit-learn's digits for a few epochs, saved with torch.save and compiled: the
    artifact run over the held-out digits has Norse's accuracy exactly, digit for digit."""
    x_train, x_test, y_train, y_test = load_data()
    model = train_digits(x_train, y_train)
    with torch.no_grad():
        norse = digits_scores(model, torch.from_numpy(x_test)).argmax(1).numpy()
    assert np.mean(norse == y_test) > 0.8, "the model must have learnt something"
    install_pickle_aliases()
    torch.save(model, tmp_path / "digits.pt")
    flags = ["--input-shape", "1,8,8", "--timesteps", str(DIGITS_STEPS)]
    out = compile_spec(str(tmp_path / "digits.pt"), target, tmp_path, *flags)
    np.save(tmp_path / "x.npy", x_test * DIGITS_GAIN)
    np.save(tmp_path / "y.npy", y_test.astype(np.int64))
    run_args = ["--input", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")]
    result = masic_cli("run", str(out), *run_args, "--predictions", str(tmp_path / "p.npy"))
    assert result.returncode == 0, result.stderr
    compiled = np.load(tmp_path / "p.npy")[:, 0]
    assert result.stats["accuracy"] == pytest.approx(np.mean(norse == y_test), abs=0)
    np.testing.assert_array_equal(compiled, norse)
