"""Lowering: which kernel each new op gets, and where a delay's state is written."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from masic.codegen.kernels import AdaptiveAvgPool2dKernel, Conv2dKernel, DenseKernel, Pool2dKernel
from masic.codegen.lower import lower
from masic.ir.graph import Param, TensorType
from masic.ir.text import parse
from tests.pipelines import planned

GRAPH = """graph @lowered timesteps=2 {
  param @t.threshold : f32[8]
  %in = input() : f32[2,4,4]
  %even = adaptive_avgpool2d(%in) {output=(2,2)} : f32[2,2,2]
  %uneven = adaptive_avgpool2d(%in) {output=(3,3)} : f32[2,3,3]
  %flat = flatten(%even) : f32[8]
  %prev = delay() {source="sum"} : f32[8]
  %sum = add(%flat, %prev) : f32[8]
  %t = threshold(%sum) {threshold=@t.threshold} : f32[8]
  %s = scale(%t) {factor=0.5} : f32[8]
  %back = reshape(%s) {shape=(2,2,2)} : f32[2,2,2]
  %out = sumpool2d(%back) {kernel=(2,2), stride=(2,2), padding=(0,0)} : f32[2,1,1]
  output %out
}
"""


def _lowered() -> tuple[tuple, tuple]:
    graph = parse(GRAPH, {"t.threshold": np.linspace(0, 1, 8, dtype=np.float32)})
    return lower(planned(graph))


def test_each_op_gets_its_kernel() -> None:
    kernels, calls = _lowered()
    by_node = {call.node.name: kernels[[k.symbol for k in kernels].index(call.symbol)] for call in calls}
    assert by_node["even"] == Pool2dKernel(by_node["even"].symbol, "avg", (2, 4, 4), (2, 2), (2, 2))
    assert isinstance(by_node["uneven"], AdaptiveAvgPool2dKernel) and by_node["uneven"].output == (3, 3)
    assert by_node["t"].fn == "threshold" and by_node["t"].constant is None  # per-element threshold argument
    assert by_node["s"].fn == "scale" and by_node["s"].constant == 0.5
    assert by_node["out"].kind == "sum"
    assert "flat" not in by_node and "back" not in by_node  # views: no kernel


def test_a_delay_is_read_before_and_written_right_after_its_source() -> None:
    _, calls = _lowered()
    order = [(call.node.name, call.note) for call in calls]
    read = order.index(("prev", ""))
    write = order.index(("prev", "delay state %prev.last <- %sum"))
    assert read < order.index(("sum", "")) == write - 1
    assert len({call.symbol for call in calls if call.node.name == "prev"}) == 1, "read and write share one copy"


def test_a_one_by_one_convolution_of_a_one_by_one_map_runs_as_a_dense_kernel() -> None:
    """Its (O, I, 1, 1) weight is a row-major (O, I) matrix, so the dense kernel reads it as it is; on a larger
    map the convolution keeps its own kernel."""
    text = """graph @pointwise timesteps=1 {
  param @a.w : f32[6,4,1,1]
  param @a.b : f32[6]
  param @b.w : f32[3,4,1,1]
  %in = input() : f32[4,1,1]
  %a = conv2d(%in) {weight=@a.w, bias=@a.b, out_channels=6, kernel=(1,1), stride=(1,1), padding=(0,0), dilation=(1,1), groups=1} : f32[6,1,1]
  %wide = adaptive_avgpool2d(%in) {output=(2,2)} : f32[4,2,2]
  %b = conv2d(%wide) {weight=@b.w, out_channels=3, kernel=(1,1), stride=(1,1), padding=(0,0), dilation=(1,1), groups=1} : f32[3,2,2]
  output %b
}
"""
    rng = np.random.default_rng(0)
    weights = {
        name: rng.normal(size=shape).astype(np.float32)
        for name, shape in (("a.w", (6, 4, 1, 1)), ("a.b", (6,)), ("b.w", (3, 4, 1, 1)))
    }
    graph = planned(parse(text, weights))
    kernels, calls = lower(graph)
    by_node = {call.node.name: kernels[[k.symbol for k in kernels].index(call.symbol)] for call in calls}
    assert by_node["a"] == DenseKernel(by_node["a"].symbol, 4, 6, True)
    assert isinstance(by_node["b"], Conv2dKernel)


def test_kernel_descriptions_and_lowering_import_no_tvm() -> None:
    """Lowering, analyses and benchmarks read kernel descriptions without TVM; only masic.codegen.tir builds TIR."""
    code = (
        "import sys, masic.codegen.kernels, masic.codegen.lower, masic.ir.interpret, masic.passes\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'tvm'], 'tvm imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_kernel_reaches_past_a_value() -> None:
    """The last guard behind the shape rules: a kernel that would read more of a weight than weights.bin holds
    for it (here a per-element threshold declared half as long after planning, past the verifier) stops lowering."""
    graph = parse(GRAPH, {"t.threshold": np.linspace(0, 1, 8, dtype=np.float32)})
    shortened = dataclasses.replace(planned(graph), params=(Param("t.threshold", TensorType((4,))),))
    with pytest.raises(AssertionError, match=r"reaches 32 bytes into @t\.threshold, which holds 16"):
        lower(shortened)
