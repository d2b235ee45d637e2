"""Norse zoo models (norse.torch.models) at reduced input sizes, with weights scaled so that spikes reach the output
within a few steps (with Norse's default initialisation deep layers stay silent, and a comparison of silent
networks would prove little). Each factory is also a `tests.zoo_models:NAME` spec for `masic compile`.

Sizes: VGG and MobileNetV2 take 3x32x32 images (VGG's five poolings leave 1x1, so its adaptive pooling to 7x7
replicates: the uneven-bins kernel); ConvNet and ConvNet4 take 1x16x16 (feature_size=16).
"""

from __future__ import annotations

import numpy as np
import torch
from norse.torch import ConvNet, ConvNet4, MobileNetV2
from norse.torch.models import vgg
from torch import nn

VGG_GAIN = 16.0  # Kaiming-initialised VGG layers need this for spikes to cross 19 layers in 4 steps


def _scaled(model: nn.Module, gain: float, kinds: tuple[type, ...]) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, kinds):
                module.weight *= gain
    return model.eval()


def _batch_norms(model: nn.Module, gamma: tuple[float, float], beta: tuple[float, float]) -> None:
    """Running statistics and affine parameters that are not the identity, so folding them is tested."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(*gamma)
                module.bias.uniform_(*beta)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)


def _vgg(name: str) -> nn.Module:
    torch.manual_seed(20)
    model = getattr(vgg, name)(num_classes=10)
    _batch_norms(model, (0.8, 1.2), (-0.1, 0.2))
    return _scaled(model, VGG_GAIN, (nn.Conv2d, nn.Linear))


def vgg11() -> nn.Module:
    return _vgg("vgg11")


def vgg11_bn() -> nn.Module:
    return _vgg("vgg11_bn")


def vgg13() -> nn.Module:
    return _vgg("vgg13")


def vgg13_bn() -> nn.Module:
    return _vgg("vgg13_bn")


def vgg16() -> nn.Module:
    return _vgg("vgg16")


def vgg16_bn() -> nn.Module:
    return _vgg("vgg16_bn")


def vgg19() -> nn.Module:
    return _vgg("vgg19")


def vgg19_bn() -> nn.Module:
    return _vgg("vgg19_bn")


def _mobilenet(width: float) -> nn.Module:
    """Batch norms with varied statistics and gains; depthwise convolutions scaled up by sqrt(groups), as their
    Kaiming initialisation counts every output channel in the fan-out."""
    torch.manual_seed(21)
    model = MobileNetV2(num_classes=10, width_mult=width)
    _batch_norms(model, (1.5, 4.5), (-0.5, 1.0))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                module.weight *= module.groups**0.5
            elif isinstance(module, nn.Linear):
                module.weight *= 10
    return model.eval()


def mobilenet_v2() -> nn.Module:
    return _mobilenet(1.0)


def mobilenet_v2_half() -> nn.Module:
    return _mobilenet(0.5)


def convnet() -> nn.Module:
    torch.manual_seed(22)
    return _scaled(ConvNet(feature_size=16), 4.0, (nn.Linear,))


def convnet4() -> nn.Module:
    torch.manual_seed(23)
    return _scaled(ConvNet4(feature_size=16), 4.0, (nn.Linear,))


# name -> (factory, per-sample input shape, timesteps, input scale)
ZOO = {
    **{name: (globals()[name], (3, 32, 32), 4, 20.0) for name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn")},
    **{name: (globals()[name], (3, 32, 32), 4, 20.0) for name in ("vgg16", "vgg16_bn", "vgg19", "vgg19_bn")},
    "mobilenet_v2": (mobilenet_v2, (3, 32, 32), 4, 3.0),
    "mobilenet_v2_half": (mobilenet_v2_half, (3, 32, 32), 4, 3.0),
    "convnet": (convnet, (1, 16, 16), 8, 20.0),
    "convnet4": (convnet4, (1, 16, 16), 8, 20.0),
}


def zoo_input(name: str, seed: int = 0) -> np.ndarray:
    """A (T, *shape) input sequence for a zoo model."""
    _, shape, timesteps, scale = ZOO[name]
    return (np.random.default_rng(seed).uniform(0.0, 1.0, (timesteps, *shape)) * scale).astype(np.float32)


def run_zoo(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Norse's own run of the whole sequence (the zoo models take (T, batch, ...)), batch of one."""
    with torch.no_grad():
        return model(torch.from_numpy(x)[:, None])[:, 0].numpy()
