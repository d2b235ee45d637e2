"""SpikingJelly model zoo (activation-based API): IFNode, LIFNode, ParametricLIFNode with every reset and
decay_input, in single-step mode (run one step per call) and multi-step mode (the whole sequence in one call, the
membrane from `store_v_seq`), and a convolutional net of `layer.*` wrappers and a SeqToANNContainer; each a `Case`
(tests/frameworks/cases.py) run by SpikingJelly itself."""

from __future__ import annotations

from collections.abc import Callable

import masic.frontends.spikingjelly  # noqa: F401  (quiets torch's Triton warnings before SpikingJelly loads)
import numpy as np
import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from tests.frameworks.cases import Case, Trace, exact_batchnorm, quantised, stepped


def _last_neuron(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, neuron.BaseNode)][-1]


def run_single(model: nn.Module, x: np.ndarray) -> Trace:
    """Single-step mode: one call per step, the membrane read from the last neuron's `v`."""
    functional.reset_net(model)
    functional.set_step_mode(model, "s")
    last = _last_neuron(model)
    return stepped(model, lambda: last.v)(model, x)


def run_multi(model: nn.Module, x: np.ndarray) -> Trace:
    """Multi-step mode: the sequence (T, 1, ...) in one call, the membrane from the last neuron's v_seq."""
    functional.reset_net(model)
    functional.set_step_mode(model, "m")
    last = _last_neuron(model)
    last.store_v_seq = True
    with torch.no_grad():
        out = model(torch.from_numpy(x)[:, None])
    return Trace(out[:, 0].numpy(), last.v_seq[:, 0].numpy())


def dense(make_neuron: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(seed)
        return quantised(nn.Sequential(layer.Linear(16, 24), make_neuron()))

    return make


def conv_net(container: bool = True) -> nn.Module:
    """Conv2d and batch norm (in a SeqToANNContainer, which runs in multi-step mode only), LIF, max pooling, conv,
    PLIF, average pooling, Flatten, Dropout, Linear and an IF output layer."""
    torch.manual_seed(5)
    first = (nn.Conv2d(1, 6, 3, padding=1), exact_batchnorm(6))
    return quantised(
        nn.Sequential(
            *((layer.SeqToANNContainer(*first),) if container else first),
            neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2),
            layer.Conv2d(6, 8, 3, padding=1),
            exact_batchnorm(8, layer.BatchNorm2d),
            neuron.ParametricLIFNode(init_tau=3.0, v_reset=None),
            layer.AvgPool2d(2),
            layer.Flatten(),
            layer.Dropout(0.3),
            layer.Linear(8 * 2 * 2, 10),
            neuron.IFNode(v_threshold=0.5),
        )
    )


def conv_net_single_step() -> nn.Module:
    return conv_net(container=False)


def _case(name: str, make: Callable[[], nn.Module], run: Callable, shape: tuple[int, ...] = (16,), **kw) -> Case:
    return Case("SpikingJelly", name, make, shape, run, "v", **kw)


def _neurons(run: Callable, mode: str) -> list[Case]:
    """Every neuron and option, in one step mode."""
    return [
        _case(f"if_hard_{mode}", dense(lambda: neuron.IFNode()), run),
        _case(f"if_soft_{mode}", dense(lambda: neuron.IFNode(v_reset=None, v_threshold=0.75)), run),
        _case(f"if_reset_negative_{mode}", dense(lambda: neuron.IFNode(v_reset=-0.25)), run),
        _case(f"lif_hard_{mode}", dense(lambda: neuron.LIFNode(tau=2.0)), run, scale=3.0),
        _case(f"lif_soft_{mode}", dense(lambda: neuron.LIFNode(tau=3.5, v_reset=None)), run, scale=5.0),
        _case(f"lif_no_decay_input_{mode}", dense(lambda: neuron.LIFNode(tau=4.0, decay_input=False)), run),
        _case(
            f"lif_no_decay_input_soft_{mode}",
            dense(lambda: neuron.LIFNode(tau=1.5, decay_input=False, v_reset=None)),
            run,
        ),
        _case(f"plif_hard_{mode}", dense(lambda: neuron.ParametricLIFNode(init_tau=2.0)), run, scale=3.0),
        _case(
            f"plif_soft_no_decay_input_{mode}",
            dense(lambda: neuron.ParametricLIFNode(init_tau=5.0, decay_input=False, v_reset=None)),
            run,
        ),
    ]


CASES = [
    *_neurons(run_single, "s"),
    *_neurons(run_multi, "m"),
    _case("conv_net_m", conv_net, run_multi, (1, 8, 8), min_spikes=8),
    _case("conv_net_s", conv_net_single_step, run_single, (1, 8, 8), min_spikes=8),
]
