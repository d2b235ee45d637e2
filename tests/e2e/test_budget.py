"""Budgets below what the model needs resident: sliced, streamed and blocked artifacts against Norse."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from norse.torch import LICell, LIFCell, SequentialState

from tests.artifacts import compile_model, masic_cli, run_artifact
from tests.norse_models import random_input, run_norse

pytestmark = pytest.mark.slow
TIMESTEPS = 6
OVERHEAD = 4 << 20  # the loader's fixed overhead we allow: code, stacks, libc


def weight_heavy_model() -> SequentialState:
    """Weights (about 600 KB) dwarf activations and state, as in VGG's classifier."""
    torch.manual_seed(3)
    return SequentialState(
        torch.nn.Linear(128, 1024), LIFCell(), torch.nn.Linear(1024, 64), LIFCell(), torch.nn.Linear(64, 10), LICell()
    )


def smallest_budget() -> int:
    """The smallest budget, as `masic compile` states it when refusing a 1-byte budget."""
    refusal = masic_cli("compile", "tests.e2e.test_budget:weight_heavy_model", "--budget", "1", "--emit", "plan")
    assert refusal.returncode == 2
    return int(re.search(r"use --budget (\d+)", refusal.stderr)[1])


@pytest.fixture(scope="module")
def minimum() -> int:
    return smallest_budget()


@pytest.mark.parametrize("fraction", [0.0, 0.3])
def test_streamed_artifacts_match_norse(fraction: float, minimum: int, target: str, tmp_path: Path) -> None:
    model = weight_heavy_model()
    weights = sum(p.numel() * 4 for p in model.parameters())
    budget = int(minimum + fraction * (weights - minimum))
    assert budget < weights / 2  # far below what the weights alone need
    out = compile_model(model, (128,), target, tmp_path, "--budget", str(budget), "--timesteps", str(TIMESTEPS))
    x = random_input((128,), TIMESTEPS, seed=5)
    run, outputs = run_artifact(out, x, tmp_path)
    assert run.returncode == 0, run.stderr
    expected = run_norse(model, x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    stats = run.stats
    assert stats["arena_bytes"] <= budget
    assert stats["weight_bytes_read"] >= weights  # every streamed weight is read at least once per run
    if target == "x86_64":
        assert stats["peak_rss_bytes"] <= budget + OVERHEAD


def test_blocks_read_each_streamed_weight_once_per_block(minimum: int, tmp_path: Path) -> None:
    model = weight_heavy_model()
    weights = sum(p.numel() * 4 for p in model.parameters())
    out = compile_model(model, (128,), "x86_64", tmp_path, "--budget", str(weights // 3), "--timesteps", "6")
    run, _ = run_artifact(out, random_input((128,), 6, seed=6), tmp_path)
    stats = run.stats
    blocks = -(-6 // stats["block"])
    assert stats["block"] > 1
    assert stats["weight_bytes_read"] <= blocks * weights  # never once per step
