"""The compiler's stages, one function each: what `masic compile` runs, and what the budget sweep, the minimum-budget
search, the tests and the benchmarks call instead of rebuilding pieces of it.

    graph = import_model("model.pt", ImportOptions(input_shape=(1, 8, 8)))   # a frontend: model file -> IR
    planned = plan(graph, options_for(target, budget)).graph                  # the pass pipeline -> a planned graph
    manifest = build(planned, target, Path("out"))                            # kernels + loader -> the artifact

`plan` runs the default pipeline (or the passes it is given) through `stop_after`: a pass name, or a stage of
`STAGES` ("ir": no pass, "folded": the graph as slice-layers receives it, "sliced", "layout", "plan": every pass).
`masic compile --emit` prints these stages, "ir" straight from `import_model`, and "c", the generated C of one
timestep (`emit_c`). `Instruments` observe the passes: the IR after each one printed or dumped to files, and each
pass's seconds (which also come back with the result). `build` writes the artifact atomically: it is built in a
sibling folder that replaces the output folder in one step (`masic.codegen.artifact.staged`), after `then` (the
calibration of `masic compile --calibrate`) has run on it.

The stages print nothing of their own: long steps report through a `progress` callback, one line at a time. TVM is
imported only by `build` and `emit_c`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from masic.early_exit import ExitRule
from masic.frontends.dispatch import ImportOptions
from masic.frontends.dispatch import import_model as import_with_frontend
from masic.ir.graph import Graph
from masic.ir.weight_formats import FLOAT32_WEIGHTS, WeightChoice
from masic.manifest import ESTIMATES
from masic.passes import DEFAULT_PIPELINE, PassOptions
from masic.passes.layout import summary as layout_summary
from masic.passes.manager import PassManager
from masic.targets import Target

Progress = Callable[[str], None]


def quiet(message: str) -> None:
    """A progress callback that shows nothing."""


# The stages `plan` can stop after, by the last pass each one runs (None: none).
STAGES: Mapping[str, str | None] = MappingProxyType(
    {
        "ir": None,
        "folded": DEFAULT_PIPELINE[DEFAULT_PIPELINE.index("slice-layers") - 1],
        "sliced": "patch-rows",
        "layout": "layout",
        "plan": DEFAULT_PIPELINE[-1],
    }
)


@dataclass(frozen=True)
class Instruments:
    """What `plan` shows while the passes run: the IR after each pass through `emit` (`print_after_all`) and as
    DIR/NN-pass.ir files (`dump_dir`), and, through `progress`, each pass's time (`time_passes`) and the layout
    pass's one-line summary."""

    print_after_all: bool = False
    dump_dir: Path | None = None
    time_passes: bool = False
    emit: Callable[[str], None] = print
    progress: Progress = quiet


@dataclass(frozen=True)
class Planned:
    """A graph after the passes `plan` ran, and the seconds each one took, in the order they ran."""

    graph: Graph
    timings: tuple[tuple[str, float], ...]


def import_model(spec: str, options: ImportOptions | None = None, progress: Progress = quiet) -> Graph:
    """The IR of one timestep of the model `spec` (a file or package.module:factory), read by the frontend its kind
    calls for (`masic.frontends.dispatch`)."""
    progress(f"importing {spec}")
    return import_with_frontend(spec, options or ImportOptions())


def options_for(target: Target, budget: int | None = None, weights: WeightChoice = FLOAT32_WEIGHTS) -> PassOptions:
    """The passes' options for compiling for `target` within `budget` bytes (None: no limit), storing each layer's
    weight as `weights` chooses."""
    return PassOptions(budget, target.alignment, target.machine, weights)


def passes_until(stop_after: str | None, passes: Sequence[str] = DEFAULT_PIPELINE) -> tuple[str, ...]:
    """The passes of `passes`, in order, through `stop_after`: a stage of `STAGES` or a pass name (None: all)."""
    if stop_after is None:
        return tuple(passes)
    last = STAGES.get(stop_after, stop_after)
    if last is None:
        return ()
    if last not in passes:
        raise ValueError(f"cannot stop after {stop_after!r}: neither a stage ({', '.join(STAGES)}) nor a pass run")
    return tuple(passes[: list(passes).index(last) + 1])


def plan(
    graph: Graph,
    options: PassOptions | None = None,
    *,
    stop_after: str | None = None,
    passes: Sequence[str] = DEFAULT_PIPELINE,
    instruments: Instruments = Instruments(),
) -> Planned:
    """The graph after `passes` (the default pipeline) through `stop_after`, each verified after it runs, with
    `options` (default: no budget, the default machine). A pass that refuses the graph raises its PassError; a
    budget that no plan meets, `masic.passes.check_budget.BudgetError`."""
    names = passes_until(stop_after, passes)
    manager = PassManager(
        names,
        options or PassOptions(),
        print_after_all=instruments.print_after_all,
        dump_dir=instruments.dump_dir,
        emit=instruments.emit,
    )
    planned = manager.run(graph)
    if instruments.time_passes:
        for name, seconds in manager.timings:
            instruments.progress(f"pass {name:<16} {seconds * 1e3:8.2f} ms")
    if "layout" in names:
        instruments.progress(layout_summary(planned))
    return Planned(planned, tuple(manager.timings))


def emit_c(graph: Graph, exit_rule: ExitRule | None = None) -> str:
    """model.c of a planned graph: the generated C of one timestep that `build` compiles (`--emit c`)."""
    from masic.codegen.artifact import generate_c
    from masic.manifest import WEIGHTS_FILE
    from masic.workdirs import BUILD_PREFIX, scratch

    with scratch(BUILD_PREFIX) as folder:
        return generate_c(graph, exit_rule or ExitRule(), folder / WEIGHTS_FILE)[0]


def build(
    graph: Graph,
    target: Target,
    output: Path,
    exit_rule: ExitRule | None = None,
    budget: int | None = None,
    progress: Progress = quiet,
    then: Callable[[Path], None] | None = None,
    planned_by: str = ESTIMATES,
) -> dict[str, object]:
    """Builds the artifact of a planned graph (kernels, loader, weights.bin, manifest.json) in a staging folder,
    runs `then` on that folder, and puts it in the place of `output` (missing, empty or a previous artifact) in
    one step; returns the manifest. `exit_rule` is compiled in (default: every timestep runs) and `budget`
    recorded in the manifest, with `planned_by`: where the cost model's figures came from."""
    from masic.codegen.artifact import build_artifact, staged

    with staged(output) as folder:
        manifest = build_artifact(graph, target, folder, exit_rule or ExitRule(), budget, progress, planned_by)
        if then is not None:
            then(folder)
    return manifest
