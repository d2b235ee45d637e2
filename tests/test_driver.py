"""The driver's stages (`masic.driver`): where `stop_after` stops the pipeline, what the instruments show, and the
build's staging (a `then` runs before the artifact replaces the output folder; a failing one leaves it as it was)."""

from __future__ import annotations

from pathlib import Path

import pytest
from masic.targets import get_target

from masic import driver
from masic.ir.text import parse, print_graph
from masic.manifest import ARTIFACT_FILES
from masic.opt import run_passes
from masic.passes import DEFAULT_PIPELINE, PassOptions
from tests.passes.test_fold_batchnorm import CONV_BN


def test_each_stage_stops_after_its_last_pass() -> None:
    assert driver.passes_until("ir") == ()
    assert driver.passes_until("folded")[-1] == DEFAULT_PIPELINE[DEFAULT_PIPELINE.index("slice-layers") - 1]
    assert driver.passes_until("sliced")[-1] == "patch-rows"
    assert driver.passes_until("layout")[-1] == "layout"
    assert driver.passes_until("plan") == driver.passes_until(None) == DEFAULT_PIPELINE
    assert driver.passes_until("schedule") == DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("schedule") + 1]


def test_stopping_after_a_pass_not_run_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot stop after 'layout'"):
        driver.passes_until("layout", ("infer-shapes", "spike-dtype"))
    with pytest.raises(ValueError, match="cannot stop after 'emit-everything'"):
        driver.passes_until("emit-everything")


@pytest.mark.parametrize("stage", ["ir", "folded", "sliced", "layout", "plan"])
def test_plan_stops_where_the_pass_list_ends(stage: str) -> None:
    graph, options = parse(CONV_BN), PassOptions(budget=4096, alignment=16)
    planned = driver.plan(graph, options, stop_after=stage)
    assert [name for name, _ in planned.timings] == list(driver.passes_until(stage))
    assert print_graph(planned.graph) == print_graph(run_passes(graph, driver.passes_until(stage), options))


def test_instruments_print_dump_and_time_each_pass_and_summarise_the_layout(tmp_path: Path) -> None:
    printed: list[str] = []
    progress: list[str] = []
    instruments = driver.Instruments(True, tmp_path, True, printed.append, progress.append)
    driver.plan(parse(CONV_BN), stop_after="layout", instruments=instruments)
    passes = driver.passes_until("layout")
    assert [text.splitlines()[0] for text in printed] == [f"// ----- IR after {name} -----" for name in passes]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:02d}-{name}.ir" for i, name in enumerate(passes)]
    assert [line.split()[1] for line in progress[:-1]] == list(passes)
    assert all(line.startswith("pass ") and line.endswith(" ms") for line in progress[:-1])
    assert progress[-1].startswith("layout: activations ")


def test_quiet_instruments_show_nothing_and_the_layout_summary_needs_the_layout_pass() -> None:
    progress: list[str] = []
    driver.plan(parse(CONV_BN), stop_after="sliced", instruments=driver.Instruments(progress=progress.append))
    assert progress == []


@pytest.mark.slow
def test_build_runs_then_in_the_staging_folder_and_a_failure_keeps_the_previous_artifact(tmp_path: Path) -> None:
    target = get_target("x86_64")
    graph = driver.plan(parse(CONV_BN), driver.options_for(target)).graph
    out = tmp_path / "out"
    seen: list[Path] = []

    def mark(folder: Path) -> None:
        assert not out.exists() and (folder / "model").is_file()
        seen.append(folder)
        (folder / "calibration.png").write_bytes(b"first")

    manifest = driver.build(graph, target, out, then=mark)
    assert manifest["kernels"] and seen and seen[0] != out
    assert (out / "calibration.png").read_bytes() == b"first"

    def fail(folder: Path) -> None:
        raise RuntimeError("calibration failed")

    with pytest.raises(RuntimeError, match="calibration failed"):
        driver.build(graph, target, out, then=fail)
    assert (out / "calibration.png").read_bytes() == b"first"
    assert sorted(p.name for p in out.iterdir()) == sorted(["calibration.png", *ARTIFACT_FILES])
