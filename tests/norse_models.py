"""Norse reference models and runs shared by frontend and end-to-end tests."""

from __future__ import annotations

import numpy as np
import torch
from norse.torch import (
    IAFCell,
    IAFParameters,
    LIBoxCell,
    LICell,
    LIFBoxCell,
    LIFBoxParameters,
    LIFCell,
    LIFParameters,
    SequentialState,
)
from norse.torch.functional.reset import reset_subtract
from torch import nn


def dense_model() -> SequentialState:
    torch.manual_seed(10)
    return SequentialState(nn.Linear(20, 48), LIFCell(), nn.Dropout(0.3), nn.Linear(48, 10), LICell())


def conv_model() -> SequentialState:
    """Conv + batch norm + max/avg pooling, LIF, LIF-box with reset by subtraction, LI-box output."""
    torch.manual_seed(11)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
    return SequentialState(
        nn.Conv2d(2, 6, 3, padding=1),
        bn,
        LIFCell(LIFParameters(tau_mem_inv=torch.tensor(50.0), v_th=torch.tensor(0.3))),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2),
        LIFBoxCell(LIFBoxParameters(v_th=torch.tensor(0.05), reset_method=reset_subtract), dt=2e-3),
        nn.AvgPool2d(2, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 10),
        LIBoxCell(),
    )


def iaf_model() -> SequentialState:
    """Per-neuron thresholds, dilation, no-bias layers, IAF and LI."""
    torch.manual_seed(12)
    thresholds = torch.linspace(0.2, 1.0, 12)
    return SequentialState(
        nn.Conv2d(1, 4, 3, dilation=2, bias=False),
        IAFCell(IAFParameters(v_th=torch.tensor(0.4))),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 12, bias=False),
        LIFCell(LIFParameters(v_th=thresholds, v_leak=torch.tensor(0.05)), dt=1e-3),
        nn.Linear(12, 5),
        LICell(),
    )


def wide_dense_model() -> SequentialState:
    """A dense layer of 2 MB of weights, more than the default machine's 1 MB cache (not in MODELS: planning tests
    only)."""
    torch.manual_seed(0)
    return SequentialState(nn.Linear(1024, 512), LIFCell(), nn.Linear(512, 10), LICell())


MODELS = {
    "dense": (dense_model, (20,)),
    "conv": (conv_model, (2, 12, 12)),
    "iaf": (iaf_model, (1, 10, 10)),
}


def random_input(shape: tuple[int, ...], timesteps: int, seed: int = 0) -> np.ndarray:
    """A sequence of non-negative inputs strong enough to make every layer spike."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 3.0, (timesteps, *shape)).astype(np.float32)


def run_norse(model: SequentialState, x: np.ndarray) -> np.ndarray:
    """Step-wise outputs (T, *output) with a batch of one."""
    model.eval()
    state, outputs = None, []
    with torch.no_grad():
        for step in x:
            out, state = model(torch.from_numpy(step)[None], state)
            outputs.append(out[0].numpy())
    return np.stack(outputs)
