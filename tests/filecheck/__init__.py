"""A FileCheck for textual IR tests, after LLVM's (https://llvm.org/docs/CommandGuide/FileCheck.html).

Directives, one a line, optionally behind `//` (as they stand in .ir files):
- `CHECK: pattern` matches at or after the end of the previous match (perhaps later on the same line);
- `CHECK-NEXT:` on the line right after the previous match's line;
- `CHECK-SAME:` on the previous match's line, after it;
- `CHECK-NOT:` must not match between the previous match and the next one (or the end of the block);
- `CHECK-LABEL:` cuts the output into blocks first: each label matches once, in order, and the directives between
  two labels match only in the block between those labels' matches, so one failure cannot spill into the next block.
A pattern is literal text, but for `{{regex}}` (a Python regular expression) and runs of blanks, which match any run
of blanks; leading and trailing blanks are ignored. A failure is an AssertionError that names the directive (file
and line), the pattern, the part of the output searched and the nearest line there, the one holding most of the pattern.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

DIRECTIVES = ("CHECK", "CHECK-NEXT", "CHECK-SAME", "CHECK-NOT", "CHECK-LABEL")
_DIRECTIVE = re.compile(r"^\s*(?://\s*)?(CHECK(?:-[A-Z]+)?):(.*)$")
_BLANKS = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Check:
    """One directive: its kind, the pattern as written and as a regex, and where it is written (`source:line`)."""

    kind: str
    pattern: str
    regex: re.Pattern[str]
    where: str


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Literal text with `{{regex}}` parts; a run of blanks matches any run of blanks."""
    parts, pos = [], 0
    for match in re.finditer(r"\{\{(.*?)\}\}", pattern):
        parts.append(_literal(pattern[pos : match.start()]))
        parts.append(f"(?:{match.group(1)})")
        pos = match.end()
    parts.append(_literal(pattern[pos:]))
    return re.compile("".join(parts))


def _literal(text: str) -> str:
    return r"[ \t]+".join(re.escape(chunk) for chunk in _BLANKS.split(text))


def parse_checks(text: str, source: str = "checks") -> list[Check]:
    """The directives among the lines of `text` (other lines are ignored); a misspelt CHECK-... is an error."""
    checks = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _DIRECTIVE.match(line)
        if match is None:
            continue
        kind, pattern = match.group(1), match.group(2).strip()
        where = f"{source}:{number}"
        if kind not in DIRECTIVES:
            raise ValueError(f"{where}: unknown directive {kind}: (known: {', '.join(DIRECTIVES)})")
        if not pattern:
            raise ValueError(f"{where}: {kind}: has an empty pattern")
        checks.append(Check(kind, pattern, compile_pattern(pattern), where))
    return checks


class _Output:
    """The text checked, with the line of every offset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_of(self, offset: int) -> int:
        """0-based line holding `offset`."""
        low, high = 0, len(self.starts) - 1
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.starts[mid] <= offset else (low, mid - 1)
        return low

    def line_span(self, line: int) -> tuple[int, int]:
        """[start, end) of a 0-based line, without its newline; an empty span past the last line."""
        if line >= len(self.starts):
            return len(self.text), len(self.text)
        end = self.text.find("\n", self.starts[line])
        return self.starts[line], len(self.text) if end < 0 else end

    def excerpt(self, start: int, end: int) -> str:
        first, last = self.line_of(start), self.line_of(max(start, end - 1))
        return f"lines {first + 1}-{last + 1}" if last > first else f"line {first + 1}"

    def nearest(self, pattern: str, start: int, end: int) -> str:
        """The line of [start, end) holding most of the pattern's characters in order (the first such), numbered."""
        first, last = self.line_of(start), self.line_of(max(start, end - 1))
        lines = [(n, self.text[slice(*self.line_span(n))]) for n in range(first, last + 1)]
        if not lines or start >= end:
            return "(nothing was searched)"
        plain = re.sub(r"\{\{.*?\}\}", "", pattern)

        def shared(line: str) -> int:
            blocks = difflib.SequenceMatcher(None, plain, line, autojunk=False).get_matching_blocks()
            return sum(block.size for block in blocks)

        number, line = max(lines, key=lambda nl: shared(nl[1]))
        return f"{number + 1}: {line}"


def _fail(check: Check, output: _Output, start: int, end: int, problem: str) -> AssertionError:
    return AssertionError(
        f"{check.where}: {check.kind}: {problem}\n"
        f"  pattern: {check.pattern}\n"
        f"  searched: {output.excerpt(start, end)} of the output\n"
        f"  nearest line: {output.nearest(check.pattern, start, end)}"
    )


def _blocks(checks: list[Check], output: _Output) -> list[tuple[list[Check], int, int]]:
    """The checks between labels with the part of the output each group may match in: [start, end)."""
    groups: list[list[Check]] = [[]]
    for check in checks:
        if check.kind == "CHECK-LABEL":
            groups.append([])
        groups[-1].append(check)
    bounds, pos = [0], 0
    for group in groups[1:]:
        label = group[0]
        match = label.regex.search(output.text, pos)
        if match is None:
            raise _fail(label, output, pos, len(output.text), "label not found")
        bounds.append(match.start())
        pos = match.end()
    bounds.append(len(output.text))
    return [(group, bounds[k], bounds[k + 1]) for k, group in enumerate(groups)]


def filecheck(text: str, checks: str | list[Check], source: str = "checks") -> None:
    """Raises AssertionError unless `text` satisfies the directives (a string of them, or `parse_checks`'s list)."""
    checks = parse_checks(checks, source) if isinstance(checks, str) else checks
    if not any(check.kind != "CHECK-NOT" for check in checks):
        raise ValueError(f"{source}: no CHECK directive to match")
    output = _Output(text)
    for group, start, end in _blocks(checks, output):
        _check_block(group, output, start, end)


def _check_block(checks: list[Check], output: _Output, start: int, end: int) -> None:
    pos = start  # where the previous match ended
    matched = False  # whether a positive directive matched in this block yet
    forbidden: list[Check] = []
    for check in checks:
        if check.kind == "CHECK-NOT":
            forbidden.append(check)
            continue
        if check.kind in ("CHECK-NEXT", "CHECK-SAME") and not matched:
            raise ValueError(f"{check.where}: {check.kind}: needs a match before it in its block")
        if check.kind == "CHECK-NEXT":
            lo, hi = output.line_span(output.line_of(pos) + 1)
            hi = min(hi, end)
            problem = f"not found on the line after line {output.line_of(pos) + 1}"
        elif check.kind == "CHECK-SAME":
            lo, hi = pos, min(output.line_span(output.line_of(pos))[1], end)
            problem = f"not found on line {output.line_of(pos) + 1} after the previous match"
        else:
            lo, hi = pos, end
            problem = "not found"
        match = check.regex.search(output.text, lo, hi) if lo <= hi else None
        if match is None:
            raise _fail(check, output, lo, hi, problem)
        _refuse(forbidden, output, pos, match.start())
        forbidden, pos, matched = [], match.end(), True
    _refuse(forbidden, output, pos, end)


def _refuse(forbidden: list[Check], output: _Output, start: int, end: int) -> None:
    for check in forbidden:
        found = check.regex.search(output.text, start, end)
        if found is not None:
            line = output.line_of(found.start())
            text = output.text[slice(*output.line_span(line))]
            raise AssertionError(
                f"{check.where}: CHECK-NOT: excluded pattern {check.pattern!r} found\n  {line + 1}: {text}"
            )
