"""A small FileCheck for textual IR tests: `CHECK:` lines match in order, `CHECK-NEXT:` on the very next line,
`CHECK-SAME:` on the line the previous directive matched, `CHECK-NOT:` must not occur between the surrounding
matches. Patterns are plain substrings."""

from __future__ import annotations


def filecheck(text: str, checks: str) -> None:
    lines = text.splitlines()
    position = 0  # index of the next line to search from
    forbidden: list[str] = []
    for raw in checks.strip().splitlines():
        directive, _, pattern = raw.strip().partition(":")
        pattern = pattern.strip()
        if directive == "CHECK-NOT":
            forbidden.append(pattern)
            continue
        if directive == "CHECK-NEXT":
            candidates = range(position, min(position + 1, len(lines)))
        elif directive == "CHECK-SAME":
            candidates = range(max(position - 1, 0), position)
        elif directive == "CHECK":
            candidates = range(position, len(lines))
        else:
            raise ValueError(f"unknown directive in {raw!r}")
        found = next((i for i in candidates if pattern in lines[i]), None)
        if found is None:
            raise AssertionError(f"{directive}: {pattern!r} not found after line {position}:\n{text}")
        for line in lines[position:found]:
            for bad in forbidden:
                assert bad not in line, f"CHECK-NOT: {bad!r} found in {line!r}"
        forbidden = []
        position = found + 1
    for line in lines[position:]:
        for bad in forbidden:
            assert bad not in line, f"CHECK-NOT: {bad!r} found in {line!r}"
