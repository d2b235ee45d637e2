"""A model per framework, trained for a few epochs on scikit-learn's digits inside the test (examples/digits.py's
split), keeps its accuracy exactly once compiled: the x86_64 artifact predicts every held-out digit as the
framework does (the class with the most output spikes over T steps, the first on a tie, as the loader's argmax)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import masic.frontends.spikingjelly  # noqa: F401  (quiets torch's Triton warnings before SpikingJelly loads)
import norse.torch as nt
import numpy as np
import pytest
import sinabs.layers as sl
import snntorch as snn
import snntorch.utils
import torch
from masic.frontends.frameworks import import_framework_model
from masic.frontends.norse import import_norse
from norse.torch import SequentialState
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from examples.digits import load_data
from masic.ir.graph import Graph
from tests.artifacts import compile_graph, masic_cli

pytestmark = pytest.mark.slow
STEPS = 6
EPOCHS = 4


@dataclass(frozen=True)
class Recipe:
    """A framework's digits model and how that framework runs a batch of images for STEPS steps: (steps, N, 10)."""

    make: Callable[[], nn.Module]
    outputs: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    importer: Callable[[nn.Module, tuple[int, ...], int], Graph] = import_framework_model


def _snntorch_model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 48),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(48, 10),
        snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def _snntorch_outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    snntorch.utils.reset(model)
    return torch.stack([model(images)[0] for _ in range(STEPS)])


def _spikingjelly_model() -> nn.Module:
    model = nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(8 * 4 * 4, 10),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(model, "m")
    return model


def _spikingjelly_outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    functional.reset_net(model)
    return model(images[None].repeat(STEPS, 1, 1, 1, 1))


def _sinabs_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        sl.IAFSqueeze(num_timesteps=STEPS),
        sl.SumPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10, bias=False),
        sl.IAFSqueeze(num_timesteps=STEPS),
    )


def _sinabs_outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    for m in model.modules():
        if isinstance(m, sl.StatefulLayer):
            m.reset_states()
    out = model(images.repeat_interleave(STEPS, dim=0))  # (N*T, 10), each sample's steps together
    return out.reshape(len(images), STEPS, -1).transpose(0, 1)


def _norse_model() -> nn.Module:
    """A recurrent SNN: an LSNN layer (adaptive thresholds, recurrent weights), then a linear readout into leaky
    integrators, whose membranes summed over the steps are the class scores."""
    p = nt.LSNNParameters(tau_adapt_inv=torch.tensor(1 / 0.05), beta=torch.tensor(0.2), v_th=torch.tensor(0.5))
    return SequentialState(
        nn.Flatten(), nt.LSNNRecurrentCell(64, 32, p, dt=5e-3), nn.Linear(32, 10), nt.LICell(dt=5e-3)
    )


def _norse_outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    state, outputs = None, []
    for _ in range(STEPS):
        out, state = model(images, state)
        outputs.append(out)
    return torch.stack(outputs)


RECIPES = {
    "snnTorch": Recipe(_snntorch_model, _snntorch_outputs),
    "SpikingJelly": Recipe(_spikingjelly_model, _spikingjelly_outputs),
    "Sinabs": Recipe(_sinabs_model, _sinabs_outputs),
    "Norse": Recipe(_norse_model, _norse_outputs, import_norse),
}


def _train(recipe: Recipe, x: np.ndarray, y: np.ndarray) -> nn.Module:
    """Adam on the cross-entropy of the output spikes summed over the steps."""
    torch.manual_seed(0)
    model = recipe.make()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(images)).split(64):
            loss = nn.functional.cross_entropy(recipe.outputs(model, images[batch]).sum(0), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


@pytest.mark.parametrize("framework", RECIPES)
def test_a_trained_digits_model_keeps_its_accuracy(framework: str, tmp_path: Path) -> None:
    recipe = RECIPES[framework]
    x_train, x_test, y_train, y_test = load_data()
    model = _train(recipe, x_train, y_train)
    with torch.no_grad():
        expected = recipe.outputs(model, torch.from_numpy(x_test)).sum(0).argmax(1).numpy()
    accuracy = float(np.mean(expected == y_test))
    assert accuracy > 0.5, f"{framework}: trained to only {accuracy:.1%}"
    out = compile_graph(recipe.importer(model, (1, 8, 8), STEPS), "x86_64", tmp_path / "out")
    np.save(tmp_path / "x.npy", x_test)
    np.save(tmp_path / "y.npy", y_test.astype(np.int64))
    run = masic_cli(
        "run", str(out), "--input", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
        "--predictions", str(tmp_path / "p.npy"), "--no-exit",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    predictions = np.load(tmp_path / "p.npy")[:, 0]
    assert run.stats["correct"] == int(np.sum(expected == y_test))  # the same accuracy
    np.testing.assert_array_equal(predictions, expected)
