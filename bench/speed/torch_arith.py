"""A torch backend of masic's float32 arithmetic (`masic.ir.arith`), so that the neuron families of
`masic.ir.neurons` run on torch tensors as written: the benchmark's "plain" PyTorch figure for a neuron kernel is its
family's own update in eager tensor ops, not a copy of it.

`compile_update` runs a family's update once with a backend that records each operation (`_Tape`: values are
slots, an operation appends its torch function and operand slots), and returns a function that replays the
recording on tensors: the same eager torch ops in the same order, without the per-operation cost of masic's `Num`
wrappers, which would otherwise dominate the time of small updates. Each operation is one eager float32 torch op,
rounded once (eager CPU ops are never fused into a multiply-add), so the results equal the numpy backend's bit for
bit (tests/test_bench_speed.py); constants are 0-dimensional float32 tensors, made once.
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from masic.ir.arith import COMPARISONS, Backend, Num
from masic.ir.neurons import NeuronFamily


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a*b + c rounded once, as the numpy backend computes it (`masic.ir.arith`): the float64 sum rounded to odd,
    then to float32."""
    product = a.double() * b.double()
    addend = c.double()
    total = product + addend
    back = total - product
    error = (product - (total - back)) + (addend - back)  # total's rounding error, exactly (TwoSum)
    even = (total.view(torch.int64) & 1) == 0
    odd = torch.nextafter(total, torch.where(error > 0, torch.inf, -torch.inf).double())
    return torch.where(torch.isfinite(error) & (error != 0) & even, odd, total).float()


def _pow2(k: torch.Tensor) -> torch.Tensor:
    """2**k, exactly, for a float32 holding a whole number from -126 to 127 (the exponent field written)."""
    return ((k.to(torch.int32) + 127) << 23).view(torch.float32)


# The torch function of each `Backend` operation (torch names its functions as numpy does)
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "neg": operator.neg,
    "minimum": torch.minimum,
    "maximum": torch.maximum,
    "exp": torch.exp,
    "floor": torch.floor,
    "both": torch.logical_and,
    "either": torch.logical_or,
    "negate": torch.logical_not,
    "select": torch.where,
    "fma": _fma,
    "pow2": _pow2,
}

Step = tuple[int, Callable[..., Any], tuple[int, ...]]  # the slot written, the function, the slots read


class _Tape(Backend):
    """Records an update: values are slot numbers; `steps` the operations in order, `constants` the tensors of
    the constant slots. Every operation of `FUNCTIONS` records its torch function (set below)."""

    def __init__(self, slots: int) -> None:
        self.size = slots  # the first slots are the update's inputs
        self.steps: list[Step] = []
        self.constants: dict[int, torch.Tensor] = {}

    def record(self, function: Callable[..., Any], *operands: int) -> int:
        self.steps.append((self.size, function, operands))
        self.size += 1
        return self.size - 1

    def const(self, value: np.float32) -> int:
        self.constants[self.size] = torch.tensor(value, dtype=torch.float32)
        self.size += 1
        return self.size - 1

    def compare(self, op: str, a: int, b: int) -> int:
        return self.record(COMPARISONS[op], a, b)


def _recorder(function: Callable[..., Any]) -> Callable[..., int]:
    def operation(self: _Tape, *operands: int) -> int:
        return self.record(function, *operands)

    return operation


for _name, _function in FUNCTIONS.items():
    setattr(_Tape, _name, _recorder(_function))
abc.update_abstractmethods(_Tape)


Update = Callable[[torch.Tensor, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


def compile_update(family: NeuronFamily, modes: Mapping[str, str]) -> Update:
    """The family's update in `modes` as a function of torch tensors (x, states, params) -> the output, then each
    new state (`NeuronFamily.step`), replaying the recorded operations."""
    inputs = ("x", *family.state_names, *family.params)
    tape = _Tape(len(inputs))
    slot = {name: Num(tape, k) for k, name in enumerate(inputs)}
    new = family.step(slot["x"], {s: slot[s] for s in family.state_names}, {p: slot[p] for p in family.params}, modes)
    outputs = {name: value.value for name, value in new.items()}
    steps, constants, size = tuple(tape.steps), tuple(tape.constants.items()), tape.size

    def update(
        x: torch.Tensor, states: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        values: list[Any] = [x, *(states[s] for s in family.state_names), *(params[p] for p in family.params)]
        values += [None] * (size - len(values))
        for k, tensor in constants:
            values[k] = tensor
        for written, function, read in steps:
            values[written] = function(*[values[r] for r in read])
        return {name: values[k] for name, k in outputs.items()}

    return update
