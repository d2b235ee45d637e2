"""What the cost model (`masic.analysis.cost`) knows of a target's machine, and the machine it assumes when no target
gives one. Plain figures: the targets (`masic.targets`) hold one each, the passes receive it in their options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    """What the cost model knows of a target: sustained fp32 multiply-accumulates, memory traffic and file
    reads, per second."""

    macs_per_second: float
    memory_bytes_per_second: float
    read_bytes_per_second: float
    cache_bytes: int = 1 << 20  # the last cache level a core can count on keeping a layer's weights in


# The cost model's machine when no target gives one: a Raspberry Pi 4 class board (1 MB of L2) reading from an SD card.
DEFAULT_MACHINE = Machine(6e9, 4e9, read_bytes_per_second=40e6, cache_bytes=1 << 20)
