"""The pass registry: one module per pass, named as on the command line, each stating what it requires and ensures,
listed by `masic passes` in the order the default pipeline runs them."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import masic.passes
from masic.ir.text import parse
from masic.passes import DEFAULT_PIPELINE, REGISTRY, PassOptions
from masic.passes.base import PassError
from tests.filecheck.test_ir_files import run_masic

NOT_PASSES = ("base", "manager")  # the modules of the package that every pass shares


def _module(name: str):
    return importlib.import_module(f"masic.passes.{name.replace('-', '_')}")


def _doc_lines(name: str, prefix: str) -> str:
    """The paragraph of the pass's docstring that starts with `prefix`, on one line."""
    doc = _module(name).__doc__
    start = doc.index(f"\n{prefix}: ") + 1
    end = min(i for i in (doc.find("\nEnsures: ", start), doc.find("\n\n", start), len(doc)) if i > start)
    return " ".join(doc[start:end].split())


def test_every_pass_module_is_registered_under_its_file_name() -> None:
    modules = {m.name for m in pkgutil.iter_modules(masic.passes.__path__)} - set(NOT_PASSES)
    assert {name.replace("-", "_") for name in REGISTRY} == modules
    for name, entry in REGISTRY.items():
        module = _module(name)
        assert module.NAME == name == entry.name
        assert entry.run is module.run


@pytest.mark.parametrize("name", REGISTRY)
def test_every_pass_states_what_it_does_requires_and_ensures(name: str) -> None:
    doc = _module(name).__doc__
    assert doc.startswith((f"{name}: ", f"{name}{{budget}}: "))
    assert REGISTRY[name].summary == " ".join(doc.split("\n\n")[0].split())
    assert _doc_lines(name, "Requires") and _doc_lines(name, "Ensures")


def test_the_default_pipeline_runs_every_registered_pass_once_in_registry_order() -> None:
    assert tuple(REGISTRY) == DEFAULT_PIPELINE


def test_masic_passes_lists_them_in_pipeline_order_one_line_each() -> None:
    status, out, _ = run_masic(("passes",))
    assert status == 0
    lines = out.splitlines()
    assert [line.split()[1] for line in lines] == list(DEFAULT_PIPELINE)
    assert all(line.startswith("* ") for line in lines)  # each in the pipeline
    assert [line.split(maxsplit=2)[2] for line in lines] == [REGISTRY[name].summary for name in DEFAULT_PIPELINE]


UNTYPED = """graph @untyped timesteps=1 {
  param @fc.w : f32[3,4]
  %in = input() : f32[4]
  %fc = dense(%in) {weight=@fc.w, in_features=4, out_features=3} : ?
  output %fc
}
"""


@pytest.mark.parametrize("name", [name for name in REGISTRY if "typed graph" in _doc_lines(name, "Requires")])
def test_a_pass_that_requires_types_refuses_an_untyped_graph(name: str) -> None:
    with pytest.raises(PassError, match=f"^{name}: node has no type; run infer-shapes first") as info:
        REGISTRY[name].run(parse(UNTYPED), PassOptions(budget=1 << 20))
    assert info.value.node.name == "fc"
