"""End to end: a model of convolutions on small maps, whose weights the layout pass stores blocked by output
channels and whose outputs blocked by channels (NCHW16c, NCHW4c: also a neuron's per-neuron parameters and state),
compiled for the host and for aarch64 (under qemu), resident and, at its smallest budget, sliced and
streamed, computes what the reference interpreter computes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from masic.frontends.norse import import_norse
from norse.torch import LICell, LIFCell, LIFParameters, SequentialState

from masic.ir.interpret import run
from masic.ir.text import parse
from tests.artifacts import compile_model, masic_cli, run_artifact
from tests.norse_models import random_input

pytestmark = pytest.mark.slow
SPEC = "tests.e2e.test_layout:small_maps"
SHAPE = (2, 8, 8)
TIMESTEPS = 4


def small_maps() -> SequentialState:
    """8x8, 4x4, 2x2 maps: blocks of 16 output channels, of 4 (a grouped conv with 12 outputs per group), and none
    (6 outputs). The second LIF has a threshold and a leak (its membrane's initial value) per neuron."""
    torch.manual_seed(5)
    p = LIFParameters(v_th=torch.tensor(0.2))
    per_neuron = LIFParameters(v_th=0.1 + 0.2 * torch.rand(32, 4, 4), v_leak=0.1 * torch.rand(32, 4, 4))
    return SequentialState(
        torch.nn.Conv2d(2, 16, 3, padding=1),
        LIFCell(p),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        LIFCell(per_neuron),
        torch.nn.Conv2d(32, 24, 3, padding=1, groups=2),
        LIFCell(p),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(24, 6, 1),
        LIFCell(p),
        torch.nn.Conv2d(6, 48, 2),
        torch.nn.Flatten(),
        torch.nn.Linear(48, 10),
        LICell(),
    )


def _layouts(*flags: str, key: str = "weight_layout") -> list[str | None]:
    """Each conv's `key` attribute in the graph `--emit layout` prints."""
    emitted = masic_cli(
        "compile", SPEC, "--input-shape", "2,8,8", "--timesteps", str(TIMESTEPS), "--emit", "layout", *flags
    )
    assert emitted.returncode == 0, emitted.stderr
    graph = parse(emitted.stdout, {})
    return [node.attr(key) for node in graph.nodes if node.op == "conv2d"]


@pytest.fixture(scope="module")
def minimum() -> int:
    refusal = masic_cli("compile", SPEC, "--input-shape", "2,8,8", "--budget", "1", "--emit", "plan")
    assert refusal.returncode == 2, refusal.stderr
    return int(re.search(r"use --budget (\d+)", refusal.stderr)[1])


def test_emitted_layouts_and_summary() -> None:
    assert _layouts() == ["OIHW16o", "OIHW16o", "OIHW4o", None, "OIHW16o"]
    # a max pool and blocked convs read the first three; the last is the input of the flatten view
    assert _layouts(key="layout") == ["NCHW16c", "NCHW16c", "NCHW4c", None, None]
    emitted = masic_cli("compile", SPEC, "--input-shape", "2,8,8", "--emit", "layout")
    summary = "masic: layout: activations 7 NCHW, 4 NCHW16c, 2 NCHW4c; conv weights: 1 OIHW, 3 OIHW16o, 1 OIHW4o"
    assert summary in emitted.stderr


@pytest.mark.parametrize("budgeted", [False, True], ids=["resident", "minimum-budget"])
def test_artifact_matches_the_interpreter(budgeted: bool, minimum: int, target: str, tmp_path: Path) -> None:
    model = small_maps()
    flags = ("--timesteps", str(TIMESTEPS), *(("--budget", str(minimum)) if budgeted else ()))
    if budgeted:  # slicing leaves pieces of the blocked convs, some blocked themselves
        assert "OIHW16o" in _layouts("--budget", str(minimum)) or "OIHW8o" in _layouts("--budget", str(minimum))
    out = compile_model(model, SHAPE, target, tmp_path, *flags)
    x = random_input(SHAPE, TIMESTEPS, seed=9)
    result, outputs = run_artifact(out, x, tmp_path, "--no-exit")
    assert result.returncode == 0, result.stderr
    expected = run(import_norse(model, input_shape=SHAPE, timesteps=TIMESTEPS), x)
    assert np.abs(expected).max() > 0, "the input must reach the output"
    scale = np.abs(expected).max()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * scale)
