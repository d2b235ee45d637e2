"""Steps of the user's own forward code, read by the torch.export frontend: snnTorch neurons stepped with explicit
state, state kept in buffers updated in place (with the element-wise ops such steps use: division, comparisons,
clamps, maxima), runtime tensors broadcast against each other, and snnTorch's tutorial network whose forward loops
over time itself; each a `Case` (tests/frameworks/cases.py) run by PyTorch itself."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import snntorch as snn
import torch
from masic.frontends.export import export_module, import_export
from torch import nn

from masic.ir.graph import Graph
from tests.frameworks.cases import STEPS, Case, Trace, quantised


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


class TutorialLoop(nn.Module):
    """snnTorch tutorial 5's network as written there: the forward loops over time on one input, its neurons'
    state made by init_leaky(); it returns the output layer's spikes and membranes (`membrane_first`: the other
    way round) stacked over the steps."""

    def __init__(self, membrane_first: bool = False) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 24)
        self.lif1, self.lif2 = snn.Leaky(beta=0.95), snn.Leaky(beta=0.9, threshold=0.5)
        self.membrane_first = membrane_first
        self.example = (torch.zeros(1, 16),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for _step in range(STEPS):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        spikes, membranes = torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)
        return (membranes, spikes) if self.membrane_first else (spikes, membranes)


class TutorialSequence(TutorialLoop):
    """The same loop over a sequence, time first: each step reads x[step]."""

    def __init__(self) -> None:
        super().__init__()
        self.example = (torch.zeros(STEPS, 1, 16),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk2_rec = []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
        return torch.stack(spk2_rec)


def run_loop(model: nn.Module, x: np.ndarray) -> Trace:
    """The module's own forward over all steps at once: on x[0] (the loop presents it at every step) or, for a
    sequence, on x."""
    with torch.no_grad():
        if isinstance(model, TutorialSequence):
            out = model(torch.from_numpy(x)[:, None])[:, 0].numpy()
        else:
            out = model(torch.from_numpy(x[0])[None])[0][:, 0].numpy()
    return Trace(out, out)


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


def _loop(name: str, make: Callable[[], nn.Module], repeat: bool = True) -> Case:
    return Case(
        "torch.export", name, lambda: quantised(make()), (16,), run_loop, None, importer=import_step, repeat=repeat
    )


CASES = [
    _case("snntorch_explicit_state", ExplicitState, (16,), "mem2", lambda m, r: r[3]),
    _case("buffered_state", BufferedState, (16,), "b_mem", lambda m, r: m.mem),
    _case("runtime_broadcast", Broadcast, (1, 6, 6), "mem", lambda m, r: r[1]),
    _loop("snntorch_tutorial_loop", TutorialLoop),
    _loop("snntorch_tutorial_membrane", lambda: TutorialLoop(membrane_first=True)),
    _loop("snntorch_tutorial_sequence", TutorialSequence, repeat=False),
]
