"""The pipeline as tests run it (`masic.driver.plan`), by pass name: `planned` for tests that need a planned graph
(end to end, code generation, frontends, the pipeline's own properties), `prepared` for a pass test's input in the
state its pass requires (the passes before it), so that the test runs its own pass alone (`masic.opt.run_passes`)."""

from __future__ import annotations

from masic.driver import plan
from masic.ir.graph import Graph
from masic.passes import DEFAULT_PIPELINE, PassOptions


def before(name: str) -> tuple[str, ...]:
    """The passes the default pipeline runs before `name`."""
    return DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index(name)]


def prepared(graph: Graph, name: str, options: PassOptions | None = None) -> Graph:
    """The graph as the pass `name` receives it in the default pipeline."""
    return plan(graph, options, passes=before(name)).graph


def planned(graph: Graph, options: PassOptions | None = None, without: tuple[str, ...] = ()) -> Graph:
    """The graph after the default pipeline, less the passes named in `without` (e.g. "fuse-neurons": neurons
    running as their own kernels)."""
    unknown = set(without) - set(DEFAULT_PIPELINE)
    assert not unknown, f"not in the pipeline: {unknown}"
    return plan(graph, options, passes=[name for name in DEFAULT_PIPELINE if name not in without]).graph
