"""Every framework zoo case against its framework, through masic's import: the reference interpreter reproduces
each model exactly (outputs identical, membranes within rtol 1e-5), and so does the planned graph of each zoo merged
into one, run inside one arena at its planned offsets; saved models load through the safe unpickler."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from masic.frontends.dispatch import ImportOptions, import_model
from masic.frontends.norse import install_pickle_aliases

from masic.ir.interpret import run
from tests.frameworks.cases import STEPS, Case, Trace, check, membrane_value, merged, zoos
from tests.pipelines import planned

ZOOS = zoos()
CASES = [case for cases in ZOOS.values() for case in cases]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label)
def test_the_interpreter_reproduces_the_framework(case: Case) -> None:
    model, x = case.make(), case.input()
    graph, membrane = membrane_value(case.graph(model), case.membrane)  # before the run changes the model's state
    expected = case.run(model, x)
    check(case, expected, Trace(run(graph, x), run(replace(graph, output=membrane), x)))


@pytest.mark.parametrize("zoo", ZOOS)
def test_each_zoo_merged_runs_in_its_planned_arena(zoo: str) -> None:
    """The passes (slicing, spike storage, layout, fusion, offsets) keep every case exact: the merged graph runs
    inside one byte array at its planned offsets."""
    cases = merged(ZOOS[zoo])
    outputs = run(planned(cases.graph), cases.input(), simulate_plan=True)
    for case, got in zip(cases.cases, cases.split(outputs), strict=True):
        check(case, case.run(case.make(), case.input()), got)


SAVED = {
    "snntorch_models": ("conv_net",),
    "spikingjelly_models": ("conv_net_m",),
    "sinabs_models": ("conv_net",),
    "norse_models": tuple(c.name for c in ZOOS["norse_models"]),  # every cell: its step functions and parameters
}


@pytest.mark.parametrize(("zoo", "name"), [(zoo, name) for zoo, names in SAVED.items() for name in names])
def test_saved_models_load_without_running_code(zoo: str, name: str, tmp_path: Path) -> None:
    """torch.save files of each framework's model load through the safe unpickler into the same graph (snnTorch's
    neurons made with surrogate_disable=True: its default surrogates are closures, which pickle cannot save; Norse's
    parameter tuples saved with masic's aliases, norse issue #414)."""
    case = next(c for c in ZOOS[zoo] if c.name == name)
    model = case.make()
    for m in model.modules():
        if hasattr(m, "surrogate_disable"):
            m.spike_grad = m._surrogate_bypass
    install_pickle_aliases()
    torch.save(model, tmp_path / "model.pt")
    options = ImportOptions(input_shape=case.input_shape, timesteps=STEPS)
    loaded = import_model(str(tmp_path / "model.pt"), options)
    x = case.input()
    assert (run(loaded, x) == run(case.graph(model), x)).all()
