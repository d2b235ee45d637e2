"""The FileCheck the .ir cases rely on: each directive passes where it should and fails, clearly, where it should
not."""

from __future__ import annotations

import pytest

from tests.filecheck import filecheck

OUTPUT = """graph @g timesteps=2 {
  %in = input() : f32[4]
  %fc = dense(%in) {weight=@fc.w, in_features=4, out_features=3} : f32[3]
  %z = lif(%fc) {v_th=0.5, fused=true} : spike[3]
  output %z
}
plan arena=128 align=64 lower_bound=96 {
  buffer @fc.w weight size=48 live=[0,3) offset=0
  value %z -> z
}
"""


@pytest.mark.parametrize(
    "checks",
    [
        "CHECK: %fc = dense(%in)\nCHECK-SAME: out_features=3\nCHECK-NEXT: %z = lif",
        "CHECK: dense\nCHECK: in_features=4",  # the rest of the line after a match is searched too
        "CHECK: %z = lif(%fc) {{.*}} : spike[3]",
        "CHECK: arena={{[0-9]+}} align=64",
        "CHECK: %fc = dense(%in)    {weight=@fc.w,",  # runs of blanks match any run of blanks
        "CHECK: input\nCHECK-NOT: conv2d\nCHECK: output %z",
        "// CHECK-LABEL: graph @g\n// CHECK: lif\n// CHECK-LABEL: plan arena\n// CHECK-NEXT: buffer @fc.w",
        "CHECK-LABEL: plan arena\nCHECK-NOT: lif",  # the label's block starts at its match
    ],
)
def test_checks_that_hold(checks: str) -> None:
    filecheck(OUTPUT, checks)


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ("CHECK: %fc = conv2d(%in)", r"(?s)checks:1: CHECK: not found\n.*nearest line: 3:   %fc = dense\(%in\)"),
        ("CHECK: %in = input\nCHECK-NEXT: %z = lif", r"checks:2: CHECK-NEXT: not found on the line after line 2"),
        ("CHECK: %fc = dense\nCHECK-SAME: v_th", r"CHECK-SAME: not found on line 3 after the previous match"),
        ("CHECK: out_features=3\nCHECK-SAME: weight=", "CHECK-SAME: not found"),  # only after the match
        ("CHECK: input\nCHECK-NOT: fused\nCHECK: output", r"CHECK-NOT: excluded pattern 'fused' found\n  4: "),
        ("CHECK: plan\nCHECK-NOT: value", "excluded pattern 'value' found"),  # up to the end of the output
        ("CHECK: lif\nCHECK: dense", "CHECK: not found"),  # in order
        ("CHECK: %z = lif(%fc) {{.*}} : f32", "not found"),
        ("CHECK-LABEL: graph @g\nCHECK: buffer\nCHECK-LABEL: plan arena", "checks:2: CHECK: not found"),
        ("CHECK-LABEL: graph @h", "checks:1: CHECK-LABEL: label not found"),
    ],
)
def test_checks_that_fail_say_where_and_why(checks: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        filecheck(OUTPUT, checks)


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ("CHECK-NXT: lif", "unknown directive CHECK-NXT"),
        ("CHECK:   ", "empty pattern"),
        ("CHECK-NOT: conv2d", "no CHECK directive"),
        ("CHECK-NEXT: graph", "needs a match before it"),
    ],
)
def test_malformed_checks_are_refused(checks: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        filecheck(OUTPUT, checks)
