"""Byte quantities as messages and tables write them (`masic.units.format_bytes`)."""

from __future__ import annotations

import pytest

from masic.units import format_bytes


@pytest.mark.parametrize(("n", "exact", "rounded"), [(1536, "1.5KiB", "1.5KiB"), (1025, "1.0KiB", "1.1KiB")])
def test_figures_are_never_rounded_below_the_bytes_needed(n: int, exact: str, rounded: str) -> None:
    assert format_bytes(n) == exact and format_bytes(n, exact=False) == rounded
