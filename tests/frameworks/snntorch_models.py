"""snnTorch model zoo: every neuron and option masic reads (tutorial-style `nn.Sequential` with `init_hidden=True`
neurons), each a `Case` run by snnTorch itself step by step (tests/frameworks/cases.py). Factories such as
`tests.frameworks.snntorch_models:conv_net` also serve `masic compile`."""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import snntorch.utils
import torch
from torch import nn

from tests.frameworks.cases import Case, Trace, exact_batchnorm, quantised, stepped


def _last_neuron(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, snn.SpikingNeuron)][-1]


def run(model: nn.Module, x) -> Trace:
    """snnTorch's own step-by-step run from reset state; with output=True the last neuron returns (spk, mem)."""
    snn.utils.reset(model)
    neuron = _last_neuron(model)

    def call(step: torch.Tensor) -> torch.Tensor:
        out = model(step)
        return out[0] if isinstance(out, tuple) else out

    return stepped(call, lambda: neuron.mem)(model, x)


def dense(neuron: Callable[[], nn.Module], features: int = 24, seed: int = 0) -> Callable[[], nn.Module]:
    """A factory of Linear(16, features) -> the neuron."""

    def make() -> nn.Module:
        torch.manual_seed(seed)
        return quantised(nn.Sequential(nn.Linear(16, features), neuron()))

    return make


def conv_net() -> nn.Module:
    """The tutorials' convolutional SNN: Conv2d, batch norm, Leaky, max pooling, Conv2d, Synaptic, average pooling,
    Flatten, Dropout, Linear and a Leaky output layer returning (spk, mem)."""
    torch.manual_seed(7)
    return quantised(
        nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1),
            exact_batchnorm(6),
            snn.Leaky(beta=0.9, init_hidden=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            snn.Synaptic(alpha=0.7, beta=0.85, threshold=0.5, init_hidden=True),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(8 * 2 * 2, 10),
            snn.Leaky(beta=0.8, threshold=0.25, init_hidden=True, output=True),
        )
    )


def recurrent_conv() -> nn.Module:
    torch.manual_seed(8)
    return quantised(
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            snn.RLeaky(beta=0.8, conv2d_channels=4, kernel_size=3, init_hidden=True, reset_mechanism="zero"),
        )
    )


def recurrent_synaptic_conv() -> nn.Module:
    torch.manual_seed(9)
    return quantised(
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            snn.RSynaptic(alpha=0.6, beta=0.8, conv2d_channels=4, kernel_size=3, init_hidden=True),
        )
    )


def _per_neuron(low: float, high: float, n: int = 24) -> torch.Tensor:
    return torch.linspace(low, high, n)


def _case(name: str, make: Callable[[], nn.Module], shape: tuple[int, ...] = (16,), **kw: object) -> Case:
    return Case("snnTorch", name, make, shape, run, "mem", **kw)


LEAKY = [
    _case("leaky_subtract", dense(lambda: snn.Leaky(beta=0.9, init_hidden=True))),
    _case(
        "leaky_zero_learned",
        dense(
            lambda: snn.Leaky(
                beta=_per_neuron(0.5, 1.2),  # above 1: clamped to 1, as snnTorch clamps it
                threshold=_per_neuron(0.5, 1.5),
                learn_beta=True,
                learn_threshold=True,
                reset_mechanism="zero",
                init_hidden=True,
            )
        ),
    ),
    _case("leaky_none", dense(lambda: snn.Leaky(beta=1.3, reset_mechanism="none", init_hidden=True)), scale=0.5),
]
SYNAPTIC = [
    _case("synaptic_subtract", dense(lambda: snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True))),
    _case(
        "synaptic_zero_learned",
        dense(
            lambda: snn.Synaptic(
                alpha=_per_neuron(0.3, 1.1), beta=0.7, learn_alpha=True, reset_mechanism="zero", init_hidden=True
            )
        ),
    ),
    _case("synaptic_none", dense(lambda: snn.Synaptic(alpha=0.5, beta=0.6, reset_mechanism="none", init_hidden=True))),
]
LAPICQUE = [
    _case("lapicque_beta", dense(lambda: snn.Lapicque(beta=0.9, init_hidden=True)), scale=16.0),
    _case(
        "lapicque_rc_zero",
        dense(lambda: snn.Lapicque(R=5.1, C=5e-3, time_step=1e-3, reset_mechanism="zero", init_hidden=True)),
        scale=4.0,
    ),
    _case("lapicque_none", dense(lambda: snn.Lapicque(beta=0.7, R=2.0, reset_mechanism="none", init_hidden=True))),
]
ALPHA = [
    _case("alpha_zero", dense(lambda: snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True))),
    _case(
        "alpha_subtract", dense(lambda: snn.Alpha(alpha=0.85, beta=0.6, reset_mechanism="subtract", init_hidden=True))
    ),
    _case("alpha_none", dense(lambda: snn.Alpha(alpha=0.7, beta=0.5, reset_mechanism="none", init_hidden=True))),
]
RECURRENT = [
    _case("rleaky_linear", dense(lambda: snn.RLeaky(beta=0.9, linear_features=24, init_hidden=True))),
    _case("rleaky_conv_zero", recurrent_conv, (1, 6, 6)),
    _case(
        "rleaky_one_to_one_none",
        dense(lambda: snn.RLeaky(beta=0.8, all_to_all=False, V=0.5, reset_mechanism="none", init_hidden=True)),
        scale=0.5,
    ),
    _case("rsynaptic_linear", dense(lambda: snn.RSynaptic(alpha=0.7, beta=0.9, linear_features=24, init_hidden=True))),
    _case("rsynaptic_conv", recurrent_synaptic_conv, (1, 6, 6)),
    _case(
        "rsynaptic_one_to_one_zero",
        dense(
            lambda: snn.RSynaptic(
                alpha=0.6,
                beta=0.7,
                all_to_all=False,
                V=_per_neuron(-0.5, 0.5),
                reset_mechanism="zero",
                init_hidden=True,
            )
        ),
    ),
]
CASES = [*LEAKY, *SYNAPTIC, *LAPICQUE, *ALPHA, *RECURRENT, _case("conv_net", conv_net, (1, 8, 8), min_spikes=8)]
