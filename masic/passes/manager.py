"""Pass manager: runs passes by name, verifies after each, and can print, time and dump the IR after each one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from masic.ir.graph import Graph
from masic.ir.text import print_graph
from masic.ir.verify import VerifyError, verify
from masic.passes import REGISTRY
from masic.passes.base import PassError, PassOptions


@dataclass
class PassManager:
    """`print_after_all` writes the IR after each pass through `emit`; `dump_dir` saves it as NN-name.mlir-like text;
    `timings` collects (pass name, seconds)."""

    names: Sequence[str]
    options: PassOptions = field(default_factory=PassOptions)
    print_after_all: bool = False
    dump_dir: Path | None = None
    emit: Callable[[str], None] = print
    timings: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown pass {unknown[0]!r}; known passes: {', '.join(REGISTRY)}")

    def run(self, graph: Graph) -> Graph:
        for index, name in enumerate(self.names):
            start = time.perf_counter()
            graph = REGISTRY[name].run(graph, self.options)
            self.timings.append((name, time.perf_counter() - start))
            try:
                verify(graph)
            except VerifyError as err:
                raise PassError(name, f"produced an invalid graph: {err.message}", err.node) from None
            if self.print_after_all:
                self.emit(f"// ----- IR after {name} -----\n{print_graph(graph)}")
            if self.dump_dir is not None:
                self.dump_dir.mkdir(parents=True, exist_ok=True)
                (self.dump_dir / f"{index:02d}-{name}.ir").write_text(print_graph(graph))
        return graph
