"""Plain PyTorch SNN step modules in the snnTorch style (no Norse classes): `forward(x, *state)` returns
`(output, *new_state)` for one timestep. Factories return `(module, example_inputs)`, also as
`tests.export_models:NAME` specs for `masic compile`."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Neurons(nn.Module):
    """Only element-wise updates, driven by the input itself: a leaky neuron with per-neuron decay (a buffer) and
    reset by subtraction, as snnTorch's Leaky; a synaptic neuron reset to zero with `where`; a threshold written as
    a comparison of two tensors."""

    def __init__(self, n: int = 64) -> None:
        super().__init__()
        self.register_buffer("beta", torch.linspace(0.7, 0.95, n))
        self.register_buffer("threshold", torch.linspace(0.8, 1.2, n))

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor, syn: torch.Tensor, mem2: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        reset = (mem > 1.0).float()
        mem = self.beta * mem + x - reset * 1.0
        spk = (mem - self.threshold > 0).float()
        syn = 0.8 * syn + spk * 0.5 - 0.1
        mem2 = 0.9 * mem2 + syn
        fired = mem2 > 0.6
        out = torch.where(fired, torch.ones_like(mem2), torch.zeros_like(mem2))
        mem2 = torch.where(fired, torch.zeros_like(mem2), mem2)
        return out + 0.5 * torch.relu(-mem2) - (2.0 - spk), mem, syn, mem2


class ConvSNN(nn.Module):
    """A convolutional SNN step: conv, leaky neurons with reset by subtraction, max, average and adaptive average
    pooling (4x4 -> 3x3 -> 2x2: overlapping bins), flatten, linear, and a leaky readout whose membrane is the
    output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(31)
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 10)
        with torch.no_grad():
            self.conv.weight *= 3

    def forward(self, x: torch.Tensor, mem1: torch.Tensor, mem2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mem1 = 0.9 * mem1 + self.conv(x)
        spk1 = (mem1 > 1.0).float()
        mem1 = mem1 - spk1
        z = nn.functional.avg_pool2d(nn.functional.max_pool2d(spk1, 2), 2, stride=1)
        z = torch.flatten(nn.functional.adaptive_avg_pool2d(z, 2), 1)
        mem2 = 0.95 * mem2 + self.fc(z)
        return mem2, mem1, mem2


def neurons() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return Neurons().eval(), (torch.zeros(1, 64), torch.zeros(1, 64), torch.zeros(1, 64), torch.zeros(1, 64))


def conv_snn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return ConvSNN().eval(), (torch.zeros(1, 2, 8, 8), torch.zeros(1, 8, 8, 8), torch.zeros(1, 10))


def conv_snn_exported() -> torch.export.ExportedProgram:
    module, example = conv_snn()
    return torch.export.export(module, example)


def run_eager(module: nn.Module, example: tuple[torch.Tensor, ...], x: np.ndarray) -> np.ndarray:
    """PyTorch's own step-by-step run from zero state: the output of every step."""
    state = [torch.zeros_like(s) for s in example[1:]]
    outputs = []
    with torch.no_grad():
        for step in x:
            out, *state = module(torch.from_numpy(step)[None], *state)
            outputs.append(out[0].numpy())
    return np.stack(outputs)
