"""Convolutions whose weights are stored in blocks of output channels ("OIHW{ob}o"): the stored layout round trips
to the logical one, and the kernel vectorised along output channels computes what PyTorch does for random shapes
(kernel size, stride, padding, row padding, dilation, groups, channel counts, blocks that are no multiple of the
vector lanes)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.codegen.build import host_target
from masic.codegen.kernels import Conv2dKernel
from masic.codegen.tir import prim_func
from masic.codegen.weights import stored_weight
from masic.ir.shapes import ShapeError, weight_block
from tests.codegen.test_kernels import _check, _conv_case, _run

_symbols = itertools.count()


def _logical(stored: np.ndarray) -> np.ndarray:
    """The inverse of stored_weight for a blocked layout, written independently: element by element."""
    blocks, i, kh, kw, block = stored.shape
    out = np.empty((blocks * block, i, kh, kw), stored.dtype)
    for o in range(blocks * block):
        out[o] = stored[o // block, :, :, :, o % block]
    return out


@given(
    st.integers(1, 6).flatmap(lambda blocks: st.tuples(st.just(blocks), st.sampled_from([1, 3, 4, 16]))),
    st.integers(1, 5),
    st.sampled_from([(1, 1), (3, 3), (2, 5)]),
)
def test_stored_weight_round_trips(blocking: tuple[int, int], inputs: int, kernel: tuple[int, int]) -> None:
    blocks, block = blocking
    w = np.random.default_rng(blocks).standard_normal((blocks * block, inputs, *kernel)).astype(np.float32)
    stored = stored_weight(w, f"OIHW{block}o")
    assert stored.shape == (blocks, inputs, *kernel, block) and stored.nbytes == w.nbytes
    np.testing.assert_array_equal(_logical(stored), w)
    assert stored_weight(w, "OIHW") is w


def test_layouts_are_checked() -> None:
    assert (weight_block("OIHW"), weight_block("OIHW16o")) == (1, 16)
    for bad in ("NCHW", "OIHW0o", "OIHW16", "OIHWo"):
        with pytest.raises(ShapeError, match="unknown conv weight layout"):
            weight_block(bad)
    with pytest.raises(ValueError, match="does not divide"):
        stored_weight(np.zeros((24, 2, 3, 3), np.float32), "OIHW16o")
    with pytest.raises(ValueError, match="splits a group"):
        Conv2dKernel("c", (8, 4, 4), 32, (3, 3), groups=4, weight_layout="OIHW16o")
    kernel = Conv2dKernel("c", (8, 4, 4), 32, (3, 3), groups=2, weight_layout="OIHW16o")
    assert kernel.weight_shape() == (2, 4, 3, 3, 16)


@st.composite
def blocked_convs(draw: st.DrawFn) -> Conv2dKernel:
    """A random convolution with blocked weights whose output is not empty."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    block = draw(st.sampled_from([1, 3, 4, 8, 10, 16, 32]))
    out_channels = groups * block * draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 6))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    rows = draw(st.none() | st.tuples(st.integers(0, 2), st.integers(0, 2)))  # a row patch's own row padding
    top, bottom = rows or (padding[0], padding[0])
    # big enough for one window: H + top + bottom >= dilated kernel height, likewise W
    height = max(1, dilation[0] * (kernel[0] - 1) + 1 - top - bottom) + draw(st.integers(0, 6))
    width = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 6))
    return Conv2dKernel(
        f"conv_prop_{next(_symbols)}",
        (in_channels, height, width),
        out_channels,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        draw(st.booleans()),
        rows,
        f"OIHW{block}o",
    )


@pytest.mark.slow
@settings(max_examples=4)
@given(kernels=st.lists(blocked_convs(), min_size=8, max_size=8))
def test_blocked_kernel_matches_torch(kernels: list[Conv2dKernel], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each example builds eight kernels into one object (a build per kernel would take most of the time)."""
    rng = np.random.default_rng(0)
    cases = [_conv_case(rng, k) for k in kernels]
    work = _run(cases, host_target(), ["cc"], [], tmp_path_factory.mktemp("blocked"))
    for case in cases:
        _check(case, Path(work))


def test_each_parallel_task_has_its_own_accumulators() -> None:
    """The accumulator tile is allocated inside the parallel closure: allocated outside it, the threads would
    share it (wrong results, and no speedup from the second thread)."""
    kernel = Conv2dKernel("c", (256, 4, 4), 512, (3, 3), padding=(1, 1), weight_layout="OIHW16o")
    module = tvm.IRModule({"c": prim_func(kernel, 16)})
    llvm = tvm.tirx.build(module, tvm.target.Target(host_target())).inspect_source("ll")
    exported = llvm.split("define dllexport i32 @c(")[1].split("\ndefine ")[0]
    assert "alloca [" not in exported
    assert "call" in exported and "alloca [128 x float]" in llvm  # launched in parallel; a tile of 8 x 16 floats
