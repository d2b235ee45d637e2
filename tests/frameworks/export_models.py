"""Steps of the user's own forward code, read by the torch.export frontend: snnTorch neurons stepped with explicit
state, state kept in buffers updated in place (with the element-wise ops such steps use: division, comparisons,
clamps, maxima), and runtime tensors broadcast against each other; each a `Case` (tests/frameworks/cases.py) run by
PyTorch itself."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import snntorch as snn
import torch
from masic.frontends.export import export_module, import_export
from torch import nn

from masic.ir.graph import Graph
from tests.frameworks.cases import Case, Trace, quantised


class ExplicitState(nn.Module):
    """snnTorch's tutorial step: neurons called with the state the caller keeps (learnable per-neuron beta, clamped
    by snnTorch; a beta above 1)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 24)
        self.lif1 = snn.Leaky(beta=torch.linspace(0.5, 1.1, 24), learn_beta=True, reset_mechanism="zero")
        self.lif2 = snn.Synaptic(alpha=0.8, beta=1.2, threshold=0.5)
        self.example = (torch.zeros(1, 16), torch.zeros(1, 24), torch.zeros(1, 24), torch.zeros(1, 24))

    def forward(self, x: torch.Tensor, mem1: torch.Tensor, syn2: torch.Tensor, mem2: torch.Tensor) -> tuple:
        spk1, mem1 = self.lif1(self.fc1(x), mem1)
        spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
        return spk2, mem1, syn2, mem2


class BufferedState(nn.Module):
    """State in a buffer updated in place; a per-neuron time constant divides, comparisons, clamps and a maximum."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.fc = nn.Linear(16, 24)
        self.register_buffer("mem", torch.zeros(1, 24))
        self.register_buffer("tau", torch.linspace(1.5, 4.0, 24))
        self.example = (torch.zeros(1, 16),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mem.add_((self.fc(x) - self.mem) / self.tau)
        spk = (self.mem >= 1.0).float()
        self.mem.copy_(torch.where(spk > 0, torch.zeros_like(self.mem), self.mem).clamp(-1.0, 2.0))
        quiet = (self.mem <= 0.0625).float() * torch.eq(spk, 0.0).float()
        return torch.maximum(spk, quiet * 0.5) - torch.minimum(self.mem, torch.zeros_like(self.mem)).clamp_min(-0.5)


class Broadcast(nn.Module):
    """A per-channel threshold computed at run time, (1, C, 1, 1), against a (1, C, H, W) membrane."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gate = nn.Linear(36, 4)
        self.example = (torch.zeros(1, 1, 6, 6), torch.zeros(1, 4, 6, 6))

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        threshold = (self.gate(x.flatten(1)).clamp(0.25, 2.0) / 2.0)[:, :, None, None]
        mem = 0.875 * mem + self.conv(x)
        spk = (mem > threshold).float()
        return spk, mem - spk * threshold


def import_step(model: nn.Module, shape: tuple[int, ...], steps: int) -> Graph:
    return import_export(export_module(model, model.example, type(model).__name__), shape, steps)


def run(membrane: Callable[[nn.Module, tuple], torch.Tensor]) -> Callable[[nn.Module, np.ndarray], Trace]:
    """PyTorch's own run from zero state: the output and, by `membrane(module, returned)`, the membrane."""

    def run_step(model: nn.Module, x: np.ndarray) -> Trace:
        for buffer in ("mem",):
            if hasattr(model, buffer):
                getattr(model, buffer).zero_()
        state = [torch.zeros_like(s) for s in model.example[1:]]
        outputs, membranes = [], []
        with torch.no_grad():
            for step in x:
                returned = model(torch.from_numpy(step)[None], *state)
                returned = returned if isinstance(returned, tuple) else (returned,)
                state = list(returned[1:])
                outputs.append(returned[0][0].numpy().copy())
                membranes.append(membrane(model, returned)[0].numpy().copy())
        return Trace(np.stack(outputs), np.stack(membranes))

    return run_step


def _case(name: str, make: Callable[[], nn.Module], shape: tuple[int, ...], membrane: str, read: Callable) -> Case:
    return Case("torch.export", name, lambda: quantised(make()), shape, run(read), membrane, importer=import_step)


CASES = [
    _case("snntorch_explicit_state", ExplicitState, (16,), "mem2", lambda m, r: r[3]),
    _case("buffered_state", BufferedState, (16,), "b_mem", lambda m, r: m.mem),
    _case("runtime_broadcast", Broadcast, (1, 6, 6), "mem", lambda m, r: r[1]),
]
