"""Problems and their CSV form: round trips, the lower bound, and one clear error per malformed file."""

from __future__ import annotations

import pytest
from hypothesis import given

from masic.errors import MasicError
from masic.memplan import Interval, MemplanError, Problem, format_csv, parse_csv, read_csv, write_csv
from tests.memplan.cases import DATA, challenging, problems


@given(problems())
def test_csv_round_trip(problem: Problem) -> None:
    assert parse_csv(format_csv(problem)) == problem


def test_solution_csv_is_the_rows_plus_an_offset_column(tmp_path) -> None:
    problem = read_csv(DATA / "minimalloc" / "input.12.csv")
    offsets = {"b1": 0, "b2": 0, "b3": 4, "b4": 4, "b5": 8}
    write_csv(tmp_path / "solution.csv", problem, offsets)
    lines = (tmp_path / "solution.csv").read_text().splitlines()
    assert lines[0] == "id,lower,upper,size,offset"
    assert lines[1] == "b1,0,3,4,0"
    again = read_csv(tmp_path / "solution.csv")
    assert [b.offset for b in again.buffers] == [0, 0, 4, 4, 8]


def test_columns_in_any_order_and_optional_ones() -> None:
    problem = parse_csv("size,id,upper,lower,alignment,offset\n8,x,5,1,4,\n4,y,3,0,2,6\n")
    assert problem.buffers == (Interval("x", 1, 5, 8, 4, None), Interval("y", 0, 3, 4, 2, 6))


def test_benchmark_files_read() -> None:
    assert len(read_csv(challenging("A")).buffers) == 154
    assert len(read_csv(DATA / "idealloc" / "G_1.csv").buffers) == 816
    assert read_csv(DATA / "deep_speech.csv").lower_bound() == 100352


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "t.csv:1: missing header"),
        ("b1,0,3,4\n", "t.csv:1: missing header"),
        ("id,lower,upper\nb1,0,3\n", "t.csv:1: missing header"),
        ("id,lower,upper,size,colour\n", "t.csv:1: unknown column 'colour'"),
        ("id,lower,upper,size,size\n", "t.csv:1: a column appears twice"),
        ("id,lower,upper,size\nb1,0,3,4\nb2,0,x,4\n", "t.csv:3: upper 'x' is not an integer"),
        ("id,lower,upper,size\nb1,0,3,4.5\n", "t.csv:2: size '4.5' is not an integer"),
        ("id,lower,upper,size\nb1,3,3,4\n", "t.csv:2: buffer 'b1': upper 3 <= lower 3"),
        ("id,lower,upper,size\nb1,0,3,-4\n", "t.csv:2: buffer 'b1': negative size -4"),
        ("id,lower,upper,size\nb1,0,3,4\nb1,1,2,4\n", "t.csv:3: duplicate id 'b1' (first on line 2)"),
        ("id,lower,upper,size\nb1,0,3\n", "t.csv:2: expected 4 fields, got 3"),
        ("id,lower,upper,size,alignment\nb1,0,3,4,0\n", "t.csv:2: buffer 'b1': alignment 0 must be at least 1"),
        ("id,lower,upper,size,offset\nb1,0,3,4,-1\n", "t.csv:2: buffer 'b1': negative offset -1"),
        ("id,lower,upper,size\n,0,3,4\n", "t.csv:2: buffer '': an id must be non-empty"),
    ],
)
def test_malformed_csv_names_line_and_fault(text: str, fragment: str) -> None:
    with pytest.raises(MemplanError) as info:
        parse_csv(text, "t.csv")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, MasicError)


def test_unreadable_file(tmp_path) -> None:
    with pytest.raises(MemplanError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")


def test_duplicate_ids_refused_in_code_too() -> None:
    with pytest.raises(MemplanError, match="duplicate buffer id 'a'"):
        Problem((Interval("a", 0, 1, 1), Interval("a", 1, 2, 1)))


def test_lower_bound_is_the_peak_of_live_bytes() -> None:
    # Half-open: [0, 3) and [3, 9) never overlap.
    problem = parse_csv("id,lower,upper,size\na,0,3,4\nb,3,9,5\nc,0,9,2\n")
    assert problem.lower_bound() == 7
    assert Problem(()).lower_bound() == 0


def test_lower_bound_with_alignment_and_fixed_offsets() -> None:
    # Ten 1-byte buffers alive together, every offset a multiple of 64: nine take 64 bytes, the top one 1.
    problem = Problem(tuple(Interval(f"b{i}", 0, 1, 1) for i in range(10)))
    assert problem.lower_bound() == 10
    assert problem.lower_bound(alignment=64) == 9 * 64 + 1
    pinned = Problem((Interval("a", 0, 1, 4, offset=100), Interval("b", 0, 1, 4)))
    assert pinned.lower_bound() == 104
