"""Static memory planning: place buffers with known lifetimes and sizes in as little memory as possible.

    from masic.memplan import read_csv, solve
    solution = solve(read_csv("problem.csv"), capacity=1 << 20, timeout=10)

See solver.py for the portfolio (heuristics, then an exact search in C), check.py for the independent checker.
"""

from masic.memplan.check import check
from masic.memplan.exact import ExactResult, Status, exact_search
from masic.memplan.heuristics import PORTFOLIO, Placement, Strategy, greedy_first_fit, place
from masic.memplan.problem import (
    Interval,
    MemplanError,
    Problem,
    format_csv,
    parse_csv,
    read_csv,
    write_csv,
)
from masic.memplan.solver import Solution, solve

__all__ = [
    "PORTFOLIO",
    "ExactResult",
    "Interval",
    "MemplanError",
    "Placement",
    "Problem",
    "Solution",
    "Status",
    "Strategy",
    "check",
    "exact_search",
    "format_csv",
    "greedy_first_fit",
    "parse_csv",
    "place",
    "read_csv",
    "solve",
    "write_csv",
]
