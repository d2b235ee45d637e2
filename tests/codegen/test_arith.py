"""The two backends of masic.ir.arith agree: every operation run as TIR (built for the host, run in-process through
TVM's runtime) gives numpy's float32 result bit for bit, but exp (within 2 ulps: neither rounds it correctly); and
a product feeding an add is fenced, so that LLVM cannot contract the two into a fused multiply-add."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
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


def test_exp_within_two_ulps() -> None:
    def fn(a: Num, b: Num, c: Num) -> Num:
        return arith.exp(a)

    got, want = _tir(fn), fn(arith.numpy(A), arith.numpy(B), arith.numpy(C)).value
    assert np.all(np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32)) <= 2)


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
