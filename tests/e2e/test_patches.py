"""A budget below what the first stage needs whole: that stage runs in row patches, and the artifact matches Norse."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from norse.torch import LICell, LIFCell, LIFParameters, SequentialState

from tests.artifacts import compile_spec, masic_cli, run_artifact
from tests.norse_models import random_input, run_norse

pytestmark = pytest.mark.slow
SPEC = "tests.e2e.test_patches:activation_heavy_model"
SHAPE = (2, 32, 32)
TIMESTEPS = 4


def activation_heavy_model() -> SequentialState:
    """A 32x32 first stage whose activations and state dwarf the weights (about 30 KB), as in MobileNetV2 at 224."""
    torch.manual_seed(7)
    return SequentialState(
        torch.nn.Conv2d(2, 16, 3, padding=1),
        LIFCell(LIFParameters(v_th=torch.tensor(0.3))),
        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16),
        LIFCell(LIFParameters(v_th=torch.tensor(0.3))),
        torch.nn.MaxPool2d(2, padding=1),
        torch.nn.Conv2d(16, 8, 1),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 9 * 9, 10),
        LICell(),
    )


def _compile_flags(budget: int) -> tuple[str, ...]:
    return ("--input-shape", ",".join(map(str, SHAPE)), "--timesteps", str(TIMESTEPS), "--budget", str(budget))


def test_patched_artifact_matches_norse(tmp_path: Path) -> None:
    refusal = masic_cli("compile", SPEC, "--emit", "plan", *_compile_flags(1))
    assert refusal.returncode == 2
    minimum = int(re.search(r"use --budget (\d+)", refusal.stderr)[1])
    sliced = masic_cli("compile", SPEC, "--emit", "sliced", *_compile_flags(minimum))
    assert sliced.returncode == 0, sliced.stderr
    assert re.search(r"= concat\(%\S+\.patch0, .*\) \{axis=1\}", sliced.stdout), "the first stage runs in patches"
    out = compile_spec(SPEC, "x86_64", tmp_path, *_compile_flags(minimum))
    x = random_input(SHAPE, TIMESTEPS, seed=3) * 2
    run, outputs = run_artifact(out, x, tmp_path)
    assert run.returncode == 0, run.stderr
    expected = run_norse(activation_heavy_model(), x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert run.stats["arena_bytes"] <= minimum
