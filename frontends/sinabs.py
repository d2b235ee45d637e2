"""Sinabs frontend: an `nn.Sequential` of torch.nn layers and Sinabs layers -> Graph IR of one timestep.

Sinabs' neurons take (batch, time, ...) and run every step (`IAF`, `LIF`, `ExpLeak`), or take (batch*time, ...)
as the convs before them do (`IAFSqueeze`, `LIFSqueeze`, `ExpLeakSqueeze`); either way one step of masic is one frame.
Neurons: `IAF`, `LIF` (with or without `tau_syn`, `norm_input`, `train_alphas`) and their Squeeze twins, with
`MultiSpike` (a count of spikes, family `sinabs`), `MaxSpike(n)` (a count of at most n) or `SingleSpike`
(`sinabs_single`), `MembraneSubtract` (by the threshold or a `subtract_value`) or `MembraneReset(reset_value)`, and
`min_v_mem`; `ExpLeak` (`sinabs_leak`, whose output is its membrane). The decays `exp(-1/tau)` are computed by
torch from the module, as Sinabs computes them in every forward. Layers: `SumPool2d` (Sinabs computes it as
`avg_pool2d * (kh*kw)`, so masic does the same, an average pool then a scale: not always the exact sum of its
window), and torch.nn's layers as the other walking frontends.

Refused with the module's path: other spike or reset functions, a non-positive threshold (a count divides by it),
`ceil_mode` pooling, recurrent layers (`IAFRecurrent`, `LIFRecurrent`) and adaptive ones (`ALIF`).
"""

from __future__ import annotations

from masic.frontends.errors import FrontendError
from masic.frontends.norse import TORCH_LAYERS, Builder, _pair
from masic.frontends.torch_walk import Framework, positive, tensor_value
from torch import nn

from masic.ir.graph import AttrValue


def _membrane(b: Builder, name: str, m: nn.Module, loc: str) -> dict[str, AttrValue]:
    """Decay, input gain (1 - alpha_mem with norm_input, else 1) and min_v_mem of any Sinabs neuron."""
    alpha_mem = m.alpha_mem_calculated
    attrs = {
        "alpha_mem": tensor_value(b, name, "alpha_mem", alpha_mem, loc),
        "gain": tensor_value(b, name, "gain", 1 - alpha_mem if m.norm_input else 1.0, loc),
        "min_v": tensor_value(b, name, "min_v", m.min_v_mem if m.min_v_mem is not None else 0.0, loc),
        "clip": "min" if m.min_v_mem is not None else "none",
    }
    return attrs


def _spiking(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, MultiSpike, SingleSpike

    threshold = m.spike_threshold
    positive(loc, "spike_threshold", threshold)
    attrs = _membrane(b, name, m, loc)
    alpha_syn = m.alpha_syn_calculated
    attrs["synapse"] = "none" if alpha_syn is None else "exponential"
    attrs["alpha_syn"] = tensor_value(b, name, "alpha_syn", 1.0 if alpha_syn is None else alpha_syn, loc)
    attrs["threshold"] = tensor_value(b, name, "threshold", threshold, loc)
    reset = m.reset_fn
    if isinstance(reset, MembraneSubtract):
        subtract = threshold if reset.subtract_value is None else reset.subtract_value
        attrs |= {"reset": "subtract", "subtract": tensor_value(b, name, "subtract", subtract, loc), "reset_value": 0.0}
    elif isinstance(reset, MembraneReset):
        value = tensor_value(b, name, "reset_value", reset.reset_value, loc)
        attrs |= {"reset": "to_value", "reset_value": value, "subtract": 0.0}
    else:
        raise FrontendError(f"{loc}: reset_fn {type(reset).__name__} is not supported")
    spike_fn = m.spike_fn
    if spike_fn is SingleSpike:
        b.then(name, "sinabs_single", attrs, loc)
    elif spike_fn is MultiSpike or isinstance(spike_fn, MaxSpike):
        bound = getattr(spike_fn, "max_num_spikes_per_bin", None)
        attrs["spikes"] = "multi" if bound is None else "max"
        attrs["max_spikes"] = tensor_value(b, name, "max_spikes", 0.0 if bound is None else bound, loc)
        b.then(name, "sinabs", attrs, loc)
    else:
        raise FrontendError(f"{loc}: spike_fn {getattr(spike_fn, '__name__', spike_fn)} is not supported")


def _leak(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    b.then(name, "sinabs_leak", _membrane(b, name, m, loc), loc)


def _sum_pool(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    """LPPool2d of norm 1, as torch computes it: avg_pool2d (no padding), times kh*kw (then sign*relu(abs), and a
    power of 1, both exact)."""
    if m.ceil_mode:
        raise FrontendError(f"{loc}: ceil_mode=True is not supported")
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride) if m.stride is not None else kernel
    b.then(f"{name}.average", "avgpool2d", {"kernel": kernel, "stride": stride, "padding": (0, 0)}, loc)
    b.then(name, "scale", {"factor": float(kernel[0] * kernel[1])}, loc)


def framework() -> Framework:
    import sinabs.layers as sl

    converters: dict[type, object] = {
        sl.IAF: _spiking,
        sl.IAFSqueeze: _spiking,
        sl.LIF: _spiking,
        sl.LIFSqueeze: _spiking,
        sl.ExpLeak: _leak,
        sl.ExpLeakSqueeze: _leak,
        sl.SumPool2d: _sum_pool,
    }
    return Framework("Sinabs", {**TORCH_LAYERS, **converters})


def is_sinabs_model(model: nn.Module) -> bool:
    """A model holding at least one Sinabs layer."""
    return any(type(m).__module__.startswith("sinabs.") for m in model.modules())
