"""Norse's model zoo (`norse.torch.models`): one recipe per class, mirroring one timestep of its `forward`.

The zoo models run a whole sequence in their own `forward` (time-lifted layers, or a hand-written loop over T), so
the generic module walk cannot see how their parts connect; each recipe here states it, for exactly these classes
(a subclass, which may change `forward`, is refused):
- `VGG` (vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn): features, adaptive average pooling to
  7x7, flatten, classifier (Linear + LIF + Dropout, ..., Linear);
- `MobileNetV2` (any width that Norse itself runs: 1.0 and 0.5; 0.25 crashes in Norse): features of ConvBNReLU and
  `InvertedResidual` blocks (the residual add when stride 1 and equal channels), adaptive average pooling to 1x1,
  flatten, classifier;
- `ConvNet`, `ConvNet4`: conv1, LIF, max pool 2, conv2 scaled by 10, LIF, max pool 2, flatten, fc1, LIF, relu,
  LILinearCell (whose membrane is the output).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from masic.frontends.norse import Walker

Recipe = Callable[["Walker", nn.Module, str], None]


def _vgg(w: Walker, m: nn.Module, path: str) -> None:
    w.walk(m.features, f"{path}.features")
    w.walk(m.avgpool, f"{path}.avgpool")
    w.b.then("flatten", "flatten", {}, f"{path} (torch.flatten)")
    w.walk(m.classifier, f"{path}.classifier")


def _mobilenet_v2(w: Walker, m: nn.Module, path: str) -> None:
    w.walk(m.features, f"{path}.features")
    w.walk(m.pool, f"{path}.pool")
    w.b.then("flatten", "flatten", {}, f"{path} (reshape)")
    w.walk(m.classifier, f"{path}.classifier")


def _inverted_residual(w: Walker, m: nn.Module, path: str) -> None:
    block_input = w.b.current
    w.walk(m.conv, f"{path}.conv")
    if m.use_res_connect:
        name = path.removeprefix("model.")
        w.b.current = w.b.add(f"{name}.residual", "add", (block_input, w.b.current), {}, f"{path} (x + conv(x))")


def _convnet(w: Walker, m: nn.Module, path: str) -> None:
    from masic.frontends.norse import pool

    w.walk(m.conv1, f"{path}.conv1")
    w.walk(m.lif0, f"{path}.lif0")
    pool(w.b, "pool0", "maxpool2d", 2, 2, 0, f"{path} (max_pool2d)")
    w.walk(m.conv2, f"{path}.conv2")
    w.b.then("conv2.x10", "scale", {"factor": 10.0}, f"{path} (10 * conv2)")
    w.walk(m.lif1, f"{path}.lif1")
    pool(w.b, "pool1", "maxpool2d", 2, 2, 0, f"{path} (max_pool2d)")
    w.b.then("flatten", "flatten", {}, f"{path} (view)")
    w.walk(m.fc1, f"{path}.fc1")
    w.walk(m.lif2, f"{path}.lif2")
    w.b.then("relu", "relu", {}, f"{path} (relu)")
    w.walk(m.out, f"{path}.out")


@cache
def recipes() -> dict[type, Recipe]:
    """Zoo class -> its recipe."""
    import norse.torch as nt
    from norse.torch.models import mobilenet

    return {
        nt.VGG: _vgg,
        nt.MobileNetV2: _mobilenet_v2,
        mobilenet.InvertedResidual: _inverted_residual,
        nt.ConvNet: _convnet,
        nt.ConvNet4: _convnet,
    }
