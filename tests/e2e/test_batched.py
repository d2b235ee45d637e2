"""Batched dense layers: without a budget, a layer whose weights outgrow the cache computes a block's steps in one
call that reads its weights once; the artifact still runs inputs of any length and matches Norse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from norse.torch import LICell, LIFCell, SequentialState

from tests.artifacts import compile_model, masic_cli, run_artifact
from tests.norse_models import random_input, run_norse

pytestmark = pytest.mark.slow
TIMESTEPS = 4


def wide_dense_model() -> SequentialState:
    """3 MB of weights in the first layer: more than either target's cache in the cost model."""
    torch.manual_seed(4)
    return SequentialState(torch.nn.Linear(1024, 768), LIFCell(), torch.nn.Linear(768, 10), LICell())


def test_batched_blocks_match_norse_on_inputs_longer_than_a_block(target: str, tmp_path: Path) -> None:
    model = wide_dense_model()
    out = compile_model(model, (1024,), target, tmp_path, "--timesteps", str(TIMESTEPS))
    flags = ["--target", target, "--input-shape", "1024", "--timesteps", str(TIMESTEPS), "--emit", "c"]
    emitted = masic_cli("compile", str(tmp_path / "model.pt"), *flags).stdout
    assert "one block of 4 timestep(s)" in emitted
    assert emitted.count("(every step of the block)") == 2, "each dense layer: one call per block"
    x = random_input((1024,), 2 * TIMESTEPS + 2, seed=7)  # two blocks and a partial third
    run, outputs = run_artifact(out, x, tmp_path, "--no-exit")
    assert run.returncode == 0, run.stderr
    assert run.stats["block"] == TIMESTEPS
    expected = run_norse(model, x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
