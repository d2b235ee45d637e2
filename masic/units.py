"""Byte quantities: read from the command line (64MB is 10^6 bytes, 64MiB 2^20, also 1.5GB, 4096) and written in
messages and tables (1.5KiB)."""

from __future__ import annotations

import re
from fractions import Fraction

from masic.limits import MAX_BYTES

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}


def parse_bytes(text: str) -> int:
    """Parses a byte count with an optional unit; raises ValueError naming the accepted forms."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match[2].lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(
            f"malformed byte count {text!r}: expected a number with an optional unit B, KB, MB, GB, KiB, MiB, GiB"
        )
    # Exact arithmetic, so that the limit holds to the byte; a number longer than any byte count is refused
    # before Python converts its digits
    value = Fraction(match[1]) * _UNITS[unit] if len(match[1]) <= 40 else Fraction(MAX_BYTES + 1)
    if value < 1:
        raise ValueError(f"byte count {text!r} must be at least 1 byte")
    if value > MAX_BYTES:
        raise ValueError(f"byte count {text!r} exceeds the largest masic handles, {MAX_BYTES} bytes (2^63 - 1)")
    return int(value)


def format_bytes(n: int, exact: bool = True) -> str:
    """1536 -> '1.5KiB'; with exact=False rounds up so the printed figure is never below n."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            if not exact:
                value = -(-n * 10 // size) / 10
            return f"{value:.1f}{unit}"
    return f"{n}B"
