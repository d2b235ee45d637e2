"""Layer-major artifacts whose neuron state lives only while its layer runs: at the smallest budget of a model whose
state outweighs one step's activations, the plan runs all T steps in one block, and the artifact computes what the
unsliced model does, loading each state's initial value in the block, and refuses runs longer than that block."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from masic.frontends.norse import import_norse
from norse.torch import LICell, LIFCell, LIFParameters, SequentialState

from masic.ir.interpret import run
from tests.artifacts import compile_model, masic_cli, run_artifact
from tests.norse_models import random_input, run_norse

pytestmark = pytest.mark.slow
TIMESTEPS = 4
INPUT_SHAPE = (8,)


def state_heavy_model() -> SequentialState:
    """Six spiking layers of 256 neurons after one small dense layer: their state (2 KiB per layer) outweighs one
    step's activations many times over. Fast neurons with a low threshold make every layer spike from the first
    step, so each layer's output depends on its state."""
    torch.manual_seed(4)
    first = torch.nn.Linear(8, 256)
    with torch.no_grad():
        first.weight.mul_(2.0)
    p = LIFParameters(tau_mem_inv=torch.tensor(500.0), tau_syn_inv=torch.tensor(300.0), v_th=torch.tensor(0.3))
    # One layer's leak differs per neuron, so its membrane starts from a per-neuron value that weights.bin holds;
    # every other initial state is uniform and filled by the loading thread, not read.
    leaky = LIFParameters(p.tau_syn_inv, p.tau_mem_inv, torch.linspace(-0.1, 0.1, 256), p.v_th)
    layers = [LIFCell(p=leaky if k == 2 else p) for k in range(6)]
    return SequentialState(first, *layers, torch.nn.Linear(256, 10), LICell())


@pytest.fixture(scope="module")
def minimum() -> int:
    """The smallest budget, as `masic compile` states it when refusing a 1-byte budget."""
    spec = "tests.e2e.test_transient_state:state_heavy_model"
    refusal = masic_cli("compile", spec, "--budget", "1", "--timesteps", str(TIMESTEPS), "--emit", "plan")
    assert refusal.returncode == 2, refusal.stderr
    return int(re.search(r"use --budget (\d+)", refusal.stderr)[1])


def test_layer_major_artifact_matches_the_unsliced_model_and_refuses_longer_runs(
    minimum: int, target: str, tmp_path: Path
) -> None:
    model = state_heavy_model()
    out = compile_model(model, INPUT_SHAPE, target, tmp_path, "--budget", str(minimum), "--timesteps", str(TIMESTEPS))
    manifest = json.loads((out / "manifest.json").read_text())
    states = [row for row in manifest["buffers"] if row["kind"] == "state"]
    positions = max(row["live"][1] for row in manifest["buffers"])
    assert states and all(row["live"][1] - row["live"][0] < positions for row in states)  # none pinned

    x = random_input(INPUT_SHAPE, TIMESTEPS, seed=7)
    result, outputs = run_artifact(out, x, tmp_path, "--no-exit")
    assert result.returncode == 0, result.stderr
    stats = result.stats
    assert (stats["block"], stats["timesteps"]) == (TIMESTEPS, TIMESTEPS)
    assert stats["arena_bytes"] <= minimum
    assert stats["state_bytes_read"] == 256 * 4  # the per-neuron initial membrane, once; the rest are filled
    unsliced = run(import_norse(model, timesteps=TIMESTEPS), x)
    scale = np.abs(unsliced).max()
    np.testing.assert_allclose(outputs, unsliced, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(outputs, run_norse(model, x), rtol=1e-4, atol=1e-4 * scale)

    longer = random_input(INPUT_SHAPE, TIMESTEPS + 1, seed=8)
    for flags, steps in (((), TIMESTEPS + 1), (("--timesteps", str(TIMESTEPS + 2)), TIMESTEPS + 2)):
        refused, _ = run_artifact(out, longer if not flags else longer[0], tmp_path, *flags)
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("model: error: ") and line.endswith(f"recompile with --timesteps {steps}")
