"""What the cost model (`masic.analysis.cost`) knows of a target's machine, and the machine it assumes when no target
gives one. Plain figures: the targets (`masic.targets`) hold one each, the passes receive it in their options. A
machine planned from a profile (`masic compile --profile`) also carries what the device measured (`Measured`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Measured:
    """Kernel times a device measured (`masic.profile.measured_machine`): seconds per timestep of each kernel call
    site by its description key (`masic.analysis.kernel_key.site_key`), at `threads` threads, and `scale`, the
    median over those call sites of measured / estimated time, by which the cost model's estimate of a call with no
    measured match is multiplied; `overhead_seconds`, the time of one inference spent outside the kernels and the
    waits for reads (the loop, reading the input, writing the output), which the plan adds once per inference;
    `wait_per_load_seconds`, the kernels' measured wait per streamed weight read beyond what the read bandwidth
    explains (handing each piece over from the loading thread costs time even when the bandwidth keeps up), which
    the plan adds per read."""

    seconds: Mapping[str, float] = field(hash=False)
    scale: float = 1.0
    threads: int = 1
    overhead_seconds: float = 0.0
    wait_per_load_seconds: float = 0.0


@dataclass(frozen=True)
class Machine:
    """What the cost model knows of a target: sustained fp32 multiply-accumulates, memory traffic and file
    reads, per second; and, planned from a profile, the measured kernel times (None: estimates only)."""

    macs_per_second: float
    memory_bytes_per_second: float
    read_bytes_per_second: float
    cache_bytes: int = 1 << 20  # the last cache level a core can count on keeping a layer's weights in
    measured: Measured | None = None


# The cost model's machine when no target gives one: a Raspberry Pi 4 class board (1 MB of L2) reading from an SD card.
DEFAULT_MACHINE = Machine(6e9, 4e9, read_bytes_per_second=40e6, cache_bytes=1 << 20)
