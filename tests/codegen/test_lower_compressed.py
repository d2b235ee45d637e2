"""Lowering of compressed weights (`masic.ir.weight_formats`): each conv and dense layer's kernel takes its weight in
the stored type, int8 ones their scale right after it, and model.c passes them with matching C pointer types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from masic.frontends.norse import import_norse
from masic.targets import get_target

from masic import driver
from masic.codegen.artifact import generate_c
from masic.codegen.kernels import HALF, INT8, STORAGE
from masic.codegen.lower import lower
from masic.early_exit import ExitRule
from masic.ir import names
from masic.ir.weight_formats import FORMATS, WeightChoice
from tests.norse_models import MODELS

C_WEIGHT = {HALF: "uint16_t *w, ", INT8: "int8_t *w, float *scale, "}


@pytest.mark.parametrize("fmt", ["float16", "int8"])
@pytest.mark.parametrize("name", ["conv", "iaf"])
def test_layers_take_their_stored_weights(name: str, fmt: str, tmp_path: Path) -> None:
    factory, shape = MODELS[name]
    graph = import_norse(factory(), shape, timesteps=2)
    planned = driver.plan(graph, driver.options_for(get_target("x86_64"), None, WeightChoice(fmt))).graph
    kernels, calls = lower(planned)
    by_symbol = {k.symbol: k for k in kernels}
    layers = [call for call in calls if call.node.op in ("conv2d", "dense")]
    assert layers
    for call in layers:
        kernel, bound = by_symbol[call.symbol], dict(call.args)
        assert kernel.weight_dtype == STORAGE[FORMATS[fmt]] == kernel.arg_dtype("w")
        assert ("scale" in bound) == (fmt == "int8")
        if fmt == "int8":  # right after w, bound to the node's weight_scale parameter
            order = kernel.arg_names()
            assert order[order.index("w") + 1] == "scale"
            scale = planned.plan.locate(names.param(call.node.attr("weight_scale").name))
            assert bound["scale"] == scale.offset
    model_c = generate_c(planned, ExitRule(), tmp_path / "weights.bin")[0]
    prototypes = re.findall(r"^int32_t (masic_\w+)\((.*)\);$", model_c, re.MULTILINE)
    weighted = [(symbol, args) for symbol, args in prototypes if "w" in by_symbol[symbol].arg_names()]
    assert weighted and all(C_WEIGHT[by_symbol[symbol].weight_dtype] in args for symbol, args in weighted)
    assert "float *w" not in model_c
