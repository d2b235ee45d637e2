"""snnTorch frontend: an `nn.Sequential` of torch.nn layers and snnTorch neurons -> Graph IR of one timestep.

The model snnTorch's tutorials build with `init_hidden=True` neurons (each keeps its state, and the last one may
return `(spk, mem)` with `output=True`; its spikes are the model's output). Neurons: `Leaky`, `Synaptic`,
`Lapicque` (families `snn_leaky`, `snn_synaptic`, `snn_lapicque`), `Alpha`, `RLeaky` and `RSynaptic` (recurrent
through a Linear (`linear_features`), a Conv2d (`conv2d_channels`, `kernel_size`) or one-to-one (`all_to_all=False`,
weight V)), the last three emitted as element-wise IR ops (`masic.frontends.arith_ir`); every reset mechanism
("subtract", "zero", "none"); fixed or learnable beta, alpha and threshold, scalars or per neuron. Each decay is
clamped to [0, 1] with snnTorch's own `clamp(0, 1)` and every coefficient snnTorch derives (Lapicque's 1/(R*C),
Alpha's tau_alpha) is computed by the same torch expression, then rounded to float32, so the updates
(`masic.ir.framework_neurons`) match snnTorch bit for bit. Layers: torch.nn's Conv2d, Linear, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d, Flatten, ReLU, Dropout and Identity (no-ops), BatchNorm2d (folded into the conv before it).

Refused with the neuron's path: `inhibition`, `state_quant`, `reset_delay=False`, a `graded_spikes_factor` other
than 1, a `spike_grad` that is not one of snntorch.surrogate's (their forward is the Heaviside step; another
function's is unknown), and the neurons not listed (SLSTM, SConv2dLSTM, the parallel and delta variants).
Models whose forward is code of the user's own, stepping neurons with explicit state (`spk, mem = self.lif(cur,
mem)`) or looping over time as the tutorials do, go through the torch.export frontend (`masic.frontends.unroll`).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from masic.frontends.arith_ir import IRBackend, emit_update
from masic.frontends.errors import FrontendError
from masic.frontends.norse import TORCH_LAYERS, Builder, _conv2d, dense
from masic.frontends.torch_walk import Converter, Framework, tensor_value
from torch import nn

from masic.ir.arith import Num
from masic.ir.framework_neurons import alpha_update, leaky_charge, snntorch_fires, synaptic_charge


def _check(m: nn.Module, loc: str) -> None:
    """What one step of masic cannot reproduce, or whose forward masic does not know."""
    import snntorch.surrogate

    for option in ("inhibition", "state_quant"):
        if getattr(m, option, False):
            raise FrontendError(f"{loc}: {option} is not supported")
    if not getattr(m, "reset_delay", True):
        raise FrontendError(f"{loc}: reset_delay=False is not supported (snnTorch's default, True, is)")
    factor = getattr(m, "graded_spikes_factor", None)
    if factor is not None and not bool(torch.all(factor == 1.0)):
        raise FrontendError(f"{loc}: graded_spikes_factor other than 1 is not supported")
    grad = m.spike_grad
    known = getattr(grad, "__module__", None) == snntorch.surrogate.__name__ or grad == m._surrogate_bypass
    if not known:
        raise FrontendError(
            f"{loc}: spike_grad {getattr(grad, '__module__', '')}.{getattr(grad, '__name__', type(grad).__name__)} "
            "is not one of snntorch.surrogate's, whose forward pass masic knows"
        )


def _clamped(value: torch.Tensor) -> torch.Tensor:
    return value.clamp(0, 1)  # as snnTorch clamps its decays in every step


def _decaying(op: str, decays: tuple[str, ...]) -> Converter:
    """Leaky (beta) and Synaptic (alpha, beta): each decay clamped, the threshold and the reset mechanism."""

    def convert(b: Builder, name: str, m: nn.Module, loc: str) -> None:
        _check(m, loc)
        attrs = {key: tensor_value(b, name, key, _clamped(getattr(m, key)), loc) for key in decays}
        attrs |= {"threshold": tensor_value(b, name, "threshold", m.threshold, loc), "reset": m.reset_mechanism}
        b.then(name, op, attrs, loc)

    return convert


def _lapicque(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    _check(m, loc)
    rc = m.R * m.C  # Lapicque's own expressions: x*R*(1/(R*C))*time_step + (1 - time_step/(R*C))*mem
    attrs = {
        "r": tensor_value(b, name, "r", m.R, loc),
        "inv_rc": tensor_value(b, name, "inv_rc", 1 / rc, loc),
        "time_step": tensor_value(b, name, "time_step", m.time_step, loc),
        "decay": tensor_value(b, name, "decay", 1 - m.time_step / rc, loc),
        "threshold": tensor_value(b, name, "threshold", m.threshold, loc),
        "reset": m.reset_mechanism,
    }
    b.then(name, "snn_lapicque", attrs, loc)


def _array(value: torch.Tensor | float) -> object:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _alpha(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    _check(m, loc)
    alpha, beta = _clamped(m.alpha), _clamped(m.beta)
    tau_alpha = torch.log(alpha) / (torch.log(beta) - torch.log(alpha)) + 1  # Alpha's own expression
    params = {"alpha": alpha, "beta": beta, "tau_alpha": tau_alpha, "threshold": m.threshold}
    x = b.current

    def update(backend: IRBackend, s: SimpleNamespace, p: SimpleNamespace) -> dict[str, Num]:
        return alpha_update(Num(backend, x), s, p, m.reset_mechanism)

    states = ("mem", "syn_exc", "syn_inh")
    values = emit_update(b, name, loc, b.shape, states, {k: _array(v) for k, v in params.items()}, update)
    b.current = values["z"]


def _recurrent(b: Builder, name: str, m: nn.Module, spikes: str, loc: str) -> str:
    """The recurrent input `m.recurrent(spk)` of RLeaky / RSynaptic, from the previous step's spikes."""
    from snntorch._neurons.rleaky import RecurrentOneToOne as LeakyOneToOne
    from snntorch._neurons.rsynaptic import RecurrentOneToOne as SynapticOneToOne

    layer, current = m.recurrent, b.current
    b.current = spikes
    if isinstance(layer, nn.Linear):
        b.current = dense(b, f"{name}.recurrent", spikes, layer.weight, layer.bias, loc)
    elif isinstance(layer, nn.Conv2d):
        _conv2d(b, f"{name}.recurrent", layer, loc)
    elif isinstance(layer, LeakyOneToOne | SynapticOneToOne):
        weight = tensor_value(b, f"{name}.recurrent", "factor", layer.V, loc)
        b.then(f"{name}.recurrent", "scale", {"factor": weight}, loc)
    else:
        raise FrontendError(f"{loc}: recurrent layer {type(layer).__name__} is not supported")
    recurrent, b.current = b.current, current
    return recurrent


def _recurrent_neuron(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    """RLeaky / RSynaptic: the charge of Leaky / Synaptic plus the recurrent input of the last step's spikes."""
    from snntorch import RSynaptic

    _check(m, loc)
    synaptic = isinstance(m, RSynaptic)
    params = {"beta": _clamped(m.beta), "threshold": m.threshold}
    if synaptic:
        params["alpha"] = _clamped(m.alpha)
    x = b.current

    def update(backend: IRBackend, s: SimpleNamespace, p: SimpleNamespace) -> dict[str, Num]:
        recurrent = Num(backend, _recurrent(b, name, m, s.spk.value, loc))
        if synaptic:
            syn, mem = synaptic_charge(Num(backend, x), recurrent, s, p, m.reset_mechanism)
        else:
            syn, mem = None, leaky_charge(Num(backend, x), recurrent, s, p, m.reset_mechanism)
        z = snntorch_fires(mem, p.threshold)
        return {"z": z, "spk": z, "mem": mem, **({"syn": syn} if syn is not None else {})}

    states = ("spk", "mem", "syn") if synaptic else ("spk", "mem")
    values = emit_update(b, name, loc, b.shape, states, {k: _array(v) for k, v in params.items()}, update)
    b.current = values["z"]


def framework() -> Framework:
    import snntorch as snn

    neurons = {
        snn.Leaky: _decaying("snn_leaky", ("beta",)),
        snn.Synaptic: _decaying("snn_synaptic", ("alpha", "beta")),
        snn.Lapicque: _lapicque,
        snn.Alpha: _alpha,
        snn.RLeaky: _recurrent_neuron,
        snn.RSynaptic: _recurrent_neuron,
    }
    return Framework("snnTorch", {**TORCH_LAYERS, **neurons})


def is_snntorch_model(model: nn.Module) -> bool:
    """An nn.Sequential holding at least one snnTorch neuron (anywhere inside)."""
    import snntorch as snn

    return any(isinstance(m, snn.SpikingNeuron) for m in model.modules())
