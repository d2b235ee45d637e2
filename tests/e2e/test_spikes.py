"""End to end with spikes stored as bytes, or bit-packed where only accumulating dense layers read them: spiking
models (the digits ConvNet, conv, IAF, dense -> LIF -> dense) compiled for the host and for aarch64 (under qemu),
with dense layers of spikes on the accumulate-only kernel, against the reference interpreter and Norse; and under
the smallest budget they compile under (streamed weights, blocks of steps). With float16 and int8 weights
(`masic compile --weights`) the three oracles are the interpreter, the plan simulator and the kernels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from masic.frontends.norse import import_norse
from masic.targets import get_target

from examples.digits import digits_model
from masic import driver
from masic.codegen.artifact import generate_c
from masic.early_exit import ExitRule
from masic.ir.interpret import run
from masic.ir.names import value
from masic.ir.weight_formats import FORMATS, WeightChoice
from masic.passes import PassOptions
from masic.planning.minimum_budget import folded, minimum_budget
from tests.artifacts import compile_graph, compile_model, run_artifact, spiking_prefix
from tests.norse_models import MODELS, random_input, run_norse
from tests.pipelines import planned as plan

pytestmark = pytest.mark.slow
TIMESTEPS = 8
SPIKE_MODELS = {
    "digits": (digits_model, (1, 8, 8)),
    "conv": MODELS["conv"],
    "iaf": MODELS["iaf"],
    "dense": MODELS["dense"],
}
# Sizes of the spiking layers whose spikes only accumulating dense layers read, so bit-packed: digits' LIF between
# Linear(256, 64) and Linear(64, 10); iaf's 4x6x6 IAF map flattened into Linear(144, 12) and its IAF before
# Linear(12, 5); dense's LIF between Linear(20, 48) and Linear(48, 10). conv's spikes reach pools and convs.
BIT_PACKED = {"digits": [64], "conv": [], "iaf": [144, 12], "dense": [48]}


@pytest.mark.parametrize("name", SPIKE_MODELS)
def test_compiled_spiking_models_match_the_interpreter_and_norse(name: str, target: str, tmp_path: Path) -> None:
    factory, shape = SPIKE_MODELS[name]
    model = factory()
    graph = import_norse(model, shape, timesteps=TIMESTEPS)
    planned = plan(graph, PassOptions(alignment=get_target(target).alignment))
    spikes = [n for n in planned.nodes if n.type.dtype in ("spike", "bits")]
    assert spikes and all(planned.plan.buffer_of(value(n.name)).size <= n.type.numel for n in spikes)
    owned = [n for n in planned.nodes if n.type.dtype == "bits" and n.op not in ("flatten", "reshape")]
    assert [n.type.numel for n in owned] == BIT_PACKED[name]
    for node in owned:  # 32 spikes to a 4-byte word
        assert planned.plan.buffer_of(value(node.name)).size == 4 * math.ceil(node.type.numel / 32)
    model_c, _, _ = generate_c(planned, ExitRule(), tmp_path / "weights.bin")
    for node in (n for n in planned.nodes if n.attr("weight_layout") == "IO"):
        # the accumulate-only kernel reads bytes or words of bits, and the weights stored (in, out)
        x_type = "uint32_t" if planned.node(node.inputs[0]).type.dtype == "bits" else "uint8_t"
        assert f"({x_type} *x, float *w, " in model_c
    x = random_input(shape, TIMESTEPS, seed=5)
    out = compile_graph(graph, target, tmp_path / "out")
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = run_norse(model, x)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(outputs, run(planned, x), rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(outputs, run(planned, x, simulate_plan=True), rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", SPIKE_MODELS)
def test_compiled_spikes_of_the_last_spiking_layer_match_the_interpreter(name: str, tmp_path: Path) -> None:
    """The output neuron keeps float32 0/1 outputs (the loader reads float32); the layers before it pass bytes."""
    factory, shape = SPIKE_MODELS[name]
    model = spiking_prefix(factory())
    graph = import_norse(model, shape, timesteps=TIMESTEPS)
    planned = plan(graph, PassOptions(alignment=64))
    assert planned.node(planned.output).type.dtype == "f32"
    x = random_input(shape, TIMESTEPS, seed=6)
    out = compile_graph(graph, "x86_64", tmp_path / "out")
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    assert np.mean(outputs != run(planned, x)) < 1e-3
    assert np.mean(outputs != run_norse(model, x)) < 1e-3


@pytest.mark.parametrize("name", ["digits", "iaf"])
def test_spiking_models_at_their_smallest_budget(name: str, target: str, tmp_path: Path) -> None:
    factory, shape = SPIKE_MODELS[name]
    model = factory()
    graph = import_norse(model, shape, timesteps=TIMESTEPS)
    budget = minimum_budget(folded(graph), get_target(target).alignment)
    out = compile_model(model, shape, target, tmp_path, "--timesteps", str(TIMESTEPS), "--budget", str(budget))
    x = random_input(shape, TIMESTEPS, seed=7)
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stats["arena_bytes"] <= budget
    expected = run_norse(model, x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _three_oracles(graph, options: PassOptions, target: str, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    """The planned graph's outputs: the plan simulator's, which must equal the interpreter's bit for bit, checked
    against the kernels' (the artifact's); returns the interpreter's. Every layer's weight is stored as
    `options.weights` chooses."""
    planned = plan(graph, options)
    layers = [n for n in planned.nodes if n.op in ("conv2d", "dense")]
    stored = {planned.param(n.attr("weight").name).type.dtype for n in layers}
    assert stored == {FORMATS[options.weights.default]}
    expected = run(planned, x)
    np.testing.assert_array_equal(run(planned, x, simulate_plan=True), expected)
    driver.build(planned, get_target(target), tmp_path / "out")
    result, outputs = run_artifact(tmp_path / "out", x, tmp_path)
    assert result.returncode == 0, result.stderr
    # float32 inputs reach the first layer, whose float32 sums the kernels round in their own order
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    return expected


@pytest.mark.parametrize("weights", ["float16", "int8"])
@pytest.mark.parametrize("name", ["digits", "conv"])
def test_compressed_weights_agree_in_the_interpreter_the_plan_simulator_and_the_kernels(
    name: str, weights: str, target: str, tmp_path: Path
) -> None:
    factory, shape = SPIKE_MODELS[name]
    graph = import_norse(factory(), shape, timesteps=TIMESTEPS)
    options = PassOptions(alignment=get_target(target).alignment, weights=WeightChoice(weights))
    x = random_input(shape, TIMESTEPS, seed=8)
    _three_oracles(graph, options, target, x, tmp_path)


@pytest.mark.parametrize("name", ["digits", "iaf"])
def test_int8_weights_at_their_smallest_budget_stream_sliced_scales(name: str, target: str, tmp_path: Path) -> None:
    """At the int8 model's own minimum (below its float32 twin's) weights stream, layers are cut into pieces, each
    with its slice of the scales, and the three oracles still agree."""
    factory, shape = SPIKE_MODELS[name]
    graph = import_norse(factory(), shape, timesteps=TIMESTEPS)
    alignment = get_target(target).alignment
    int8 = PassOptions(alignment=alignment, weights=WeightChoice("int8"))
    budget = minimum_budget(folded(graph, int8), alignment)
    assert budget < minimum_budget(folded(graph), alignment)
    options = PassOptions(budget, alignment, weights=WeightChoice("int8"))
    planned = plan(graph, options)
    assert planned.schedule.streamed and planned.plan.arena_bytes <= budget
    layers = [n for n in planned.nodes if n.op in ("conv2d", "dense")]
    assert any(".part" in n.name for n in layers)
    for node in layers:  # one float32 scale per output channel of the piece
        scale = planned.param(node.attr("weight_scale").name).type
        assert scale.dtype == "f32" and scale.shape == planned.param(node.attr("weight").name).type.shape[:1]
    _three_oracles(graph, options, target, random_input(shape, TIMESTEPS, seed=9), tmp_path)
