"""Module walking shared by the frontends of PyTorch SNN frameworks (snnTorch, SpikingJelly, Sinabs).

A framework is described by a `Framework`: the converters of its neurons and layers (beside torch.nn's layers,
converted as the Norse frontend converts them), the modules that are no-ops in inference, and which modules are
containers whose parts run one after the other on each timestep. `import_walked` walks a model depth first, each
part's converter adding the IR of one timestep to a chain; anything else is refused with its path in the model,
e.g. `unsupported module model.3 (Tanh): torch.nn.modules.activation.Tanh`.

Why walking rather than torch.export of the user's module: a walk sees each neuron module whole, so its update is
the framework's own equations (one family of `masic.ir.framework_neurons`, stored by the kernels as spikes), its
learnable parameters are clamped or transformed by the framework's own expressions, every node keeps its module path
for errors and `--emit ir`, and models whose forward runs a whole sequence (SpikingJelly's multi-step mode, Sinabs'
(batch, time, ...) layers) compile as they are. Modules with forward code of the user's own go through the
torch.export frontend (`masic.frontends.export`), which covers the same neurons called with explicit state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from masic.frontends.errors import FrontendError, well_formed
from masic.frontends.norse import Builder, Converter
from torch import nn

from masic.ir.graph import AttrValue, Graph

# Modules every framework's models may hold that pass their input on in inference (torch.nn's layers convert as
# the Norse frontend converts them: masic.frontends.norse.TORCH_LAYERS)
TORCH_NO_OPS = (nn.Dropout, nn.Identity)


def plain_sequential(m: nn.Module) -> bool:
    """An nn.Sequential (or a subclass) that keeps nn.Sequential's forward: its children run in order."""
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


@dataclass(frozen=True)
class Framework:
    """How one framework's models are walked: `converters` by exact module type (torch.nn's layers included),
    `no_ops` (modules that pass their input on in inference), and `containers`: module types whose children run
    in order on every step (plain nn.Sequential always does)."""

    name: str
    converters: Mapping[type, Converter]
    no_ops: tuple[type, ...] = TORCH_NO_OPS
    containers: tuple[type, ...] = field(default=())

    def is_container(self, m: nn.Module) -> bool:
        return plain_sequential(m) or type(m) in self.containers

    def leaves(self, m: nn.Module, path: str) -> Iterator[tuple[str, nn.Module]]:
        """The modules a walk converts or skips, in order, with their paths."""
        if self.is_container(m):
            for child, part in m.named_children():
                yield from self.leaves(part, f"{path}.{child}")
        else:
            yield path, m

    def walk(self, b: Builder, model: nn.Module) -> None:
        for path, m in self.leaves(model, "model"):
            loc = f"{path} ({type(m).__name__})"
            with well_formed(loc):
                if isinstance(m, self.no_ops):
                    continue
                converter = self.converters.get(type(m))
                if converter is None:
                    raise FrontendError(
                        f"unsupported module {loc}: {type(m).__module__}.{type(m).__qualname__}{_hint(m)}"
                    )
                converter(b, path.removeprefix("model.") or "model", m, loc)


def _hint(m: nn.Module) -> str:
    """For a module of the user's own that holds others: how its forward code can be compiled."""
    if not any(True for _ in m.children()):
        return ""
    return (
        " (forward code of its own: compile it with torch.export, from a factory returning (module, "
        "example_inputs), its forward stepping once, forward(x, *state) -> (output, *new_state), or looping over time)"
    )


def implied_input_shape(framework: Framework, model: nn.Module) -> tuple[int, ...]:
    """(in_features,) when the first layer that is not a no-op is a Linear; else the user must say."""
    for path, layer in framework.leaves(model, "model"):
        if isinstance(layer, nn.Linear):
            return (layer.in_features,)
        if not isinstance(layer, framework.no_ops):
            raise FrontendError(
                f"the model starts with {type(layer).__name__} ({path}), whose input size is not implied; "
                "pass --input-shape, e.g. --input-shape 1,28,28"
            )
    raise FrontendError("the model has no layers to compile")


def import_walked(
    framework: Framework, model: nn.Module, input_shape: tuple[int, ...] | None, timesteps: int, name: str
) -> Graph:
    """The IR of one timestep of a `framework` model, walked (module docstring)."""
    with well_formed("model"):
        model.eval()
        shape = tuple(input_shape) if input_shape else implied_input_shape(framework, model)
        b = Builder(shape)
    with torch.no_grad():
        framework.walk(b, model)
    return b.finish(name, b.current, timesteps)


def tensor_value(b: Builder, name: str, key: str, raw: object, loc: str) -> AttrValue:
    """A neuron parameter (a number or a tensor, as the framework computed it) as a float attribute or a
    per-neuron parameter of the current value's shape, in float32."""
    array = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
    return b.element_param(name, key, array, b.shape, loc)


def positive(loc: str, key: str, raw: object) -> None:
    """A threshold or time constant that must be positive and finite (a count of spikes divides by it)."""
    array = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw, dtype=np.float64)
    if array.dtype.kind not in "biuf":
        raise FrontendError(f"{loc}: {key} holds {array.dtype} values, not real numbers")
    bad = array[~(np.isfinite(array) & (array > 0))]
    if bad.size:
        raise FrontendError(f"{loc}: {key} {bad.flat[0]:g} is not positive and finite")
