"""The element-wise ops the export frontend maps (division, comparisons, maxima, clamps, exp, sigmoid), each
exported once and then run by the reference interpreter on arbitrary float32 inputs: bit for bit PyTorch's
results, but exp and sigmoid, which PyTorch computes with its own vectorised exponential (within 4 ulps)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from masic.frontends.export import export_module, import_export
from torch import nn

from masic.ir.graph import Graph
from masic.ir.interpret import run

N = 16
Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OPS: dict[str, Op] = {
    "div": lambda x, s: x / s,
    "div_by_constant": lambda x, s: x / 3.0,
    "div_into_constant": lambda x, s: 3.0 / s,
    "ge": lambda x, s: (x >= s).float(),
    "le_constant": lambda x, s: (x <= 0.5).float(),
    "eq": lambda x, s: torch.eq(x, s).float(),
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "clamp": lambda x, s: x.clamp(-1.0, 2.0),
    "clamp_min": lambda x, s: x.clamp_min(0.25),
    "clamp_max_tensor": lambda x, s: torch.clamp(x, max=s),
}
APPROXIMATE: dict[str, Op] = {"exp": lambda x, s: torch.exp(x), "sigmoid": lambda x, s: torch.sigmoid(x + s)}


class _Step(nn.Module):
    """out = op(x, state); the new state is the input, so the state at step t is x[t-1] (zeros first)."""

    def __init__(self, op: Op) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.op(x, state), x + 0.0


@cache
def _graph(name: str) -> Graph:
    op = {**OPS, **APPROXIMATE}[name]
    return import_export(export_module(_Step(op), (torch.zeros(1, N), torch.zeros(1, N)), name))


def _torch(name: str, x: np.ndarray) -> np.ndarray:
    op, state = {**OPS, **APPROXIMATE}[name], np.concatenate([np.zeros((1, N), np.float32), x[:-1] + np.float32(0)])
    with torch.no_grad():
        return op(torch.from_numpy(x), torch.from_numpy(state)).numpy()


finite = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)
sequences = arrays(np.float32, (4, N), elements=st.one_of(finite, st.sampled_from([0.0, -0.0, 0.5, 1.0, 3.0])))


@pytest.mark.parametrize("name", OPS)
@given(x=sequences)
def test_ops_are_pytorchs_bit_for_bit(name: str, x: np.ndarray) -> None:
    np.testing.assert_array_equal(run(_graph(name), x), _torch(name, x))


@pytest.mark.parametrize("name", APPROXIMATE)
@given(x=arrays(np.float32, (4, N), elements=st.floats(-80, 80, width=32)))
def test_exp_and_sigmoid_are_within_4_ulps(name: str, x: np.ndarray) -> None:
    got, expected = run(_graph(name), x), _torch(name, x)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - expected.view(np.int32).astype(np.int64))
    assert ulps.max() <= 4, f"{name}: {ulps.max()} ulps"
