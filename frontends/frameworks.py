"""Which walking frontend reads a PyTorch module of snnTorch, SpikingJelly or Sinabs (see `masic.frontends.torch_walk`).

A model belongs to the framework whose modules it holds; one that mixes two frameworks' modules is refused (its
neurons would follow different conventions, and no frontend reads both).
"""

from __future__ import annotations

from collections.abc import Callable

from masic.frontends.errors import FrontendError
from masic.frontends.torch_walk import Framework, import_walked
from torch import nn

from masic.ir.graph import Graph

# framework name -> (the package its modules come from, its Framework)
_PACKAGES = {"snnTorch": "snntorch", "SpikingJelly": "spikingjelly", "Sinabs": "sinabs"}


def _framework(name: str) -> Framework:
    from masic.frontends import sinabs, snntorch, spikingjelly

    makers: dict[str, Callable[[], Framework]] = {
        "snnTorch": snntorch.framework,
        "SpikingJelly": spikingjelly.framework,
        "Sinabs": sinabs.framework,
    }
    return makers[name]()


def framework_of(model: nn.Module) -> str | None:
    """The name of the framework whose modules `model` holds, or None."""
    found = {
        name
        for m in model.modules()
        for name, package in _PACKAGES.items()
        if type(m).__module__.split(".")[0] == package
    }
    if len(found) > 1:
        raise FrontendError(f"the model mixes modules of {' and '.join(sorted(found))}; masic reads one framework")
    return next(iter(found), None)


def import_framework_model(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, timesteps: int = 16, name: str = "model"
) -> Graph:
    """The IR of one timestep of a snnTorch, SpikingJelly or Sinabs model."""
    framework = framework_of(model)
    if framework is None:
        raise FrontendError(f"model is a {type(model).__qualname__} without snnTorch, SpikingJelly or Sinabs modules")
    return import_walked(_framework(framework), model, input_shape, timesteps, name)
