"""The two backends of masic.ir.arith agree: every operation run as TIR (built for the host, run in-process through
TVM's runtime) gives numpy's float32 result bit for bit, exp (written over the operations) included; exp is within
0.54 ulp of e**x and 1 ulp of torch.exp; and a product feeding an add is fenced, so that LLVM cannot contract the two
into a fused multiply-add."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import tvm
from tvm import te

from masic.codegen.tir.arith import TIR, num
from masic.ir import arith
from masic.ir.arith import Num

N = 4096
RNG = np.random.default_rng(0)
# operands: ordinary values, values around 0 and 1 (floors, comparisons), exact ties, signed zeros
A = np.concatenate([RNG.uniform(-8, 8, N - 8), [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-30, 3.0]]).astype(np.float32)
B = np.concatenate([RNG.uniform(-8, 8, N - 8), [-0.0, 0.0, 1.0, 1.0, 2.5, 2.5, 1e30, 3.0]]).astype(np.float32)
C = RNG.uniform(-8, 8, N).astype(np.float32)

OPERATIONS: dict[str, Callable[[Num, Num, Num], Num]] = {
    "multiply-add": lambda a, b, c: a + b * c,
    "subtract a product": lambda a, b, c: c - a * b,
    "negated product plus": lambda a, b, c: -(a * b) + c,
    "divide": lambda a, b, c: a / (b + 9.0) + c,
    "minimum, maximum": lambda a, b, c: arith.maximum(arith.minimum(a, b), c),
    "clamp": lambda a, b, c: arith.clamp(a, -1.0, 1.5),
    "floor": lambda a, b, c: arith.floor(a / 0.7),
    "multi-spike count": lambda a, b, c: arith.minimum(arith.floor(arith.maximum(a, 0.0) / 1.3), 3.0),
    "compare and select": lambda a, b, c: arith.select((a > b) & ~(c <= 0.5) | arith.equal(a, b), a - b, c),
    "not equal, spike": lambda a, b, c: arith.spike(arith.not_equal(a, b)) + arith.spike(a >= 2.5),
    "comparisons with constants": lambda a, b, c: arith.spike(a < 1.0) * b + arith.spike(c <= 1.0),
    "fused multiply-add": lambda a, b, c: arith.fma(a, b, c),
    "a product's rounding error": lambda a, b, c: arith.fma(a, b, -(a * b)),
    "pow2": lambda a, b, c: arith.pow2(arith.floor(a * 15.0)) * b,
    "exp": lambda a, b, c: arith.exp(a / 4.0),
    "exp overflowing and subnormal": lambda a, b, c: arith.exp(a * 13.5),
}


def _tir(fn: Callable[[Num, Num, Num], Num]) -> np.ndarray:
    """fn over A, B, C as a TVM kernel, built for the host and run in this process."""
    a, b, c = (te.placeholder((N,), "float32", name=name) for name in "abc")
    out = te.compute((N,), lambda i: fn(num(a[i]), num(b[i]), num(c[i])).value, name="out")
    lib = tvm.tirx.build(tvm.IRModule({"main": te.create_prim_func([a, b, c, out])}), tvm.target.Target("llvm"))
    result = tvm.runtime.tensor(np.zeros(N, np.float32))
    lib["main"](*(tvm.runtime.tensor(x) for x in (A, B, C)), result)
    return result.numpy()


@pytest.mark.parametrize("name", OPERATIONS)
def test_tir_computes_what_numpy_computes(name: str) -> None:
    fn = OPERATIONS[name]
    want = fn(arith.numpy(A), arith.numpy(B), arith.numpy(C)).value
    np.testing.assert_array_equal(_tir(fn).view(np.uint32), np.broadcast_to(want, (N,)).view(np.uint32))


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 values lie between a and b (both finite or equal infinities, of one sign)."""
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32))


def test_exp_is_within_an_ulp_of_torch_and_nearly_correctly_rounded() -> None:
    """Over every float32 input range that matters (overflow, subnormals, around 0): within 1 ulp of torch.exp
    (Norse's), equal to it for all but about 1.3%; within 0.54 ulp of e**x, so correctly rounded for all but about
    0.6% (torch.exp misrounds about 1% itself)."""
    x = np.concatenate([RNG.uniform(-110, 95, 200_000), RNG.normal(0, 3, 200_000)]).astype(np.float32)
    got = arith.exp(arith.numpy(x)).value
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
    torch_exp = torch.exp(torch.from_numpy(x)).numpy()
    assert _ulps(got, torch_exp).max() == 1 and np.mean(got != torch_exp) < 0.02
    correct = exact.astype(np.float32)
    assert _ulps(got, correct).max() == 1 and np.mean(got != correct) < 0.01
    normal = (correct > 1e-37) & np.isfinite(correct)
    error = (got[normal] - exact[normal]) / np.spacing(got[normal]).astype(np.float64)
    assert np.abs(error).max() < 0.54


def test_exp_of_special_values() -> None:
    x = np.array([0.0, -0.0, 1.0, np.inf, -np.inf, 88.72283, 88.7229, -103.9, -104.5], np.float32)
    got = arith.exp(arith.numpy(x)).value
    want = [1.0, 1.0, np.float32(np.e), np.inf, 0.0, np.float32(3.4027985e38), np.inf, 1.4e-45, 0.0]
    np.testing.assert_array_equal(got, np.array(want, np.float32))
    assert np.isnan(arith.exp(arith.numpy(np.float32(np.nan))).value)


def test_a_product_feeding_an_add_is_fenced_and_no_other() -> None:
    x = num(tvm.tirx.Var("x", "float32"))
    assert "llvm.arithmetic.fence" in str((x + x * x).value)
    assert "llvm.arithmetic.fence" in str((x - (-(x * x))).value)
    assert "llvm.arithmetic.fence" not in str((x * x).value)
    assert "llvm.arithmetic.fence" not in str(arith.select(x > 0.0, x * x, x).value)


def test_numbers_round_to_float32_and_backends_do_not_mix() -> None:
    assert (num(tvm.tirx.Var("x", "float32")) + 0.1).value.b.value == float(np.float32(0.1))
    assert (arith.numpy(np.zeros(2, np.uint8)) + 0.1).value.dtype == np.float32
    with pytest.raises(TypeError, match="two backends"):
        _ = arith.numpy(A) + Num(TIR, A)
