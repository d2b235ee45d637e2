"""Argument types of masic's command line: integers and floats in a range, shapes, byte counts, file names.

Each is an argparse `type`: it returns the parsed value or raises `argparse.ArgumentTypeError` with what was
expected, which the parser prints in one line (exit status 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from masic.limits import MAX_TIMESTEPS
from masic.units import parse_bytes


def shape_arg(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"malformed shape {text!r}: expected integers like 2,16,16") from None
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(f"shape {text!r} must have positive sizes")
    return shape


def budget_arg(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def budget_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected LO:HI, e.g. 16MB:1GB, got {text!r}")
    low_bytes, high_bytes = budget_arg(low), budget_arg(high)
    if not 0 < low_bytes <= high_bytes:
        raise argparse.ArgumentTypeError(f"expected 0 < LO <= HI, got {text!r}")
    return low_bytes, high_bytes


def int_in(low: int, high: int, expected: str) -> Callable[[str], int]:
    """An argparse type for an integer from low to high; `expected` says what was wanted in the error."""

    def parse(text: str) -> int:
        # ASCII digits only ('³' is a digit to str.isdigit, not to int), and few enough for int() to convert
        if not (text.isascii() and text.isdigit() and len(text) <= len(str(high)) and low <= int(text) <= high):
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise argparse.ArgumentTypeError(f"expected {expected} from {low} to {high}, got {shown!r}")
        return int(text)

    return parse


positive_arg = int_in(1, 2**62, "a positive integer")
steps_arg = int_in(1, MAX_TIMESTEPS, "a number of timesteps")  # the limit: masic.limits.MAX_TIMESTEPS


def float_in(low: float, high: float, expected: str, include_low: bool = False, include_high: bool = True):
    """An argparse type for a float in a range, e.g. (0, 1]; `expected` says what was wanted in the error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        above = value >= low if include_low else value > low
        below = value <= high if include_high else value < high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


seconds_arg = float_in(0.0, float("inf"), "a positive number of seconds", include_high=False)
confidence_arg = float_in(0.0, 1.0, "a confidence in (0, 1]")
margin_arg = float_in(0.0, float("inf"), "a margin > 0", include_high=False)
points_arg = float_in(0.0, 100.0, "percentage points from 0 to 100", include_low=True)


def png_arg(text: str) -> Path:
    """A path for a drawing: matplotlib picks the format from the suffix, and masic draws PNGs."""
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png, got {text!r}")
    return Path(text)
