"""What every pass shares: its options, its error type, and the registry entry that names it on the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from masic.ir.graph import Graph, Node
from masic.ir.verify import VerifyError
from masic.ir.weight_formats import FLOAT32_WEIGHTS, WeightChoice
from masic.targets.machine import DEFAULT_MACHINE, Machine


@dataclass(frozen=True)
class PassOptions:
    """Options shared by all passes. `budget` is in bytes (None: unbounded); `alignment` of arena offsets;
    `machine`, the target's figures for the cost model; `weights`, the format each layer's weight is stored in."""

    budget: int | None = None
    alignment: int = 16
    machine: Machine = DEFAULT_MACHINE
    weights: WeightChoice = FLOAT32_WEIGHTS

    @property
    def capacity(self) -> int | None:
        """The usable part of the budget: offsets are multiples of the alignment, so arenas are too."""
        return None if self.budget is None else self.budget - self.budget % self.alignment


class PassError(VerifyError):
    """A pass cannot do its job on this graph; names the pass and, where there is one, the node."""

    def __init__(self, pass_name: str, message: str, node: Node | None = None) -> None:
        self.pass_name = pass_name
        super().__init__(f"{pass_name}: {message}", node)


def require_types(graph: Graph, pass_name: str) -> None:
    """Refuses an untyped graph, naming its first untyped node: every pass after infer-shapes requires types."""
    untyped = next((n for n in graph.nodes if n.type is None), None)
    if untyped is not None:
        raise PassError(pass_name, "node has no type; run infer-shapes first", untyped)


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph, PassOptions], Graph]
    summary: str
