"""Sinabs model zoo: IAF, LIF and ExpLeak and their Squeeze twins, with MultiSpike, MaxSpike and SingleSpike,
MembraneSubtract and MembraneReset, min_v_mem, synaptic currents and norm_input, and a convolutional net with
SumPool2d; each a `Case` (tests/frameworks/cases.py) run by Sinabs itself, one frame per call (its layers keep
their state between calls)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sinabs.layers as sl
import torch
from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, SingleSpike
from torch import nn

from tests.frameworks.cases import Case, Trace, quantised, stepped


def _last_neuron(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, sl.StatefulLayer)][-1]


def _run(squeezed: bool) -> Callable[[nn.Module, np.ndarray], Trace]:
    """Sinabs' run, one frame per call: (batch, time=1, ...) for IAF/LIF/ExpLeak, (batch*time, ...) for Squeeze
    layers; the membrane is the last layer's v_mem."""

    def run(model: nn.Module, x: np.ndarray) -> Trace:
        for m in model.modules():
            if isinstance(m, sl.StatefulLayer):
                m.reset_states()
        last = _last_neuron(model)

        def call(step: torch.Tensor) -> torch.Tensor:
            return model(step) if squeezed else model(step[:, None])[:, 0]

        return stepped(call, lambda: last.v_mem)(model, x)

    return run


def dense(make_neuron: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(seed)
        return quantised(nn.Sequential(nn.Linear(16, 24), make_neuron()))

    return make


def conv_net() -> nn.Module:
    """A Speck-style CNN: Conv2d, IAFSqueeze, SumPool2d, Conv2d, IAFSqueeze, SumPool2d, Flatten, Linear,
    IAFSqueeze."""
    torch.manual_seed(6)
    return quantised(
        nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1, bias=False),
            sl.IAFSqueeze(batch_size=1),
            sl.SumPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=False),
            sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
            sl.SumPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 2 * 2, 10, bias=False),
            sl.IAFSqueeze(batch_size=1, spike_threshold=torch.tensor(0.5)),
        )
    )


def _case(name: str, make: Callable[[], nn.Module], squeezed: bool = False, **kw) -> Case:
    shape = kw.pop("shape", (16,))
    return Case("Sinabs", name, make, shape, _run(squeezed), "v_mem", **kw)


def _squeezed(cls: type, **kw: object) -> Callable[[], nn.Module]:
    return lambda: cls(batch_size=1, **kw)


CASES = [
    _case("iaf_multi_spike", dense(lambda: sl.IAF())),
    _case("iaf_squeeze", dense(_squeezed(sl.IAFSqueeze, spike_threshold=torch.tensor(0.75))), squeezed=True),
    _case(
        "iaf_single_spike_reset",
        dense(lambda: sl.IAF(spike_fn=SingleSpike, reset_fn=MembraneReset(reset_value=0.125), min_v_mem=-0.5)),
    ),
    _case("iaf_max_spike", dense(lambda: sl.IAF(spike_fn=MaxSpike(2), reset_fn=MembraneSubtract(0.5))), scale=3.0),
    _case("iaf_synapse", dense(lambda: sl.IAF(tau_syn=3.0)), scale=3.0),
    _case("lif_norm_input", dense(lambda: sl.LIF(tau_mem=4.0, spike_threshold=torch.tensor(0.25))), scale=3.0),
    _case("lif_synapse", dense(lambda: sl.LIF(tau_mem=6.0, tau_syn=2.0, norm_input=False)), scale=3.0),
    _case(
        "lif_squeeze_per_neuron",
        dense(_squeezed(sl.LIFSqueeze, tau_mem=torch.linspace(2.0, 9.0, 24), norm_input=False)),
        squeezed=True,
    ),
    _case(
        "lif_trained_alphas_single",
        dense(lambda: sl.LIF(tau_mem=5.0, train_alphas=True, spike_fn=SingleSpike, norm_input=False)),
    ),
    _case("exp_leak", dense(lambda: sl.ExpLeak(tau_mem=4.0))),
    _case("exp_leak_squeeze", dense(_squeezed(sl.ExpLeakSqueeze, tau_mem=3.0, min_v_mem=-0.25)), squeezed=True),
    _case("conv_net", conv_net, squeezed=True, shape=(1, 8, 8), min_spikes=8),
]
