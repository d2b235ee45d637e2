"""The models the speed benchmark compiles and runs, their inputs, and their planned graphs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.speed.common import TARGET


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, ...]
    timesteps: int
    stepwise: bool  # Norse runs it step by step (SequentialState); else one call over the (T, 1, ...) sequence
    min_speedup: float  # the target against Norse (0: kernel source only)
    input_scale: float = 20.0  # zoo models: uniform [0, scale) input sequences


MODELS = {
    "digits": ModelSpec("digits", (1, 8, 8), 16, True, 10.0),
    "convnet4": ModelSpec("convnet4", (1, 28, 28), 16, False, 10.0),
    "vgg11": ModelSpec("vgg11", (3, 32, 32), 4, False, 2.0),
    "mobilenet_v2": ModelSpec("mobilenet_v2", (3, 32, 32), 4, False, 0.0, 3.0),
}


def convnet4_28():
    """Norse's ConvNet4 at its default 1x28x28 input; Linear weights x4 as tests.zoo_models.convnet4 (so spikes
    reach the output). Also a `bench.speed.models:convnet4_28` spec for `masic compile`."""
    import torch
    from norse.torch import ConvNet4

    torch.manual_seed(23)
    model = ConvNet4()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight *= 4.0
    return model.eval()


def save_model(name: str, work: Path, epochs: int) -> Path:
    """WORKDIR/models/NAME.pt (torch.save of the whole model); the trained digits model is reused if present."""
    import torch
    from masic.frontends.norse import install_pickle_aliases

    path = work / "models" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    install_pickle_aliases()
    if name == "digits":
        if not path.exists():
            from examples.digits import load_splits, train

            (x, y), _, _ = load_splits()
            started = time.perf_counter()
            torch.set_num_threads(1)  # the same model on every machine: reductions in a fixed order
            model = train(x, y, epochs, per_step=True)
            print(f"trained digits for {epochs} epochs in {time.perf_counter() - started:.1f}s", flush=True)
            torch.save(model, path)
        return path
    if name == "convnet4":
        model = convnet4_28()
    else:
        import tests.zoo_models as zoo

        model = getattr(zoo, name)()
    torch.save(model, path)
    return path


def model_input(spec: ModelSpec) -> np.ndarray:
    """The digits model's first held-out digit (1, 8, 8), presented at every step; else a (T, *shape) uniform
    [0, scale) sequence."""
    if spec.name == "digits":
        from examples.digits import load_splits

        return load_splits()[2][0][0]
    rng = np.random.default_rng(0)
    return (rng.uniform(0.0, 1.0, (spec.timesteps, *spec.input_shape)) * spec.input_scale).astype(np.float32)


def plan_graph(model_path: Path, spec: ModelSpec, budget: int | None, spikes: str = "bits"):
    """The planned graph `masic compile` builds the artifact from (the same stages, options and target,
    `masic.driver`), its spikes one byte each or bit-packed where the layout pass packs them (`spikes` "bits"); with
    "bytes", the same graph with every spike one byte, planned again (as masic planned before bit-packed spikes:
    only assign-offsets runs after the layout pass, so every other decision is the same); with "f32", planned as
    before the spike dtype (every value float32)."""
    from dataclasses import replace

    from masic.frontends.dispatch import ImportOptions
    from masic.targets import get_target

    from masic import driver
    from masic.ir.graph import TensorType
    from masic.passes import DEFAULT_PIPELINE

    graph = driver.import_model(str(model_path), ImportOptions(spec.input_shape, spec.timesteps, name=spec.name))
    options = driver.options_for(get_target(TARGET), budget)
    passes = [name for name in DEFAULT_PIPELINE if spikes != "f32" or name != "spike-dtype"]
    planned = driver.plan(graph, options, passes=passes).graph
    if spikes != "bytes":
        return planned
    nodes = [replace(n, type=TensorType(n.type.shape, "spike")) if n.type.dtype == "bits" else n for n in planned.nodes]
    replanned = passes[passes.index("assign-offsets") :]
    return driver.plan(replace(planned.with_nodes(nodes), plan=None), options, passes=replanned).graph


def parse_source(text: str) -> tuple[str, int | None]:
    from masic.units import parse_bytes

    name, _, budget = text.partition("@")
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return name, parse_bytes(budget) if budget else None


def budget_label(name: str, budget: int | None) -> str:
    return name if budget is None else f"{name}@{budget / 1e6:g}MB"
