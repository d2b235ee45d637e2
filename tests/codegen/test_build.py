"""masic.codegen.build: the kernels' object file, and the `noalias` attributes TVM gives their pointers."""

from __future__ import annotations

import re
import subprocess

import pytest
import tvm
from masic.frontends.norse import import_norse

from masic.codegen.build import _modules, build_object, host_target
from masic.codegen.lower import lower
from tests.norse_models import MODELS
from tests.pipelines import planned


def _kernels(model: str) -> list:
    """A model's kernels with its neurons as kernels of their own (some may write their output over their input)."""
    factory, shape = MODELS[model]
    kernels, _ = lower(planned(import_norse(factory(), shape, 4), without=("fuse-neurons",)))
    return kernels


@pytest.mark.parametrize("model", ["dense", "conv"])
def test_each_kernel_gets_noalias_pointers_exactly_when_its_function_declares_them(model: str) -> None:
    """TVM gives every function of a module one setting; masic builds one module per setting, so a neuron kernel
    whose output may overlap its input never has noalias pointers, whichever kernels share the model."""
    target = host_target()
    declared: dict[str, bool] = {}
    for module in _modules(_kernels(model), target):
        ir = tvm.tirx.build(module, tvm.target.Target(target)).inspect_source("ll")
        for gv in module.functions:
            func = module[gv]
            wanted = bool(func.attrs.get("tirx.noalias", False))
            params = re.search(r"define[^\n]*@" + re.escape(gv.name_hint) + r"\(([^)]*)\)", ir).group(1)
            declared[gv.name_hint] = wanted
            assert ("noalias" in params) == wanted, gv.name_hint
    assert set(declared.values()) == {True, False}  # the model mixes both kinds


def test_the_object_defines_every_kernel_of_both_modules(tmp_path) -> None:
    kernels = _kernels("conv")
    build_object(kernels, host_target(), tmp_path / "kernels.o")
    symbols = subprocess.run(["nm", str(tmp_path / "kernels.o")], capture_output=True, text=True, check=True).stdout
    defined = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    assert {k.symbol for k in kernels} <= defined
