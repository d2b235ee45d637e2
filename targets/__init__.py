"""Targets: what masic can compile for, one description each.

A target says how TVM generates kernels (an LLVM target as TVM's JSON dict), which C compiler links the static
executable, and how to run that executable on this machine (natively, or under qemu-aarch64). No tvm import here:
the host CPU name is filled in by the code generator when `llvm` asks for detection.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from masic.targets.machine import DEFAULT_MACHINE, Machine

from masic.errors import MasicError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    llvm: Mapping[str, object]  # TVM target JSON; "mcpu": "host" means: detect this machine's CPU
    cc: str
    emulator: tuple[str, ...] = ()  # prefix that runs the executable here; empty: runs natively
    cflags: tuple[str, ...] = field(default=("-O2", "-std=c11", "-static"))
    alignment: int = 64  # arena offsets: a cache line, and a multiple of every vector width used
    machine: Machine = DEFAULT_MACHINE  # the cost model's compute and storage figures

    @property
    def is_host(self) -> bool:
        return self.llvm.get("mcpu") == "host"

    @property
    def arch(self) -> str:
        """The machine name `uname -m` prints on a device that runs this target's executables."""
        return str(self.llvm["mtriple"]).split("-")[0]


_AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}

TARGETS: Mapping[str, Target] = MappingProxyType(
    {
        t.name: t
        for t in (
            Target(
                "aarch64",
                "generic ARMv8-A with NEON (any 64-bit Raspberry Pi or phone)",
                _AARCH64,
                "aarch64-linux-gnu-gcc",
                ("qemu-aarch64",),
            ),
            Target(
                "cortex-a72",
                "Raspberry Pi 4 (Cortex-A72)",
                {**_AARCH64, "mcpu": "cortex-a72"},
                "aarch64-linux-gnu-gcc",
                ("qemu-aarch64",),
            ),
            Target(
                "cortex-a76",
                "Raspberry Pi 5 (Cortex-A76)",
                # the dot-product extension (sdot/udot) of ARMv8.2, which the Cortex-A76 has
                {**_AARCH64, "mcpu": "cortex-a76", "mattr": ["+neon", "+dotprod"]},
                "aarch64-linux-gnu-gcc",
                ("qemu-aarch64",),
                machine=Machine(
                    macs_per_second=20e9, memory_bytes_per_second=10e9, read_bytes_per_second=90e6, cache_bytes=2 << 20
                ),  # SD card; the Cortex-A76 cluster's 2 MB L3
            ),
            Target(
                "x86_64",
                "this x86-64 machine (kernels tuned for its CPU)",
                {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "host"},
                "cc",
                machine=Machine(50e9, 10e9, read_bytes_per_second=2e9, cache_bytes=2 << 20),  # NVMe; 2 MB L2 per core
            ),
        )
    }
)
ALIASES = MappingProxyType({"host": "x86_64", "arm64": "aarch64", "rpi4": "cortex-a72", "rpi5": "cortex-a76"})


class TargetError(MasicError, ValueError):
    """An unknown target, or one this machine cannot build for."""


def get_target(name: str) -> Target:
    """Looks a target up by name or alias; raises TargetError naming the choices."""
    key = ALIASES.get(name, name)
    if key not in TARGETS:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join([*TARGETS, *ALIASES])}")
    if key == "x86_64" and platform.machine() not in ("x86_64", "AMD64"):
        raise TargetError(f"target x86_64 builds for this machine, which is {platform.machine()}")
    return TARGETS[key]
