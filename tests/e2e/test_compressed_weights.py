"""End to end with compressed weights (`masic.ir.weight_formats`): Norse models compiled with every weight stored as
int8 or float16 run on x86_64 and on aarch64 (under qemu) with the reference interpreter's outputs.

The inputs are whole numbers (0 to 3), so every layer sums whole numbers (q * x, or spikes) exactly, in any order:
int8 artifacts must then equal the interpreter bit for bit (its int8 layers are `int8_output` of the exact sums),
on both targets; float16 ones too, for the same reason (each weight converts exactly to float32, and the
models' float32 layers of these models sum the same floats as the interpreter, which rounds once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from masic.frontends.norse import import_norse
from masic.targets import get_target

from masic import driver
from masic.codegen.artifact import generate_c
from masic.early_exit import ExitRule
from masic.ir.interpret import run
from masic.ir.weight_formats import FORMATS, WeightChoice
from tests.artifacts import run_artifact
from tests.norse_models import MODELS

pytestmark = pytest.mark.slow
TIMESTEPS = 6
# the C type model.c passes each format's weights as
C_WEIGHT = {"int8": "int8_t *w, float *scale", "float16": "uint16_t *w"}


def _whole_numbers(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, (TIMESTEPS, *shape)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["int8", "float16"])
@pytest.mark.parametrize("name", ["iaf", "dense"])
def test_compressed_models_match_the_interpreter_bit_for_bit(name: str, fmt: str, target: str, tmp_path: Path) -> None:
    factory, shape = MODELS[name]
    graph = import_norse(factory(), shape, timesteps=TIMESTEPS)
    chosen = get_target(target)
    planned = driver.plan(graph, driver.options_for(chosen, None, WeightChoice(fmt))).graph
    layers = [n for n in planned.nodes if n.op in ("conv2d", "dense")]
    assert layers and {planned.param(n.attr("weight").name).type.dtype for n in layers} == {FORMATS[fmt]}
    model_c = generate_c(planned, ExitRule(), tmp_path / "weights.bin")[0]
    assert model_c.count(C_WEIGHT[fmt]) >= 1 and "float *w" not in model_c
    driver.build(planned, chosen, tmp_path / "out")
    x = _whole_numbers(shape, seed=3)
    result, outputs = run_artifact(tmp_path / "out", x, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = run(planned, x)
    assert np.abs(expected).max() > 0
    mismatch = np.flatnonzero(outputs.ravel() != expected.ravel())
    assert mismatch.size == 0, f"{mismatch.size} of {outputs.size} outputs differ"
