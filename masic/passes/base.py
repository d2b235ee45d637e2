"""What every pass shares: its options, its error type, and the registry entry that names it on the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from masic.ir.graph import Graph, Node
from masic.ir.verify import VerifyError


@dataclass(frozen=True)
class PassOptions:
    """Options shared by all passes. `budget` is in bytes (None: unbounded); `alignment` of arena offsets."""

    budget: int | None = None
    alignment: int = 16

    @property
    def capacity(self) -> int | None:
        """The usable part of the budget: offsets are multiples of the alignment, so arenas are too."""
        return None if self.budget is None else self.budget - self.budget % self.alignment


class PassError(VerifyError):
    """A pass cannot do its job on this graph; names the pass and, where there is one, the node."""

    def __init__(self, pass_name: str, message: str, node: Node | None = None) -> None:
        self.pass_name = pass_name
        super().__init__(f"{pass_name}: {message}", node)


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph, PassOptions], Graph]
    summary: str
