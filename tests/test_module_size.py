"""No module of masic (with its frontends and targets) grows past 600 lines: a larger one holds more than one concern
and is split along its seams (issue 15)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def test_every_module_is_at_most_600_lines() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for folder in ("masic", "frontends", "targets")
        for path in (REPO / folder).rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}
