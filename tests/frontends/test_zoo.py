"""Norse's model zoo: VGG (11..19, with and without batch norm), MobileNetV2 (widths 1.0 and 0.5), ConvNet and
ConvNet4 import by module walking, and their one-step IR, interpreted and compiled, reproduces Norse's own run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from masic.frontends.errors import FrontendError
from masic.frontends.norse import import_norse, install_pickle_aliases, load_model
from norse.torch import MobileNetV2
from norse.torch.models.mobilenet import InvertedResidual

from masic.ir.interpret import run
from tests.artifacts import compile_spec, run_artifact
from tests.pipelines import planned
from tests.zoo_models import ZOO, run_zoo, zoo_input

# Interpreting VGG's convolutions in float64 takes 10-20 s per model; the compiled tests below cover all of them.
INTERPRETED = ("convnet", "convnet4", "mobilenet_v2", "mobilenet_v2_half")


def _import(name: str) -> tuple[torch.nn.Module, object]:
    factory, shape, timesteps, _ = ZOO[name]
    model = factory()
    return model, import_norse(model, shape, timesteps, name)


def _assert_matches_norse(got: np.ndarray, expected: np.ndarray) -> None:
    scale = np.abs(expected).max()
    assert scale > 0, "spikes must reach the output for the comparison to mean something"
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("name", INTERPRETED)
def test_interpreter_and_plan_match_norse(name: str) -> None:
    model, graph = _import(name)
    x = zoo_input(name)
    expected = run_zoo(model, x)
    plan = planned(graph)
    _assert_matches_norse(run(graph, x), expected)
    _assert_matches_norse(run(plan, x, simulate_plan=True), expected)


def test_mobilenet_residual_blocks_become_adds() -> None:
    """Stride-1 blocks with equal channels add their input; on 32x32 images the features end at 1x1, so the
    adaptive pooling to 1x1 is a no-op and is left out."""
    model, graph = _import("mobilenet_v2_half")
    residual = [m for m in model.modules() if isinstance(m, InvertedResidual) and m.use_res_connect]
    ops = [n.op for n in graph.nodes]
    assert len(residual) == 10 and ops.count("add") == len(residual)
    assert "adaptive_avgpool2d" not in ops and graph.node("flatten").type.shape == (1280,)


def test_vgg_structure() -> None:
    """Batch norms fold away; on 32x32 images the features end at 1x1, which adaptive pooling spreads to 7x7."""
    _, graph = _import("vgg11_bn")
    ops = [n.op for n in graph.nodes]
    assert ops.count("conv2d") == 8 and ops.count("batchnorm2d") == 8 and ops.count("lif") == 10
    (pool,) = [n for n in graph.nodes if n.op == "adaptive_avgpool2d"]
    assert pool.type.shape == (512, 7, 7) and graph.node(pool.inputs[0]).type.shape == (512, 1, 1)
    plan = planned(graph)
    assert "batchnorm2d" not in [n.op for n in plan.nodes]
    assert graph.node(graph.output).op == "dense" and graph.node(graph.output).type.shape == (10,)


def test_a_subclass_of_a_zoo_model_is_refused() -> None:
    class Tweaked(MobileNetV2):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    with pytest.raises(FrontendError, match=r"model is a .*Tweaked; this frontend reads"):
        import_norse(Tweaked(width_mult=0.5), (3, 32, 32))


def test_a_saved_zoo_model_loads_with_the_safe_loader(tmp_path: Path) -> None:
    install_pickle_aliases()
    model = ZOO["convnet"][0]()
    torch.save(model, tmp_path / "convnet.pt")
    loaded = load_model(str(tmp_path / "convnet.pt"))
    x = zoo_input("convnet")
    np.testing.assert_array_equal(run_zoo(loaded, x), run_zoo(model, x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_compiled_zoo_model_matches_norse(name: str, tmp_path: Path) -> None:
    factory, shape, timesteps, _ = ZOO[name]
    flags = ("--input-shape", ",".join(map(str, shape)), "--timesteps", str(timesteps))
    out = compile_spec(f"tests.zoo_models:{name}", "x86_64", tmp_path, *flags)
    x = zoo_input(name, seed=1)
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_matches_norse(outputs, run_zoo(factory(), x))
