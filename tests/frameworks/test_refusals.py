"""Every construct the snnTorch, SpikingJelly, Sinabs and Norse frontends (Norse's beyond its feed-forward cells:
tests/frontends has those) and the export frontend refuse: one line that names its place in the model (module path
or source line) and the cause; through `masic compile`, exit status 2."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import masic.frontends.spikingjelly  # noqa: F401  (quiets torch's Triton warnings before SpikingJelly loads)
import norse.torch as nt
import pytest
import sinabs.layers as sl
import snntorch as snn
import torch
from masic.frontends.dispatch import ImportOptions, import_model
from masic.frontends.errors import FrontendError
from masic.frontends.export import export_module, import_export
from masic.frontends.frameworks import import_framework_model
from masic.frontends.norse import import_norse
from norse.torch import SequentialState
from sinabs.activation import MembraneReset, SingleSpike
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

from tests.artifacts import masic_cli


def _dense(make_neuron: Callable[[], nn.Module], after: tuple[nn.Module, ...] = ()) -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 4), make_neuron(), *after)


class _OwnForward(nn.Module):
    """A module of the user's own holding snnTorch neurons: its forward is code masic does not walk."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.lif = nn.Linear(4, 4), snn.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.fc(x))[0]


def _lsnn_with_lif_step() -> SequentialState:
    """A Norse cell whose activation is not its own step (a pickle can set any allowed function there)."""
    cell = nt.LSNNCell()
    cell.activation = nt.functional.lif.lif_feed_forward_step
    return SequentialState(nn.Linear(4, 4), cell)


class _NotASpike:
    """A Sinabs spike function of the user's own."""

    required_states = ("v_mem",)

    @staticmethod
    def apply(v_mem: torch.Tensor, threshold: torch.Tensor, grad: object) -> torch.Tensor:
        return (v_mem > threshold).float()


def _custom_reset(spikes: torch.Tensor, state: dict, threshold: torch.Tensor) -> dict:
    return state


WALKED = {
    "inhibition": (
        lambda: _dense(lambda: snn.Leaky(beta=0.9, inhibition=True, init_hidden=True)),
        r"model\.1 \(Leaky\): inhibition is not supported",
    ),
    "state_quant": (
        lambda: _dense(lambda: snn.Synaptic(alpha=0.5, beta=0.9, state_quant=torch.round, init_hidden=True)),
        r"model\.1 \(Synaptic\): state_quant is not supported",
    ),
    "reset_delay": (
        lambda: _dense(lambda: snn.Leaky(beta=0.9, reset_delay=False, init_hidden=True)),
        r"model\.1 \(Leaky\): reset_delay=False is not supported",
    ),
    "graded_spikes": (
        lambda: _dense(lambda: snn.Leaky(beta=0.9, graded_spikes_factor=2.0, init_hidden=True)),
        r"model\.1 \(Leaky\): graded_spikes_factor other than 1",
    ),
    "own_spike_grad": (
        lambda: _dense(lambda: snn.Leaky(beta=0.9, spike_grad=lambda x: (x > 0).float(), init_hidden=True)),
        r"model\.1 \(Leaky\): spike_grad tests\.frameworks\.test_refusals\.<lambda> is not one of snntorch\.surrogate's",
    ),
    "snntorch_lstm": (
        lambda: _dense(lambda: snn.SLSTM(4, 4, init_hidden=True)),
        r"unsupported module model\.1 \(SLSTM\): snntorch\._neurons\.slstm\.SLSTM",
    ),
    "own_forward": (
        lambda: nn.Sequential(_OwnForward()),
        r"unsupported module model\.0 \(_OwnForward\): .*forward code of its own: compile it with torch\.export",
    ),
    "layer": (
        lambda: _dense(lambda: snn.Leaky(beta=0.9, init_hidden=True), (nn.Tanh(),)),
        r"unsupported module model\.2 \(Tanh\): torch\.nn\.modules\.activation\.Tanh",
    ),
    "mixed": (
        lambda: _dense(lambda: snn.Leaky(beta=0.9, init_hidden=True), (sl.IAF(),)),
        r"the model mixes modules of Sinabs and snnTorch",
    ),
    "non_spiking_surrogate": (
        lambda: _dense(lambda: neuron.IFNode(surrogate_function=surrogate.Sigmoid(spiking=False))),
        r"model\.1 \(IFNode\): surrogate_function Sigmoid is not one of SpikingJelly's spiking surrogates",
    ),
    "spikingjelly_neuron": (
        lambda: _dense(lambda: neuron.QIFNode()),
        r"unsupported module model\.1 \(QIFNode\)",
    ),
    "spikingjelly_container": (
        lambda: nn.Sequential(layer.TLastSeqToANNContainer(nn.Linear(4, 4)), neuron.IFNode()),
        r"unsupported module model\.0 \(TLastSeqToANNContainer\)",
    ),
    "own_spike_fn": (
        lambda: _dense(lambda: sl.IAF(spike_fn=_NotASpike)),
        r"model\.1 \(IAF\): spike_fn _NotASpike is not supported",
    ),
    "own_reset_fn": (
        lambda: _dense(lambda: sl.IAF(spike_fn=SingleSpike, reset_fn=_custom_reset)),
        r"model\.1 \(IAF\): reset_fn function is not supported",
    ),
    "zero_threshold": (
        lambda: _dense(lambda: sl.LIF(tau_mem=2.0, spike_threshold=torch.tensor(0.0), reset_fn=MembraneReset())),
        r"model\.1 \(LIF\): spike_threshold 0 is not positive and finite",
    ),
    "sum_pool_ceil": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), sl.IAFSqueeze(batch_size=1), sl.SumPool2d(2, ceil_mode=True)),
        r"model\.2 \(SumPool2d\): ceil_mode=True is not supported",
    ),
    "sinabs_recurrent": (
        lambda: _dense(lambda: sl.IAFRecurrent(rec_connect=nn.Linear(4, 4))),
        r"unsupported module model\.1 \(IAFRecurrent\)",
    ),
    "norse_adex_refrac": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LIFAdExRefracCell()),
        r"unsupported module model\.1 \(LIFAdExRefracCell\): norse\.torch\.module\.lif_adex_refrac\.LIFAdExRefracCell",
    ),
    "norse_multicompartment": (
        lambda: SequentialState(nt.LIFRecurrentCell(4, 4), nt.LIFMCRecurrentCell(4, 4)),
        r"unsupported module model\.1 \(LIFMCRecurrentCell\)",
    ),
    "norse_activation": (
        _lsnn_with_lif_step,
        r"model\.1 \(LSNNCell\): its activation norse\.torch\.functional\.lif\.lif_feed_forward_step is not "
        r"lsnn_feed_forward_step",
    ),
    "norse_tau_adapt": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LSNNCell(nt.LSNNParameters(tau_adapt_inv=torch.tensor(-1.0)))),
        r"model\.1 \(LSNNCell\): tau_adapt_inv -1 is not positive and finite",
    ),
    "norse_delta_T": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LIFExCell(nt.LIFExParameters(delta_T=torch.tensor(0.0)))),
        r"model\.1 \(LIFExCell\): delta_T 0 is not positive and finite",
    ),
    "norse_return_hidden": (
        lambda: SequentialState(nn.Linear(4, 4), nt.LIFCell(), return_hidden=True),
        r"model \(SequentialState\): return_hidden=True outputs every layer's value",
    ),
    "norse_output_modules": (
        lambda: nt.RecurrentSequential(nn.Linear(4, 4), nt.LIFCell(), output_modules=[0, 1]),
        r"model \(RecurrentSequential\): output_modules=\[0, 1\] outputs several layers' values",
    ),
    "norse_feedback": (
        lambda: nt.RecurrentSequential(nn.Linear(4, 6), nt.LIFCell()),
        r"model \(RecurrentSequential\): its output f32\[6\] cannot be added to its input f32\[4\]",
    ),
}


@pytest.mark.parametrize("name", WALKED)
def test_walked_models_refuse_what_they_cannot_reproduce(name: str) -> None:
    make, message = WALKED[name]
    shape = (1, 6, 6) if name == "sum_pool_ceil" else (4,)
    importer = import_norse if name.startswith("norse_") else import_framework_model
    with pytest.raises(FrontendError, match=message) as refusal:
        importer(make(), shape)
    assert "\n" not in str(refusal.value)


class _Reassigned(nn.Module):
    """State kept by assigning the buffer a new tensor (as snnTorch's init_hidden neurons do)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mem", torch.zeros(1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mem = 0.5 * self.mem + x
        return self.mem


class _Charged(nn.Module):
    """A state buffer that does not start at zero."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mem", torch.full((1, 4), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mem.mul_(0.5).add_(x)
        return self.mem.clone()


class _Tanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x).clamp(0, 1)


class _Loop(nn.Module):
    """A forward that loops over time: `steps` iterations; `twice` calls one neuron twice in an iteration; `skip`
    reads the state of two steps before; `counted` scales its input by the step's index."""

    def __init__(self, steps: int = 4, twice: bool = False, skip: bool = False, counted: bool = False) -> None:
        super().__init__()
        self.fc, self.lif = nn.Linear(4, 4), snn.Leaky(beta=0.9)
        self.steps, self.twice, self.skip, self.counted = steps, twice, skip, counted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem, older, out = torch.zeros(1, 4), torch.zeros(1, 4), []
        for step in range(self.steps):
            spk, new = self.lif(self.fc(x) * (step if self.counted else 1) + (older if self.skip else 0), mem)
            if self.twice:
                spk, new = self.lif(spk, new)
            older, mem = mem, new
            out.append(spk)
        return torch.stack(out)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (_Loop(steps=2), r"the forward's loop runs 2 steps; export it with at least 3"),
        (_Loop(twice=True), r"the forward's loop is no repetition of one step that calls each submodule once"),
        (_Loop(skip=True), r"step 2 of the forward's loop reads %\w+ of an earlier step than the last"),
        (_Loop(counted=True), r"two iterations of the forward's loop differ \(in their ops, or in a constant such as"),
        (_Reassigned(), r"forward reads buffer mem and assigns it a new tensor, which torch\.export does not record"),
        (_Charged(), r"buffer mem is updated in place as a state but starts at 0\.5; masic's states start at zero"),
        (_Tanh(), r"unsupported op aten\.tanh\.default \(%tanh\) at return torch\.tanh\(x\)\.clamp\(0, 1\)"),
    ],
    ids=[
        "short_loop",
        "loop_calls_twice",
        "loop_skips_a_step",
        "loop_counts_steps",
        "reassigned_buffer",
        "charged_buffer",
        "unsupported_op",
    ],
)
def test_exported_programs_refuse_what_they_cannot_reproduce(module: nn.Module, message: str) -> None:
    with pytest.raises(FrontendError, match=message) as refusal:
        import_export(export_module(module, (torch.zeros(1, 4),), "test"))
    assert "\n" not in str(refusal.value)


def test_the_command_line_refuses_in_one_line_with_status_2(tmp_path: Path) -> None:
    """One refusal per frontend through `masic compile`: a factory's module path, a saved file's module path, and
    an exported step's source line."""
    (tmp_path / "refused.py").write_text(
        "import torch, snntorch as snn\n"
        "def leaky():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 4), snn.Leaky(beta=0.9, reset_delay=False, init_hidden=True))\n"
        "class Step(torch.nn.Module):\n"
        "    def forward(self, x, mem):\n"
        "        mem = torch.tanh(mem) + x\n"
        "        return mem, mem\n"
        "def step():\n"
        "    return Step(), (torch.zeros(1, 4), torch.zeros(1, 4))\n"
        "def norse():\n"
        "    import norse.torch as nt\n"
        "    return nt.SequentialState(torch.nn.Linear(4, 4), nt.LIFAdExRefracCell())\n"
    )
    torch.save(_dense(lambda: sl.IAF(spike_fn=_NotASpike)), tmp_path / "sinabs.pt")
    expected = {
        "refused:leaky": r"refused:leaky: model\.1 \(Leaky\): reset_delay=False is not supported",
        "refused:norse": r"refused:norse: unsupported module model\.1 \(LIFAdExRefracCell\)",
        "refused:step": r"unsupported op aten\.tanh\.default \(%tanh\) at mem = torch\.tanh\(mem\) \+ x",
        str(tmp_path / "sinabs.pt"): r"names tests\.frameworks\.test_refusals\._NotASpike, which masic's safe loader",
    }
    for spec, message in expected.items():
        result = masic_cli("compile", spec, "--emit", "ir", cwd=tmp_path)
        error = result.stderr.strip().splitlines()[-1]  # after the progress line "masic: importing ..."
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert error.startswith("masic: error: ") and re.search(message, error), error


def test_a_saved_model_of_trusted_code_still_names_the_unsupported_module(tmp_path: Path) -> None:
    torch.save(_dense(lambda: sl.IAF(spike_fn=_NotASpike)), tmp_path / "sinabs.pt")
    with pytest.raises(FrontendError, match=r"model\.1 \(IAF\): spike_fn _NotASpike is not supported"):
        import_model(str(tmp_path / "sinabs.pt"), ImportOptions(trust_pickle=True))
