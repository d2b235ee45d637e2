"""Norse / PyTorch frontend: a `norse.torch.SequentialState` model -> Graph IR of one timestep.

Models come from a file written by `torch.save(model)` or from a `package.module:factory` spec. Files are read by
torch's weights-only unpickler with an allowlist of exactly the classes this frontend supports, so a hostile file
cannot run code; `trust_pickle=True` (CLI `--trust-pickle`) lifts the allowlist for files the user trusts, at the
cost of running whatever code the pickle names. Norse 1.1.0 pickles its parameter tuples under
`norse.torch.utils.pytree` where they do not exist (norse issue #414); `install_pickle_aliases` puts them there so
both saving and loading work.

Neuron coefficients are computed exactly as Norse computes them (`dt * p.tau_mem_inv` with the same Python/torch
operand types) and rounded to float32 once, so the IR's neuron updates match Norse bit-for-bit.
"""

from __future__ import annotations

import importlib
import re
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from masic.frontends.errors import FrontendError
from torch import nn

from masic.ir.graph import AttrValue, Graph, Node, ParamRef, TensorType
from masic.ir.ops import OPS, ShapeError

_PARAMETER_CLASSES = ("LIFParameters", "LIFBoxParameters", "LIParameters", "LIBoxParameters", "IAFParameters")


def install_pickle_aliases() -> None:
    """Works around norse issue #414: parameter tuples pickle under a module path that lacks them."""
    import norse.torch as norse_torch
    import norse.torch.utils.pytree as pytree

    for name in _PARAMETER_CLASSES:
        setattr(pytree, name, getattr(norse_torch, name))


def _allowed_globals() -> list[object]:
    """What a saved SequentialState of supported layers may name, and nothing else."""
    import norse.torch as nt
    import norse.torch.functional as nf
    from norse.torch.functional import reset

    modules = [nt.SequentialState, nt.LIFCell, nt.LIFBoxCell, nt.LICell, nt.LIBoxCell, nt.IAFCell]
    torch_modules = [nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout, nn.BatchNorm2d]
    steps = [
        nf.lif.lif_feed_forward_step,
        nf.lif.lif_feed_forward_step_sparse,
        nf.lif_box.lif_box_feed_forward_step,
        nf.leaky_integrator.li_feed_forward_step,
        nf.leaky_integrator_box.li_box_feed_forward_step,
        nf.iaf.iaf_feed_forward_step,
        reset.reset_value,
        reset.reset_subtract,
    ]
    parameters = [getattr(nt, name) for name in _PARAMETER_CLASSES]
    # getattr rebuilds bound methods (each cell's initial_state); the unpickler still refuses to call anything
    # outside this list.
    return [*modules, *torch_modules, *steps, *parameters, getattr]


def load_model(spec: str, trust_pickle: bool = False) -> nn.Module:
    """Loads `path.pt` (a torch.save archive) or calls `package.module:factory`."""
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec) and not Path(spec).exists():
        return _call_factory(spec)
    path = Path(spec)
    if not path.is_file():
        raise FrontendError(f"model file {spec} does not exist (or give package.module:factory)")
    if not zipfile.is_zipfile(path):
        raise FrontendError(f"{spec} is not a PyTorch archive (expected a file written by torch.save)")
    install_pickle_aliases()
    try:
        if trust_pickle:
            model = torch.load(path, weights_only=False, map_location="cpu")
        else:
            with torch.serialization.safe_globals(_allowed_globals()):
                model = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise FrontendError(
                f"{spec} names {found[1]}, which masic's safe loader does not allow; if you trust this file, "
                "add --trust-pickle (loading it then runs code from the file)"
            ) from None
        raise FrontendError(f"cannot read {spec}: {str(err).splitlines()[0]}") from None
    if not isinstance(model, nn.Module):
        raise FrontendError(f"{spec} holds a {type(model).__name__}, not a model (save the module, not its state_dict)")
    return model


def _call_factory(spec: str) -> nn.Module:
    module_name, factory_name = spec.split(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise FrontendError(f"cannot import {module_name} for {spec}: {err}") from None
    finally:
        sys.path.pop(0)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise FrontendError(f"{spec}: {module_name} has no callable {factory_name}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise FrontendError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


class _Builder:
    """Appends typed nodes, tracking the current value and the model path each came from."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.nodes: list[Node] = [Node("input", "input", type=TensorType(input_shape), loc="model input")]
        self.weights: dict[str, np.ndarray] = {}
        self.current = self.nodes[0]

    def param(self, name: str, tensor: torch.Tensor | np.ndarray) -> ParamRef:
        array = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else tensor
        self.weights[name] = np.ascontiguousarray(array, dtype=np.float32)
        return ParamRef(name)

    def add(self, name: str, op: str, attrs: dict[str, AttrValue], loc: str) -> None:
        node = Node(name, op, (self.current.name,), tuple((k, v) for k, v in attrs.items() if v is not None), loc=loc)
        try:
            node_type = OPS[op].infer(node, (self.current.type,))
        except ShapeError as err:
            raise FrontendError(f"{loc}: {err}") from None
        self.current = Node(node.name, node.op, node.inputs, node.attrs, node_type, loc)
        self.nodes.append(self.current)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv2d(b: _Builder, name: str, m: nn.Conv2d, loc: str) -> None:
    if m.padding_mode != "zeros":
        raise FrontendError(f"{loc}: padding_mode={m.padding_mode!r} is not supported (only 'zeros')")
    kernel, dilation = _pair(m.kernel_size), _pair(m.dilation)
    padding = m.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        if any(t % 2 for t in total):
            raise FrontendError(f"{loc}: padding='same' with an even kernel pads asymmetrically; not supported")
        padding = (total[0] // 2, total[1] // 2)
    attrs = {
        "weight": b.param(f"{name}.weight", m.weight),
        "bias": b.param(f"{name}.bias", m.bias) if m.bias is not None else None,
        "out_channels": m.out_channels,
        "kernel": kernel,
        "stride": _pair(m.stride),
        "padding": _pair(padding),
        "dilation": dilation,
        "groups": m.groups,
    }
    b.add(name, "conv2d", attrs, loc)


def _linear(b: _Builder, name: str, m: nn.Linear, loc: str) -> None:
    if b.current.type is not None and len(b.current.type.shape) != 1:
        raise FrontendError(f"{loc}: Linear after a {b.current.type} value; add nn.Flatten() before it")
    attrs = {
        "weight": b.param(f"{name}.weight", m.weight),
        "bias": b.param(f"{name}.bias", m.bias) if m.bias is not None else None,
        "in_features": m.in_features,
        "out_features": m.out_features,
    }
    b.add(name, "dense", attrs, loc)


def _pool(b: _Builder, name: str, m: nn.MaxPool2d | nn.AvgPool2d, loc: str) -> None:
    if m.ceil_mode:
        raise FrontendError(f"{loc}: ceil_mode=True is not supported")
    if isinstance(m, nn.MaxPool2d) and (_pair(m.dilation) != (1, 1) or m.return_indices):
        raise FrontendError(f"{loc}: MaxPool2d with dilation or return_indices is not supported")
    if isinstance(m, nn.AvgPool2d) and (not m.count_include_pad or m.divisor_override is not None):
        raise FrontendError(f"{loc}: AvgPool2d needs count_include_pad=True and no divisor_override")
    kernel = _pair(m.kernel_size)
    attrs = {"kernel": kernel, "stride": _pair(m.stride or kernel), "padding": _pair(m.padding)}
    b.add(name, "maxpool2d" if isinstance(m, nn.MaxPool2d) else "avgpool2d", attrs, loc)


def _flatten(b: _Builder, name: str, m: nn.Flatten, loc: str) -> None:
    ndim = len(b.current.type.shape) + 1  # with the batch dimension
    if m.start_dim % ndim != 1 or m.end_dim % ndim != ndim - 1:
        raise FrontendError(f"{loc}: only Flatten over all non-batch dimensions is supported")
    b.add(name, "flatten", {}, loc)


def _batchnorm(b: _Builder, name: str, m: nn.BatchNorm2d, loc: str) -> None:
    if m.running_mean is None:
        raise FrontendError(f"{loc}: BatchNorm2d without running statistics cannot be folded")
    attrs = {
        "mean": b.param(f"{name}.mean", m.running_mean),
        "var": b.param(f"{name}.var", m.running_var),
        "eps": float(m.eps),
        "gamma": b.param(f"{name}.gamma", m.weight) if m.weight is not None else None,
        "beta": b.param(f"{name}.beta", m.bias) if m.bias is not None else None,
    }
    b.add(name, "batchnorm2d", attrs, loc)


def _neuron_value(b: _Builder, name: str, key: str, value: torch.Tensor | float, loc: str) -> AttrValue:
    """A float attribute for a scalar, or a per-neuron parameter broadcast to the neuron shape."""
    array = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value, dtype=np.float32)
    if array.size == 1:
        return float(array.reshape(()))
    shape = b.current.type.shape
    try:
        return b.param(f"{name}.{key}", np.broadcast_to(array, shape))
    except ValueError:
        raise FrontendError(f"{loc}: parameter {key} of shape {array.shape} does not fit neurons {shape}") from None


def _neuron(b: _Builder, name: str, m: nn.Module, loc: str) -> None:
    import norse.torch as nt
    from norse.torch.functional import reset

    p, dt = m.p, m.dt

    def value(key: str, raw: torch.Tensor | float) -> AttrValue:
        return _neuron_value(b, name, key, raw, loc)

    # The products below are evaluated with Norse's own operand types and order, then rounded to float32.
    attrs: dict[str, AttrValue]
    if isinstance(m, nt.LIFCell | nt.LICell):
        attrs = {"dt_tau_mem": value("dt_tau_mem", dt * p.tau_mem_inv)}
        attrs["neg_dt_tau_syn"] = value("neg_dt_tau_syn", -dt * p.tau_syn_inv)
        attrs["v_leak"] = value("v_leak", p.v_leak)
        if isinstance(m, nt.LIFCell):
            attrs |= {"v_th": value("v_th", p.v_th), "v_reset": value("v_reset", p.v_reset)}
        op = "lif" if isinstance(m, nt.LIFCell) else "li"
    elif isinstance(m, nt.LIFBoxCell):
        if p.reset_method not in (reset.reset_value, reset.reset_subtract):
            raise FrontendError(f"{loc}: LIFBoxCell with a custom reset_method is not supported")
        attrs = {"dt_tau_mem": value("dt_tau_mem", dt * p.tau_mem_inv), "v_leak": value("v_leak", p.v_leak)}
        attrs |= {"v_th": value("v_th", p.v_th), "v_reset": value("v_reset", p.v_reset)}
        attrs["reset"] = "subtract" if p.reset_method is reset.reset_subtract else "value"
        op = "lif_box"
    elif isinstance(m, nt.LIBoxCell):
        attrs = {"dt_tau_mem": value("dt_tau_mem", dt * p.tau_mem_inv), "v_leak": value("v_leak", p.v_leak)}
        op = "li_box"
    else:
        attrs = {"v_th": value("v_th", p.v_th), "v_reset": value("v_reset", p.v_reset)}
        op = "iaf"
    b.add(name, op, attrs, loc)


def _converters() -> dict[type, Callable[[_Builder, str, nn.Module, str], None]]:
    import norse.torch as nt

    neurons = dict.fromkeys((nt.LIFCell, nt.LIFBoxCell, nt.LICell, nt.LIBoxCell, nt.IAFCell), _neuron)
    return {
        nn.Conv2d: _conv2d,
        nn.Linear: _linear,
        nn.MaxPool2d: _pool,
        nn.AvgPool2d: _pool,
        nn.Flatten: _flatten,
        nn.BatchNorm2d: _batchnorm,
        **neurons,
    }


_SKIPPED = (nn.Dropout, nn.Identity)  # no-ops in evaluation mode


def _implied_input_shape(layers: Iterable[tuple[str, nn.Module]]) -> tuple[int, ...] | None:
    for _, layer in layers:
        if isinstance(layer, nn.Linear):
            return (layer.in_features,)
        if not isinstance(layer, _SKIPPED):
            return None
    return None


def import_norse(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, timesteps: int = 16, name: str = "model"
) -> Graph:
    """Lowers a SequentialState model to the IR. `input_shape` is per sample (no batch)."""
    import norse.torch as nt

    if not isinstance(model, nt.SequentialState):
        raise FrontendError(
            f"model is a {type(model).__module__}.{type(model).__qualname__}; this frontend reads "
            "norse.torch.SequentialState models"
        )
    model.eval()
    layers = list(model.named_children())
    shape = input_shape or _implied_input_shape(layers)
    if shape is None:
        first = next(((n, type(m).__name__) for n, m in layers if not isinstance(m, _SKIPPED)), ("?", "?"))
        raise FrontendError(
            f"the model starts with {first[1]} (model.{first[0]}), whose input size is not implied; "
            "pass --input-shape, e.g. --input-shape 1,28,28"
        )
    builder = _Builder(tuple(shape))
    converters = _converters()
    for child_name, layer in layers:
        loc = f"model.{child_name} ({type(layer).__name__})"
        if isinstance(layer, _SKIPPED):
            continue
        convert = converters.get(type(layer))
        if convert is None:
            raise FrontendError(f"unsupported module {loc}: {type(layer).__module__}.{type(layer).__qualname__}")
        convert(builder, re.sub(r"[^A-Za-z0-9_]", "_", child_name), layer, loc)
    graph = Graph(name=name, nodes=(), output=builder.current.name, timesteps=timesteps)
    return graph.with_params(builder.weights).with_nodes(builder.nodes)
