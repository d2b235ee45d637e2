"""Norse / PyTorch frontend: a Norse model -> Graph IR of one timestep, by walking its modules.

Covers (by module walking; every step-wise module becomes the IR of one timestep):
- `norse.torch.SequentialState` of layers and neuron cells, run on one timestep;
- `norse.torch.RecurrentSequential`: its layers on the input plus the output of one of them at the previous step;
- `torch.nn.Sequential` (and subclasses that keep its forward) of `Lift(layer)` and time-lifted neurons (`LIF`,
  `LSNN`, `LIFRecurrent`, ...), which run over a sequence: one step of them is one step of the IR;
- `norse.torch.models` (see `masic.frontends.norse_zoo`): `VGG` (vgg11..vgg19, with and without batch norm),
  `MobileNetV2`, `ConvNet`, `ConvNet4`.
Layers: `Conv2d`, `Linear`, `MaxPool2d`, `AvgPool2d`, `AdaptiveAvgPool2d`, `Flatten`, `ReLU`, `Dropout` and
`Identity` (no-ops in inference), `BatchNorm2d` (folded into the preceding conv). Neurons (`masic.frontends.
norse_cells`): the LIF, LI, IAF, LSNN, LIFEx, LIFAdEx, LIFRefrac and Izhikevich cells, feed-forward and recurrent,
and their time-lifted forms, `LILinearCell` and `CobaLIFCell`, with any parameter values (scalars or per-neuron
tensors). Anything else is refused with its path in the model.

Models come from a file written by `torch.save(model)` or from a `package.module:factory` spec. Files are read by
torch's weights-only unpickler with an allowlist of exactly the classes this frontend supports, so a hostile file
cannot run code; `trust_pickle=True` (CLI `--trust-pickle`) lifts the allowlist for files the user trusts, at the
cost of running whatever code the pickle names. Norse 1.1.0 pickles its parameter tuples under
`norse.torch.utils.pytree` where they do not exist (norse issue #414); `install_pickle_aliases` puts them there so
both saving and loading work.

Neuron coefficients are computed exactly as Norse computes them (`dt * p.tau_mem_inv` with the same Python/torch
operand types) and rounded to float32 once, so the IR's neuron updates match Norse bit-for-bit (the exponential
cells' within an ulp of torch.exp).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from masic.frontends.errors import FrontendError, first_line, well_formed
from masic.frontends.factory import call_factory, is_factory_spec
from masic.frontends.graph_builder import GraphBuilder
from masic.frontends.limits import check_archive_size
from masic.frontends.norse_cells import positive
from masic.frontends.safe_pickle import install_pickle_aliases, load_trusted, load_untrusted
from torch import nn

from masic.ir.graph import AttrValue, Graph, ParamRef, TensorType


def load_model(spec: str, trust_pickle: bool = False) -> nn.Module:
    """Loads `path.pt` (a torch.save archive) or calls `package.module:factory`."""
    if is_factory_spec(spec):
        model = call_factory(spec)
        if not isinstance(model, nn.Module):
            raise FrontendError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    path = Path(spec)
    if not path.is_file():
        raise FrontendError(f"model file {spec} does not exist (or give package.module:factory)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise FrontendError(
            f"{spec} is not a PyTorch archive (expected a file written by torch.save): {first_line(err)}"
        ) from None
    with archive:
        check_archive_size(path, archive)
    install_pickle_aliases()
    model = load_trusted(path, spec) if trust_pickle else load_untrusted(path, spec)
    if not isinstance(model, nn.Module):
        raise FrontendError(f"{spec} holds a {type(model).__name__}, not a model (save the module, not its state_dict)")
    return model


class Builder(GraphBuilder):
    """A chain of layers: each new node reads the current value (recipes may also read an earlier one)."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.current = self.add("input", "input", (), {}, "model input", TensorType(input_shape))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type_of(self.current).shape

    def param(self, name: str, value: torch.Tensor | np.ndarray) -> ParamRef:
        return super().param(name, value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)

    def then(self, name: str, op: str, attrs: dict[str, AttrValue | None], loc: str) -> str:
        """Adds a node reading the current value; it becomes the current value."""
        self.current = self.add(name, op, (self.current,), attrs, loc)
        return self.current


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv2d(b: Builder, name: str, m: nn.Conv2d, loc: str) -> None:
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
    b.then(name, "conv2d", attrs, loc)


def dense(b: Builder, name: str, x: str, weight: torch.Tensor, bias: torch.Tensor | None, loc: str) -> str:
    """y = weight @ x (+ bias), x a flat value; returns y."""
    if len(b.type_of(x).shape) != 1:
        raise FrontendError(f"{loc}: Linear after a {b.type_of(x)} value; add nn.Flatten() before it")
    attrs = {
        "weight": b.param(f"{name}.weight", weight),
        "bias": b.param(f"{name}.bias", bias) if bias is not None else None,
        "in_features": int(weight.shape[1]),
        "out_features": int(weight.shape[0]),
    }
    return b.add(name, "dense", (x,), attrs, loc)


def _linear(b: Builder, name: str, m: nn.Linear, loc: str) -> None:
    b.current = dense(b, name, b.current, m.weight, m.bias, loc)


def pool(b: Builder, name: str, op: str, kernel: object, stride: object, padding: object, loc: str) -> None:
    """max/avg pooling with PyTorch's defaults (stride = kernel when not given)."""
    kernel = _pair(kernel)
    b.then(name, op, {"kernel": kernel, "stride": _pair(stride or kernel), "padding": _pair(padding)}, loc)


def _pool(b: Builder, name: str, m: nn.MaxPool2d | nn.AvgPool2d, loc: str) -> None:
    if m.ceil_mode:
        raise FrontendError(f"{loc}: ceil_mode=True is not supported")
    if isinstance(m, nn.MaxPool2d) and (_pair(m.dilation) != (1, 1) or m.return_indices):
        raise FrontendError(f"{loc}: MaxPool2d with dilation or return_indices is not supported")
    if isinstance(m, nn.AvgPool2d) and (not m.count_include_pad or m.divisor_override is not None):
        raise FrontendError(f"{loc}: AvgPool2d needs count_include_pad=True and no divisor_override")
    op = "maxpool2d" if isinstance(m, nn.MaxPool2d) else "avgpool2d"
    pool(b, name, op, m.kernel_size, m.stride, m.padding, loc)


def adaptive_avgpool(b: Builder, name: str, output: object, loc: str) -> None:
    """torch.nn.AdaptiveAvgPool2d; None in `output` keeps that size; an output equal to the input is a no-op."""
    if len(b.shape) != 3:
        raise FrontendError(f"{loc}: adaptive pooling expects a (C,H,W) value, got {b.type_of(b.current)}")
    sizes = (output, output) if isinstance(output, int) else tuple(output)
    size = tuple(int(s) if s is not None else current for s, current in zip(sizes, b.shape[1:], strict=True))
    if size != b.shape[1:]:
        b.then(name, "adaptive_avgpool2d", {"output": size}, loc)


def _adaptive(b: Builder, name: str, m: nn.AdaptiveAvgPool2d, loc: str) -> None:
    adaptive_avgpool(b, name, m.output_size, loc)


def _flatten(b: Builder, name: str, m: nn.Flatten, loc: str) -> None:
    ndim = len(b.shape) + 1  # with the batch dimension
    if m.start_dim % ndim != 1 or m.end_dim % ndim != ndim - 1:
        raise FrontendError(f"{loc}: only Flatten over all non-batch dimensions is supported")
    b.then(name, "flatten", {}, loc)


def _relu(b: Builder, name: str, m: nn.ReLU, loc: str) -> None:
    b.then(name, "relu", {}, loc)


def _batchnorm(b: Builder, name: str, m: nn.BatchNorm2d, loc: str) -> None:
    if m.running_mean is None or m.running_var is None:
        raise FrontendError(f"{loc}: BatchNorm2d without running statistics cannot be folded")
    positive(loc, **{"running_var + eps": m.running_var + m.eps})  # folding divides by its square root
    attrs = {
        "mean": b.param(f"{name}.mean", m.running_mean),
        "var": b.param(f"{name}.var", m.running_var),
        "eps": float(m.eps),
        "gamma": b.param(f"{name}.gamma", m.weight) if m.weight is not None else None,
        "beta": b.param(f"{name}.beta", m.bias) if m.bias is not None else None,
    }
    b.then(name, "batchnorm2d", attrs, loc)


Converter = Callable[[Builder, str, nn.Module, str], None]

# torch.nn layers, converted alike by every walking frontend (masic.frontends.torch_walk)
TORCH_LAYERS: dict[type, Converter] = {
    nn.Conv2d: _conv2d,
    nn.Linear: _linear,
    nn.MaxPool2d: _pool,
    nn.AvgPool2d: _pool,
    nn.AdaptiveAvgPool2d: _adaptive,
    nn.Flatten: _flatten,
    nn.ReLU: _relu,
    nn.BatchNorm2d: _batchnorm,
}


def _converters() -> dict[type, Converter]:
    import norse.torch as nt
    from masic.frontends.norse_cells import cells, coba_lif, li_linear, neuron

    return {
        **TORCH_LAYERS,
        nt.LILinearCell: li_linear,
        nt.CobaLIFCell: coba_lif,
        **dict.fromkeys(cells(), neuron),
    }


_SKIPPED = (nn.Dropout, nn.Identity)  # no-ops in evaluation mode


def _is_container(m: nn.Module) -> bool:
    """SequentialState, or an nn.Sequential (subclass) that runs its children in order."""
    import norse.torch as nt

    return isinstance(m, nt.SequentialState) or (
        isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward
    )


class Walker:
    """Turns a module tree into nodes, depth first; `walk` is what zoo recipes call for their parts."""

    def __init__(self, builder: Builder) -> None:
        from masic.frontends.norse_zoo import recipes

        self.b = builder
        self.converters = _converters()
        self.recipes = recipes()

    def walk(self, m: nn.Module, path: str) -> None:
        loc = f"{path} ({type(m).__name__})"
        with well_formed(loc):
            self._walk(m, path, loc)

    def _walk(self, m: nn.Module, path: str, loc: str) -> None:
        import norse.torch as nt

        name = path.removeprefix("model.").removeprefix("model") or "model"
        if type(m) in self.recipes:
            self.recipes[type(m)](self, m, path)
        elif type(m) is nt.RecurrentSequential:
            self._recurrent_sequential(m, path, loc)
        elif _is_container(m):
            if getattr(m, "return_hidden", False):
                raise FrontendError(f"{loc}: return_hidden=True outputs every layer's value; masic compiles one output")
            for child, layer in m.named_children():
                self.walk(layer, f"{path}.{child}")
        elif isinstance(m, nt.Lift):  # a layer applied to every step: one step of it is the layer itself
            self.walk(m.lifted_module, path)
        elif isinstance(m, _SKIPPED):
            return
        elif type(m) in self.converters:
            self.converters[type(m)](self.b, name, m, loc)
        else:
            raise FrontendError(f"unsupported module {loc}: {type(m).__module__}.{type(m).__qualname__}")

    def _recurrent_sequential(self, m: nn.Module, path: str, loc: str) -> None:
        """RecurrentSequential: its layers run on x plus the output of layer `output_modules` of the previous step
        (nothing at the first step: adding zeros), which is its output."""
        if not isinstance(m.output_modules, int):
            raise FrontendError(
                f"{loc}: output_modules={m.output_modules!r} outputs several layers' values; masic compiles one output"
            )
        x = self.b.current
        fed_back = self.b.delay(f"{path.removeprefix('model.')}.feedback", self.b.type_of(x), loc)
        self.b.current = self.b.add(f"{path.removeprefix('model.')}.input", "add", (x, fed_back), {}, loc)
        outputs = []
        for child, layer in m.module.named_children():
            self.walk(layer, f"{path}.module.{child}")
            outputs.append(self.b.current)
        try:
            output = outputs[m.output_modules]
        except IndexError:
            raise FrontendError(
                f"{loc}: output_modules={m.output_modules} is not one of its {len(outputs)} layers"
            ) from None
        if self.b.type_of(output) != self.b.type_of(x):
            raise FrontendError(
                f"{loc}: its output {self.b.type_of(output)} cannot be added to its input {self.b.type_of(x)}"
            )
        self.b.connect_delay(fed_back, output)
        self.b.current = output


def _leaves(m: nn.Module, path: str) -> Iterator[tuple[str, nn.Module]]:
    """The modules a walk reaches first, in order (through containers, RecurrentSequential and Lift)."""
    import norse.torch as nt

    if type(m) is nt.RecurrentSequential:
        yield from _leaves(m.module, f"{path}.module")
    elif _is_container(m):
        for child, layer in m.named_children():
            yield from _leaves(layer, f"{path}.{child}")
    elif isinstance(m, nt.Lift):
        yield from _leaves(m.lifted_module, path)
    else:
        yield path, m


def _implied_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """(in_features,) when the first layer that is not a no-op is a Linear or a cell with input weights (recurrent
    cells, LILinearCell)."""
    for path, layer in _leaves(model, "model"):
        if isinstance(layer, nn.Linear):
            return (layer.in_features,)
        weights = getattr(layer, "input_weights", None)
        if isinstance(weights, torch.Tensor) and weights.ndim == 2:
            return (int(weights.shape[1]),)
        if not isinstance(layer, _SKIPPED):
            raise FrontendError(
                f"the model starts with {type(layer).__name__} ({path}), whose input size is not implied; "
                "pass --input-shape, e.g. --input-shape 1,28,28"
            )
    return None


def is_norse_model(model: nn.Module) -> bool:
    """Whether this frontend reads the model: a container, Lift or zoo model (not a plain PyTorch module)."""
    import norse.torch as nt
    from masic.frontends.norse_zoo import recipes

    recurrent = type(model) is nt.RecurrentSequential
    return _is_container(model) or recurrent or isinstance(model, nt.Lift) or type(model) in recipes()


def import_norse(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, timesteps: int = 16, name: str = "model"
) -> Graph:
    """Lowers one timestep of a Norse model (see the module docstring) to the IR. `input_shape` is per sample."""
    if not is_norse_model(model):
        raise FrontendError(
            f"model is a {type(model).__module__}.{type(model).__qualname__}; this frontend reads "
            "norse.torch.SequentialState, nn.Sequential of Lift(...) and time-lifted neurons, and norse.torch.models"
        )
    with well_formed("model"):
        model.eval()
        shape = input_shape or _implied_input_shape(model)
        if shape is None:
            raise FrontendError("the model has no layers to compile")
        walker = Walker(Builder(tuple(shape)))
    with torch.no_grad():
        walker.walk(model, "model")
    return walker.b.finish(name, walker.b.current, timesteps)
