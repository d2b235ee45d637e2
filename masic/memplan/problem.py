"""Static memory-allocation problems: buffers with lifetimes and sizes, and their CSV form.

A problem is a set of buffers, each alive during the half-open interval `[lower, upper)` and `size` bytes long,
optionally with an `alignment` (its offset must be a multiple of it) and a fixed `offset` (pre-placed). A placement
gives every buffer an offset so that two buffers alive at the same time never share a byte; its height is the
largest `offset + size`.

The CSV format is the one MiniMalloc and idealloc share: a header naming the columns `id,lower,upper,size` and
optionally `alignment` and `offset`, in any order, then one buffer a row. A solution is written as the input rows
plus an `offset` column. Reading guarantees a valid `Problem` or a `MemplanError` naming the line and the fault.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from masic.errors import MasicError
from masic.files import InputFileError, read_text

REQUIRED_COLUMNS = ("id", "lower", "upper", "size")
OPTIONAL_COLUMNS = ("alignment", "offset")
# Every offset and height must fit a signed 64-bit integer (the numpy arrays and the C search use int64).
MAX_VALUE = 2**62
_CLOCK_EVERY = 4096  # rows read between deadline checks


class MemplanError(MasicError, ValueError):
    """A malformed memory-planning problem or solution, or a capacity no placement fits."""


@dataclass(frozen=True)
class Interval:
    """One buffer: alive during [lower, upper), `size` bytes, offset a multiple of `alignment`, or fixed at `offset`.

    Construction validates the fields and raises MemplanError naming the buffer.
    """

    id: str
    lower: int
    upper: int
    size: int
    alignment: int = 1
    offset: int | None = None

    def __post_init__(self) -> None:
        fault = self._fault()
        if fault:
            raise MemplanError(f"buffer {self.id!r}: {fault}")

    def _fault(self) -> str | None:
        if not self.id or self.id != self.id.strip() or any(c in self.id for c in ",\r\n"):
            return "an id must be non-empty, without commas, line breaks or surrounding spaces"
        if self.upper <= self.lower:
            return f"upper {self.upper} <= lower {self.lower} (lifetimes are half-open [lower, upper))"
        if self.size < 0:
            return f"negative size {self.size}"
        if self.alignment < 1:
            return f"alignment {self.alignment} must be at least 1"
        if self.offset is not None and self.offset < 0:
            return f"negative offset {self.offset}"
        values = (self.lower, self.upper, self.size, self.alignment, self.offset or 0)
        if any(abs(v) >= MAX_VALUE for v in values):
            return f"a value exceeds 2^62 ({max(values, key=abs)})"
        return None


@dataclass(frozen=True)
class Arrays:
    """A problem as int64 numpy arrays in buffer order: what the heuristics, the checker and the C search consume.

    `alignment` is each buffer's effective alignment: the least common multiple of its own and the default one.
    `fixed` is the fixed offset, or -1.
    """

    lower: np.ndarray
    upper: np.ndarray
    size: np.ndarray
    alignment: np.ndarray
    fixed: np.ndarray

    def __len__(self) -> int:
        return len(self.size)


@dataclass(frozen=True)
class Problem:
    """An allocation problem: buffers with unique ids (checked at construction)."""

    buffers: tuple[Interval, ...]
    _arrays: dict[int, Arrays] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for buf in self.buffers:
            if buf.id in seen:
                raise MemplanError(f"duplicate buffer id {buf.id!r}")
            seen.add(buf.id)
        total = sum(b.size + b.alignment for b in self.buffers)
        if total >= MAX_VALUE:
            raise MemplanError(f"sizes add up to {total}, more than 2^62")

    def __len__(self) -> int:
        return len(self.buffers)

    def arrays(self, alignment: int = 1) -> Arrays:
        """The buffers as numpy arrays, with each alignment combined with the default `alignment` (cached)."""
        if alignment < 1:
            raise MemplanError(f"alignment {alignment} must be at least 1")
        if alignment not in self._arrays:
            bufs = self.buffers
            alignments = [math.lcm(b.alignment, alignment) for b in bufs]
            if max(alignments, default=1) >= MAX_VALUE:
                raise MemplanError(f"alignment {max(alignments)} exceeds 2^62")
            columns = (
                [b.lower for b in bufs],
                [b.upper for b in bufs],
                [b.size for b in bufs],
                alignments,
                [-1 if b.offset is None else b.offset for b in bufs],
            )
            arrays = [np.array(c, dtype=np.int64) for c in columns]
            for a in arrays:
                a.flags.writeable = False  # shared by every caller through the cache
            self._arrays[alignment] = Arrays(*arrays)
        return self._arrays[alignment]

    def lower_bound(self, alignment: int = 1) -> int:
        """A height no placement can beat: the peak over time of the live bytes, sharpened by alignment and fixed
        offsets.

        With alignments, every offset is a multiple of g, the gcd of the effective alignments, so below the topmost
        buffer of any moment each buffer takes its size rounded up to g: the height is at least the peak of the
        rounded sizes less g - 1. A fixed buffer's own end is a bound too.
        """
        if not self.buffers:
            return 0
        arr = self.arrays(alignment)
        bound = peak_live(arr.lower, arr.upper, arr.size)
        g = int(np.gcd.reduce(arr.alignment))
        if g > 1:
            rounded = -(-arr.size // g) * g
            bound = max(bound, peak_live(arr.lower, arr.upper, rounded) - (g - 1))
        fixed = arr.fixed >= 0
        if fixed.any():
            bound = max(bound, int((arr.fixed[fixed] + arr.size[fixed]).max()))
        return bound


def live_profile(lower: np.ndarray, upper: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The live weight over time: (times, live) where live[i] is the summed weight of the intervals alive on
    [times[i], times[i + 1]); times are the distinct endpoints, sorted."""
    times = np.unique(np.concatenate((lower, upper)))
    delta = np.zeros(len(times), dtype=np.int64)
    np.add.at(delta, np.searchsorted(times, lower), weights)
    np.add.at(delta, np.searchsorted(times, upper), -weights)
    return times, np.cumsum(delta)


def peak_live(lower: np.ndarray, upper: np.ndarray, weights: np.ndarray) -> int:
    """The largest summed weight of intervals alive at one moment (0 for no intervals)."""
    return int(live_profile(lower, upper, weights)[1].max(initial=0))


def overlap_degrees(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """For each interval, how many others overlap it in time (half-open lifetimes)."""
    starts, ends = np.sort(lower), np.sort(upper)
    return np.searchsorted(starts, upper) - np.searchsorted(ends, lower, "right") - 1


def read_csv(path: str | Path, deadline: float | None = None) -> Problem:
    """Reads a problem (or a solution, whose offsets become fixed offsets) from a CSV file, UTF-8 text (see
    parse_csv for `deadline`)."""
    path = Path(path)
    try:
        text = read_text(path)  # a regular UTF-8 file: not a FIFO that blocks, not bytes that raise
    except InputFileError as err:
        raise MemplanError(str(err)) from None
    return parse_csv(text, str(path), deadline)


def parse_csv(text: str, source: str = "<csv>", deadline: float | None = None) -> Problem:
    """Parses CSV text; errors read `source:line: problem`. Reading stops with a MemplanError once `deadline` (a
    time.perf_counter() value) has passed: a time limit covers reading the problem too."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise MemplanError(f"{source}:1: missing header: expected {','.join(REQUIRED_COLUMNS)}")
    columns = [c.strip() for c in lines[0].split(",")]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise MemplanError(
            f"{source}:1: missing header: expected columns {','.join(REQUIRED_COLUMNS)}"
            f"[,{','.join(OPTIONAL_COLUMNS)}], got {lines[0].strip()!r}"
        )
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown or len(set(columns)) != len(columns):
        fault = f"unknown column {unknown[0]!r}" if unknown else "a column appears twice"
        raise MemplanError(f"{source}:1: {fault} in header {lines[0].strip()!r}")
    buffers: list[Interval] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if deadline is not None and number % _CLOCK_EVERY == 0 and time.perf_counter() > deadline:
            raise MemplanError(f"{source}:{number}: the time limit passed while reading line {number} of {len(lines)}")
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(columns):
            raise MemplanError(f"{source}:{number}: expected {len(columns)} fields, got {len(fields)}")
        row = dict(zip(columns, fields, strict=True))
        if row["id"] in first_line:
            raise MemplanError(f"{source}:{number}: duplicate id {row['id']!r} (first on line {first_line[row['id']]})")
        first_line[row["id"]] = number
        buffers.append(_interval(row, f"{source}:{number}"))
    return Problem(tuple(buffers))


def _interval(row: dict[str, str], where: str) -> Interval:
    """One CSV row as an Interval; errors are prefixed with `where` (source:line)."""

    def integer(name: str) -> int:
        try:
            return int(row[name])
        except ValueError:
            raise MemplanError(f"{where}: {name} {row[name]!r} is not an integer") from None

    lower, upper, size = integer("lower"), integer("upper"), integer("size")
    alignment = integer("alignment") if "alignment" in row else 1
    offset = integer("offset") if row.get("offset") else None
    try:
        return Interval(row["id"], lower, upper, size, alignment, offset)
    except MemplanError as err:
        raise MemplanError(f"{where}: {err}") from None


def format_csv(problem: Problem, offsets: Mapping[str, int] | None = None) -> str:
    """The problem as CSV; with `offsets`, a solution (the rows plus an `offset` column). Columns `alignment` and
    `offset` appear only when some buffer needs them. parse_csv(format_csv(p)) == p."""
    with_alignment = any(b.alignment != 1 for b in problem.buffers)
    with_offset = offsets is not None or any(b.offset is not None for b in problem.buffers)
    header = list(REQUIRED_COLUMNS) + ["alignment"] * with_alignment + ["offset"] * with_offset
    rows = [",".join(header)]
    for b in problem.buffers:
        fields = [b.id, str(b.lower), str(b.upper), str(b.size)]
        if with_alignment:
            fields.append(str(b.alignment))
        if with_offset:
            offset = offsets[b.id] if offsets is not None else b.offset
            fields.append("" if offset is None else str(offset))
        rows.append(",".join(fields))
    return "\n".join(rows) + "\n"


def write_csv(path: str | Path, problem: Problem, offsets: Mapping[str, int] | None = None) -> None:
    """Writes format_csv(problem, offsets) to `path`."""
    Path(path).write_text(format_csv(problem, offsets))
