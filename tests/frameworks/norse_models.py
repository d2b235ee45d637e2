"""Norse models beyond feed-forward cells, as users write them: one case per cell and option, each run by Norse itself
over at least 32 steps on inputs that make its output cell spike (`tests/frameworks/test_norse.py` compares them with
masic's interpreter and compiled artifacts).

A case builds the model (`factory`), draws its inputs (`inputs`) and says how to read its output cell's membrane and
threshold from the state Norse returns (`tests.frameworks.compare`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import norse.torch as nt
import numpy as np
import torch
from norse.torch import SequentialState
from torch import nn

Inputs = Callable[[np.random.Generator, int, tuple[int, ...]], np.ndarray]


@dataclass(frozen=True)
class Case:
    """One model. `factory` builds it (seeded, in eval mode); `inputs(rng, steps, shape)` draws a (steps, *shape)
    float32 input sequence; Norse's output spikes over the steps must number at least `min_spikes`. `lifted`: the
    model runs a whole sequence in one call (time-lifted modules, built to record their states), else it is called
    step by step with its state. `membrane(state)` and `threshold(state, z)` read the output cell's state after a
    step: its membrane (before any reset where it did not spike) and the threshold it was compared with."""

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    steps: int
    inputs: Inputs
    min_spikes: int
    threshold: Callable[[Any, torch.Tensor], torch.Tensor]
    membrane: Callable[[Any], torch.Tensor] = lambda state: state.v
    lifted: bool = False


def uniform(high: float, low: float = 0.0) -> Inputs:
    """Inputs drawn uniformly from [low, high): a drive that makes cells spike irregularly."""

    def draw(rng: np.random.Generator, steps: int, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(low, high, (steps, *shape)).astype(np.float32)

    return draw


def _seeded(seed: int, build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        torch.manual_seed(seed)
        return build().eval()

    return factory


def _fixed(value: float | torch.Tensor) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    return lambda state, z: torch.as_tensor(value)


def _adaptive(beta: float) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """LSNN compares v with b before b jumps by beta where the neuron spikes."""
    return lambda state, z: state.b - z * beta


P = torch.tensor
N_IN, N = 16, 32  # input features, neurons of the output cell
LIF_TUNED = nt.LIFParameters(tau_mem_inv=P(60.0), tau_syn_inv=P(150.0), v_th=P(0.4), v_reset=P(-0.1), v_leak=P(0.05))
LSNN_P = nt.LSNNParameters(tau_adapt_inv=P(1 / 0.05), beta=P(0.3), v_th=P(0.5))
LSNN_PER_NEURON = nt.LSNNParameters(
    tau_mem_inv=torch.linspace(80.0, 120.0, N), v_th=torch.linspace(0.3, 0.7, N), tau_adapt_inv=P(10.0), beta=P(0.2)
)
ADEX = nt.LIFAdExParameters(adaptation_current=P(0.5), adaptation_spike=P(0.3), tau_ada_inv=P(20.0))
EX = nt.LIFExParameters(delta_T=P(0.3), v_th=P(0.8))
REFRAC = nt.LIFRefracParameters(nt.LIFParameters(v_th=P(0.5)), rho_reset=P(3.0))


def _amplified(model: nn.Module, factor: float) -> nn.Module:
    """The model with its Linear layers' weights scaled by `factor`: trained models' deeper layers are driven by
    spikes to threshold; freshly initialised ones are not."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(factor)
    return model


def _refrac_membrane(state: Any) -> torch.Tensor:
    return state.lif.v


def _case(name: str, build: Callable[[], nn.Module], threshold: Any, seed: int, **kw: Any) -> Case:
    defaults = {"input_shape": (N_IN,), "steps": 40, "inputs": uniform(2.0), "min_spikes": 40}
    return Case(name, _seeded(seed, build), threshold=threshold, **(defaults | kw))


def _izhikevich(behavior: Any, recurrent: bool = False, lifted: bool = False) -> Callable[[], nn.Module]:
    if lifted:
        return lambda: nn.Sequential(nt.Lift(nn.Linear(N_IN, N)), nt.Izhikevich(behavior, record_states=True))
    if recurrent:
        return lambda: SequentialState(nt.IzhikevichRecurrentCell(N_IN, N, behavior))
    return lambda: SequentialState(nn.Linear(N_IN, N), nt.IzhikevichCell(behavior))


CASES: tuple[Case, ...] = (
    _case("lif_recurrent_cell", lambda: SequentialState(nt.LIFRecurrentCell(N_IN, N)), _fixed(1.0), 1),
    _case(
        "lif_recurrent_cell_autapses_tuned",
        lambda: SequentialState(nt.LIFRecurrentCell(N_IN, N, LIF_TUNED, autapses=True, dt=7e-4)),
        _fixed(0.4),
        2,
    ),
    _case(
        "lif_recurrent_lifted",
        lambda: nn.Sequential(nt.LIFRecurrent(N_IN, N, record_states=True)),
        _fixed(1.0),
        3,
        lifted=True,
    ),
    _case(
        "lif_recurrent_stack",  # a SequentialState of recurrent and feed-forward cells, the last one recurrent
        lambda: _amplified(
            SequentialState(
                nn.Linear(N_IN, 24),
                nt.LSNNRecurrentCell(24, 24, LSNN_P),
                nn.Linear(24, 28),
                nt.LIFCell(),
                nt.LIFRecurrentCell(28, N),
            ),
            6.0,
        ),
        _fixed(1.0),
        4,
        inputs=uniform(3.0),
        min_spikes=20,
    ),
    _case("lsnn_cell", lambda: SequentialState(nn.Linear(N_IN, N), nt.LSNNCell(LSNN_P)), _adaptive(0.3), 5),
    _case(
        "lsnn_cell_per_neuron_adjoint",
        lambda: SequentialState(nn.Linear(N_IN, N), nt.LSNNCell(LSNN_PER_NEURON, adjoint=True, dt=2e-3)),
        _adaptive(0.2),
        6,
    ),
    _case("lsnn_recurrent_cell", lambda: SequentialState(nt.LSNNRecurrentCell(N_IN, N, LSNN_P)), _adaptive(0.3), 7),
    _case(
        "lsnn_lifted",
        lambda: nn.Sequential(nt.Lift(nn.Linear(N_IN, N)), nt.LSNN(LSNN_P, record_states=True)),
        _adaptive(0.3),
        8,
        lifted=True,
    ),
    _case(
        "lsnn_recurrent_lifted",
        lambda: nn.Sequential(nt.LSNNRecurrent(N_IN, N, LSNN_P, record_states=True)),
        _adaptive(0.3),
        9,
        lifted=True,
    ),
    _case("lif_ex_cell", lambda: SequentialState(nn.Linear(N_IN, N), nt.LIFExCell(EX)), _fixed(0.8), 10),
    _case("lif_ex_recurrent_cell", lambda: SequentialState(nt.LIFExRecurrentCell(N_IN, N, EX)), _fixed(0.8), 11),
    _case(
        "lif_ex_lifted",
        lambda: nn.Sequential(nt.Lift(nn.Linear(N_IN, N)), nt.LIFEx(EX, record_states=True)),
        _fixed(0.8),
        12,
        lifted=True,
    ),
    _case("lif_adex_cell", lambda: SequentialState(nn.Linear(N_IN, N), nt.LIFAdExCell(ADEX)), _fixed(1.0), 13),
    _case(
        "lif_adex_recurrent_cell",
        lambda: SequentialState(nt.LIFAdExRecurrentCell(N_IN, N, ADEX)),
        _fixed(1.0),
        14,
    ),
    _case(
        "lif_adex_recurrent_lifted",
        lambda: nn.Sequential(nt.LIFAdExRecurrent(N_IN, N, ADEX, record_states=True)),
        _fixed(1.0),
        15,
        lifted=True,
    ),
    _case(
        "lif_refrac_cell",
        lambda: SequentialState(nn.Linear(N_IN, N), nt.LIFRefracCell(REFRAC)),
        _fixed(0.5),
        16,
        membrane=_refrac_membrane,
    ),
    _case(
        "lif_refrac_recurrent_cell",
        lambda: SequentialState(nt.LIFRefracRecurrentCell(N_IN, N, REFRAC)),
        _fixed(0.5),
        17,
        membrane=_refrac_membrane,
    ),
    _case(
        "lif_refrac_recurrent_lifted",
        lambda: nn.Sequential(nt.LIFRefracRecurrent(N_IN, N, REFRAC, record_states=True)),
        _fixed(0.5),
        18,
        membrane=_refrac_membrane,
        lifted=True,
    ),
    _case(
        "izhikevich_cell",
        _izhikevich(nt.tonic_spiking),
        _fixed(30.0),
        19,
        steps=64,
        inputs=uniform(40.0),
        min_spikes=10,
    ),
    _case("izhikevich_cell_bursting", _izhikevich(nt.tonic_bursting), _fixed(30.0), 20, steps=64, inputs=uniform(40.0)),
    _case(
        "izhikevich_recurrent_cell",
        _izhikevich(nt.tonic_spiking, recurrent=True),
        _fixed(30.0),
        21,
        steps=64,
        inputs=uniform(40.0),
    ),
    _case(
        "izhikevich_lifted",
        _izhikevich(nt.phasic_bursting, lifted=True),
        _fixed(30.0),
        22,
        steps=64,
        inputs=uniform(40.0),
        lifted=True,
    ),
    _case(
        "coba_lif_cell",
        lambda: SequentialState(nt.CobaLIFCell(N_IN, N, dt=5e-3)),
        _fixed(-10.0),
        23,
    ),
    _case(
        "recurrent_sequential",  # Norse's RecurrentSequential: the output of a step added to the next step's input
        lambda: _amplified(
            nt.RecurrentSequential(nn.Linear(N_IN, N), nt.LIFCell(), nn.Linear(N, N_IN), nt.LIFBoxCell()), 6.0
        ),
        _fixed(1.0),
        24,
        min_spikes=15,
    ),
)


DIGITS_STEPS = 12
DIGITS_GAIN = 4.0  # the 8x8 images (0 to 2) scaled so that the first layer spikes within a few steps


def digits_model() -> SequentialState:
    """A recurrent SNN for scikit-learn's 8x8 digits: an LSNN layer (adaptive thresholds, recurrent weights), then
    a linear readout into leaky integrators whose output summed over the steps is the class score."""
    p = nt.LSNNParameters(tau_adapt_inv=P(1 / 0.05), beta=P(0.2), v_th=P(0.5))
    return SequentialState(nn.Flatten(), nt.LSNNRecurrentCell(64, 32, p), nn.Linear(32, 10), nt.LICell())


def digits_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 10) outputs summed over DIGITS_STEPS steps, each image presented at every step."""
    state, total = None, 0
    for _ in range(DIGITS_STEPS):
        out, state = model(images * DIGITS_GAIN, state)
        total = total + out
    return total


def train_digits(x: np.ndarray, y: np.ndarray, epochs: int = 6, seed: int = 0) -> SequentialState:
    """digits_model trained with Adam on the cross-entropy of the summed output (a few seconds on one thread)."""
    torch.manual_seed(seed)
    model = digits_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the batches are small: one thread is several times faster than two that share
    try:
        for _ in range(epochs):
            for batch in torch.randperm(len(images)).split(128):
                loss = nn.functional.cross_entropy(digits_scores(model, images[batch]), labels[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
