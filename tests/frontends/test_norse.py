"""Norse frontend: the reference interpreter reproduces Norse, and bad models are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from masic.frontends.errors import FrontendError
from masic.frontends.norse import import_norse, install_pickle_aliases, load_model
from norse.torch import IAF, LI, LIF, IAFCell, LIBoxCell, LICell, LIFBoxCell, LIFCell, Lift, SequentialState
from norse.torch.functional.reset import reset_subtract
from torch import nn

from masic.ir.graph import Node
from masic.ir.interpret import initial_state, run
from masic.ir.ops import OPS
from masic.ir.reference import Step
from masic.ir.verify import verify
from tests.norse_models import MODELS, random_input, run_norse
from tests.pipelines import planned

CELLS = {
    "lif": lambda: LIFCell(),
    "lif_tuned": lambda: LIFCell(
        __import__("norse").torch.LIFParameters(
            tau_mem_inv=torch.tensor(73.0),
            tau_syn_inv=torch.tensor(151.0),
            v_leak=torch.tensor(0.1),
            v_th=torch.tensor(0.7),
            v_reset=torch.tensor(-0.2),
        ),
        dt=7e-4,
    ),
    "lif_float_params": lambda: LIFCell(__import__("norse").torch.LIFParameters(tau_mem_inv=61.0, v_th=0.45)),
    "lif_box": lambda: LIFBoxCell(),
    "lif_box_subtract": lambda: LIFBoxCell(__import__("norse").torch.LIFBoxParameters(reset_method=reset_subtract)),
    "li": lambda: LICell(),
    "li_box": lambda: LIBoxCell(),
    "iaf": lambda: IAFCell(),
}


@pytest.mark.parametrize("cell", CELLS)
def test_neuron_updates_match_norse_bit_for_bit(cell: str) -> None:
    """Same synaptic input into Norse's cell and the interpreter's neuron update: every value identical."""
    module = CELLS[cell]()
    graph = import_norse(SequentialState(module), (4096,))
    (node,) = [n for n in graph.nodes if n.op != "input"]
    rng = np.random.default_rng(0)
    state_ref, state = None, initial_state(graph, node)

    def param(key: str):
        value = node.attr(key)
        return graph.weights[value.name] if hasattr(value, "name") else np.float32(value)

    spikes = 0
    with torch.no_grad():
        for _ in range(200):
            x = rng.uniform(-0.5, 3.0, 4096).astype(np.float32)
            expected, state_ref = module(torch.from_numpy(x), state_ref)
            got = OPS[node.op].interpret(node, Step([x], param, state, x))
            np.testing.assert_array_equal(got, expected.numpy())
            np.testing.assert_array_equal(state["v"], np.broadcast_to(state_ref.v.numpy(), state["v"].shape))
            spikes += int(got.sum()) if node.op in ("lif", "lif_box", "iaf") else 0
    assert node.op in ("li", "li_box") or spikes > 1000  # the run exercised resets


@pytest.mark.parametrize("name", MODELS)
def test_interpreter_matches_norse_on_whole_models(name: str) -> None:
    factory, shape = MODELS[name]
    model = factory()
    x = random_input(shape, 12)
    expected = run_norse(model, x)
    graph = import_norse(model, shape if len(shape) > 1 else None, timesteps=12)
    verify(graph)
    plan = planned(graph)
    for got in (run(graph, x), run(plan, x), run(plan, x, simulate_plan=True)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_conv_models_need_an_input_shape() -> None:
    with pytest.raises(FrontendError, match=r"starts with Conv2d \(model.0\).*--input-shape"):
        import_norse(MODELS["conv"][0]())


def test_dense_models_imply_their_input_shape() -> None:
    graph = import_norse(MODELS["dense"][0]())
    assert graph.inputs[0].type.shape == (20,)


def test_unsupported_module_is_named_with_its_path() -> None:
    model = SequentialState(nn.Linear(4, 4), LIFCell(), nn.Tanh())
    with pytest.raises(FrontendError, match=r"unsupported module model.2 \(Tanh\): torch.nn.modules.activation.Tanh"):
        import_norse(model)
    nested = nn.Sequential(Lift(nn.Linear(4, 4)), LIF(), nn.Sequential(Lift(nn.GELU())))
    with pytest.raises(FrontendError, match=r"unsupported module model.2.0 \(GELU\)"):
        import_norse(nested)


def test_plain_pytorch_modules_are_not_read_as_norse_models() -> None:
    with pytest.raises(FrontendError, match=r"reads norse\.torch\.SequentialState, nn\.Sequential of Lift"):
        import_norse(nn.LSTM(2, 2))


def test_lifted_sequences_match_norse() -> None:
    """nn.Sequential of Lift(layer) and time-lifted LIF / LI / IAF neurons runs a whole sequence in Norse; its IR
    is one step of it, with the neurons' updates bit for bit (the input drives them directly)."""
    torch.manual_seed(13)
    model = nn.Sequential(
        LIF(),
        Lift(nn.Linear(24, 16)),
        IAF(),
        Lift(nn.Dropout(0.2)),
        Lift(nn.Linear(16, 8)),
        nn.ReLU(),
        LI(),
    ).eval()
    x = random_input((24,), 12)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)[:, None])[0][:, 0].numpy()
    graph = import_norse(model, (24,), timesteps=12)
    assert [n.op for n in graph.nodes] == ["input", "lif", "dense", "iaf", "dense", "relu", "li"]
    np.testing.assert_allclose(run(graph, x), expected, rtol=1e-5, atol=1e-6)
    first = nn.Sequential(LIF())
    with torch.no_grad():
        spikes = first(torch.from_numpy(x)[:, None])[0][:, 0].numpy()
    np.testing.assert_array_equal(run(import_norse(first, (24,), 12), x), spikes)


def test_shape_mismatch_names_the_layer() -> None:
    model = SequentialState(nn.Linear(4, 8), LIFCell(), nn.Linear(9, 2))
    with pytest.raises(FrontendError, match=r"model.2 \(Linear\): dense expects 9 input features, got 8"):
        import_norse(model)


def test_saved_models_load_without_running_code(tmp_path) -> None:
    install_pickle_aliases()
    path = tmp_path / "model.pt"
    model = MODELS["conv"][0]()
    torch.save(model, path)
    loaded = load_model(str(path))
    x = random_input((2, 12, 12), 3)
    np.testing.assert_array_equal(run_norse(loaded, x), run_norse(model, x))


def test_saved_norse_models_load_without_the_other_frameworks_installed(tmp_path, monkeypatch) -> None:
    """snnTorch, SpikingJelly and Sinabs are optional: their classes join the allowlist only when installed."""
    import importlib.util

    find_spec = importlib.util.find_spec
    missing = {"snntorch", "spikingjelly", "sinabs"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name, *a))
    install_pickle_aliases()
    path = tmp_path / "model.pt"
    torch.save(MODELS["conv"][0](), path)
    assert isinstance(load_model(str(path)), SequentialState)


class Sneaky(nn.Module):
    """A module class outside the allowlist: the safe loader must refuse to construct it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_files_naming_other_classes_are_refused_unless_trusted(tmp_path) -> None:
    install_pickle_aliases()
    path = tmp_path / "model.pt"
    torch.save(SequentialState(nn.Linear(2, 2), Sneaky()), path)
    with pytest.raises(FrontendError, match=r"names tests.frontends.test_norse.Sneaky.*--trust-pickle"):
        load_model(str(path))
    assert isinstance(load_model(str(path), trust_pickle=True), SequentialState)


def test_a_text_file_is_not_a_torch_archive(tmp_path) -> None:
    path = tmp_path / "model.pt"
    path.write_text("this is not a model\n")
    with pytest.raises(FrontendError, match="is not a PyTorch archive"):
        load_model(str(path))


def test_a_state_dict_is_not_a_model(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(FrontendError, match="not a model"):
        load_model(str(path))


def test_factory_specs_are_called() -> None:
    model = load_model("tests.norse_models:dense_model")
    assert isinstance(model, SequentialState)
    with pytest.raises(FrontendError, match="has no callable nope"):
        load_model("tests.norse_models:nope")
    with pytest.raises(FrontendError, match="cannot import no_such_pkg"):
        load_model("no_such_pkg.mod:factory")


def test_neuron_nodes_keep_their_source_location() -> None:
    graph = import_norse(MODELS["dense"][0]())
    lif: Node = next(n for n in graph.nodes if n.op == "lif")
    assert lif.loc == "model.1 (LIFCell)"
