"""Memory reports: buffer labels by layer, the table, the timeline picture, and `masic inspect`."""

from __future__ import annotations

from pathlib import Path

import pytest
from masic.frontends.norse import import_norse

from examples.digits import digits_model
from masic.ir.names import param, state, value
from masic.passes import PassOptions
from masic.report import buffer_labels, buffer_table, draw_timeline, plan_rows
from tests.artifacts import compile_model, masic_cli
from tests.norse_models import MODELS
from tests.pipelines import planned


def _planned(factory, shape, alignment: int = 64, without: tuple[str, ...] = ()):
    graph = import_norse(factory(), shape, timesteps=4)
    return planned(graph, PassOptions(alignment=alignment), without)


def test_labels_name_the_layers_sharing_a_buffer() -> None:
    labels = buffer_labels(_planned(*MODELS["dense"], without=("fuse-neurons",)))
    assert labels[param("0.weight")] == "model.0 (Linear)"
    assert labels[state("1", "v")] == "model.1 (LIFCell)"
    assert labels[value("3")] == "model.3 (Linear) / model.4 (LICell)"  # the LI updates over the dense output
    assert labels[value("1")] == "model.1 (LIFCell)"  # one-byte spikes are not written over the float32 dense output


def test_table_lists_every_buffer_sorted_by_offset() -> None:
    graph = _planned(*MODELS["conv"])
    rows = plan_rows(graph)
    lines = buffer_table(rows).splitlines()
    assert len(lines) == len(graph.plan.buffers) + 1
    offsets = [int(line.split()[3]) for line in lines[1:]]
    assert offsets == sorted(offsets)


def test_timeline_is_a_png(tmp_path: Path) -> None:
    graph = _planned(*MODELS["conv"])
    path = tmp_path / "m.png"
    draw_timeline(plan_rows(graph), path, "conv", graph.plan.arena_bytes, graph.plan.lower_bound, 10**6)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("factory", "shape"), [*MODELS.values(), (digits_model, (1, 8, 8))], ids=[*MODELS, "digits"])
def test_every_test_model_is_planned_at_its_lower_bound(factory, shape) -> None:
    plan = _planned(factory, shape).plan
    assert plan.arena_bytes == plan.lower_bound


@pytest.mark.slow
def test_inspect_prints_the_plan_and_draws_it(tmp_path: Path) -> None:
    factory, shape = MODELS["conv"]
    out = compile_model(factory(), shape, "x86_64", tmp_path, "--report", str(tmp_path / "report"))
    result = masic_cli("inspect", str(out))
    assert result.returncode == 0, result.stderr
    assert "ratio 1.000" in result.stdout and "model.2 (LIFCell)" in result.stdout
    assert (out / "memory.png").exists()
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["buffers.txt", "memory.png", "plan.ir"]
    recompiled = compile_model(factory(), shape, "x86_64", tmp_path)  # memory.png does not block a rebuild
    assert recompiled == out
