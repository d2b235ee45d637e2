"""SpikingJelly frontend (activation-based API): a model of `layer.*` and `neuron.*` modules -> Graph IR of one step.

Covers `nn.Sequential` models and SpikingJelly's containers whose parts run in order (`SeqToANNContainer`,
`MultiStepContainer`, `StepModeContainer`), in single-step ("s") or multi-step ("m") mode: either way one step of
masic is one frame through every layer. Neurons: `neuron.IFNode`, `LIFNode` (decay_input true or false) and
`ParametricLIFNode`, each with a hard reset (v_reset a number) or a soft one (v_reset=None), families `sj_if` and
`sj_lif` (`masic.ir.framework_neurons`), whose spike is SpikingJelly's `(h - v_threshold) >= 0`; PLIF's decay
`sigmoid(w)` is computed by torch from the learned `w` as SpikingJelly computes it. Layers: `layer.Conv2d`, `Linear`,
`MaxPool2d`, `AvgPool2d`, `AdaptiveAvgPool2d`, `Flatten`, `BatchNorm2d` (folded), `Dropout`/`Dropout2d` (no-ops in
inference) and their torch.nn twins.

Refused with the module's path: a surrogate function that is not SpikingJelly's own or has `spiking=False` (the
forward pass is then that function, not a step), reduced neuron precision (`_neuron_precision`), and other neurons.
"""

from __future__ import annotations

import logging

import torch
from masic.frontends.errors import FrontendError
from masic.frontends.norse import TORCH_LAYERS, Builder, _adaptive, _batchnorm, _conv2d, _flatten, _linear, _pool
from masic.frontends.torch_walk import TORCH_NO_OPS, Framework, positive, tensor_value
from torch import nn

from masic.ir.graph import AttrValue

# SpikingJelly registers its CPU neuron kernels as Triton ops when it is imported; without Triton, torch logs a
# warning for each, which would precede masic's own output. Triton is never used on the CPU.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)


def _check(m: nn.Module, loc: str) -> None:
    from spikingjelly.activation_based import surrogate

    function = m.surrogate_function
    if type(function).__module__ != surrogate.__name__ or not getattr(function, "spiking", True):
        raise FrontendError(
            f"{loc}: surrogate_function {type(function).__name__} is not one of SpikingJelly's spiking surrogates, "
            "whose forward pass is the step (h - v_threshold) >= 0"
        )
    if getattr(m, "_neuron_precision", None) is not None:
        raise FrontendError(f"{loc}: reduced neuron precision is not supported (float32 only)")


def _reset(b: Builder, name: str, m: nn.Module, loc: str) -> dict[str, AttrValue]:
    """Threshold and reset: v_reset None is the soft reset (subtracting v_threshold), starting from 0."""
    hard = m.v_reset is not None
    return {
        "v_threshold": tensor_value(b, name, "v_threshold", m.v_threshold, loc),
        "v_reset": tensor_value(b, name, "v_reset", m.v_reset if hard else 0.0, loc),
        "reset": "hard" if hard else "soft",
    }


def _if(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    _check(m, loc)
    b.then(name, "sj_if", _reset(b, name, m, loc), loc)


def _lif(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    from spikingjelly.activation_based.neuron import ParametricLIFNode

    _check(m, loc)
    if isinstance(m, ParametricLIFNode):
        k, leak = torch.sigmoid(m.w.float()), "multiply"  # SpikingJelly's decay: sigmoid(w), computed by torch
    else:
        positive(loc, "tau", m.tau)
        k, leak = m.tau, "divide"
    attrs = {"k": tensor_value(b, name, "k", k, loc), **_reset(b, name, m, loc), "leak": leak}
    attrs["decay_input"] = "true" if m.decay_input else "false"
    b.then(name, "sj_lif", attrs, loc)


def framework() -> Framework:
    from spikingjelly.activation_based import layer, neuron

    converters: dict[type, object] = {
        layer.Conv2d: _conv2d,
        layer.Linear: _linear,
        layer.MaxPool2d: _pool,
        layer.AvgPool2d: _pool,
        layer.AdaptiveAvgPool2d: _adaptive,
        layer.Flatten: _flatten,
        layer.BatchNorm2d: _batchnorm,
        neuron.IFNode: _if,
        neuron.LIFNode: _lif,
        neuron.ParametricLIFNode: _lif,
    }
    containers = (layer.SeqToANNContainer, layer.MultiStepContainer, layer.StepModeContainer)
    no_ops = (*TORCH_NO_OPS, layer.Dropout, layer.Dropout2d)
    return Framework("SpikingJelly", {**TORCH_LAYERS, **converters}, no_ops, containers)


def is_spikingjelly_model(model: nn.Module) -> bool:
    """A model holding at least one SpikingJelly module."""
    return any(type(m).__module__.startswith("spikingjelly.") for m in model.modules())
