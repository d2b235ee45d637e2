"""What the torch.export frontend (`masic.frontends.export`) makes of values and element-wise aten ops.

`ValueOps` is the part of the exported-graph importer that turns an FX node's operands into IR values (a runtime
tensor's IR name, or a constant array) and maps the element-wise aten ops onto IR ops, one to one with PyTorch's
float32 rounding: arithmetic, comparisons, maxima and clamps, selections, and the broadcasting of runtime tensors.
A subclass provides `b` (the GraphBuilder) and `values` (FX node name -> Value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from masic.frontends.errors import FrontendError
from masic.frontends.graph_builder import GraphBuilder, real_float32

from masic.ir.graph import TensorType

Value = str | np.ndarray  # an IR value name (a runtime tensor, per sample) or a constant (with its batch axis)
MAX_BROADCAST_WEIGHTS = 1 << 22  # elements of the 0/1 matrix that broadcasts one runtime tensor (16 MiB)


class ValueOps:
    """Operands as IR values, and the element-wise ops (module docstring)."""

    b: GraphBuilder
    values: dict[str, Value]

    # -- values --

    def loc(self, node: Any) -> str:
        trace = str(node.meta.get("stack_trace") or "").strip().splitlines()
        where = f" at {trace[-1].strip()}" if trace else ""
        return f"{node.target} (%{node.name}){where}"

    def arg(self, node: Any, value: Any) -> Value:
        """An argument as a Value: a runtime tensor's IR name, or a constant array (scalars included)."""
        if isinstance(value, torch.fx.Node):
            return self.values[value.name]
        if isinstance(value, int | float | bool):
            return real_float32(float(value), f"{self.loc(node)}: argument {value!r}")
        raise FrontendError(f"{self.loc(node)}: argument {value!r} is not supported")

    def out_shape(self, node: Any) -> tuple[int, ...]:
        """The per-sample shape of a node's result (its leading batch axis must be 1)."""
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dtype not in (torch.float32, torch.bool):
            raise FrontendError(
                f"{self.loc(node)}: only float32 tensors are supported, got {getattr(val, 'dtype', val)}"
            )
        if val.dim() == 0 or val.shape[0] != 1:
            raise FrontendError(
                f"{self.loc(node)}: result {tuple(val.shape)} has no batch axis of 1; export one sample"
            )
        return tuple(int(d) for d in val.shape[1:])

    def const(self, node: Any, value: np.ndarray, key: str, like: str) -> float | Any:
        """A constant operand as a float or a per-element parameter of the shape of `node`'s result."""
        shape = self.out_shape(node)
        if self.b.type_of(like).shape != shape:
            raise FrontendError(f"{self.loc(node)}: a constant broadcasts %{like} to {shape}; not supported")
        try:
            per_sample = np.broadcast_to(value, (1, *shape))[0]
        except ValueError:
            raise FrontendError(f"{self.loc(node)}: constant of shape {value.shape} does not fit {shape}") from None
        return self.b.element_param(node.name, key, per_sample, shape, self.loc(node))

    def unary(self, node: Any, op: str, attrs: dict[str, Any], x: Value | None = None) -> str:
        x = self.arg(node, node.args[0]) if x is None else x
        if not isinstance(x, str):
            raise FrontendError(f"{self.loc(node)}: operand is a constant; fold it before exporting")
        return self.b.add(node.name, op, (x,), attrs, self.loc(node))

    def fill(self, node: Any, value: float) -> np.ndarray:
        return np.full((1, *self.out_shape(node)), real_float32(value, f"{self.loc(node)}: fill value"))

    def materialise(self, node: Any, value: Value, role: str) -> str:
        """A runtime value for an operand that must be one: constants become `constant` nodes."""
        if isinstance(value, str):
            return value
        shape = self.out_shape(node)
        attr = self.b.element_param(f"{node.name}.{role}", "value", np.broadcast_to(value, (1, *shape))[0], shape, "")
        return self.b.add(f"{node.name}.{role}", "constant", (), {"value": attr}, self.loc(node), TensorType(shape))

    def _binary(self, node: Any, tensor_op: str, const_op: str, key: str, negate_const: bool = False) -> Value:
        if node.kwargs.get("alpha", 1) != 1:
            raise FrontendError(f"{self.loc(node)}: alpha != 1 is not supported")
        if tensor_op != "mul" and node.meta["val"].dtype == torch.bool:  # logical or / xor, not arithmetic
            raise FrontendError(f"{self.loc(node)}: {tensor_op} of bool tensors is not supported")
        a, b = (self.arg(node, v) for v in node.args[:2])
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            with np.errstate(over="ignore", invalid="ignore"):  # an infinite result is refused where it is used
                result = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[tensor_op](a, b, dtype=np.float32)
            return np.broadcast_to(result, (1, *self.out_shape(node))).astype(np.float32)
        if isinstance(a, str) and isinstance(b, str):
            return self._same_shapes(node, tensor_op, a, b)
        if isinstance(a, np.ndarray):  # c + x, c * x commute exactly; c - x is handled by the caller
            a, b = b, a
        c = -b if negate_const else b
        return self.unary(node, const_op, {key: self.const(node, c, key, a)}, a)

    def _add(self, node: Any) -> Value:
        return self._binary(node, "add", "offset", "value")

    def _mul(self, node: Any) -> Value:
        return self._binary(node, "mul", "scale", "factor")

    def _sub(self, node: Any) -> Value:
        a = self.arg(node, node.args[0])
        if isinstance(a, np.ndarray) and isinstance(self.arg(node, node.args[1]), str):
            return self._constant_minus(node, a, self.arg(node, node.args[1]))
        return self._binary(node, "sub", "offset", "value", negate_const=True)  # x - c == x + (-c) exactly

    def _rsub(self, node: Any) -> Value:
        return self._constant_minus(node, self.arg(node, node.args[1]), self.arg(node, node.args[0]))

    def _constant_minus(self, node: Any, c: np.ndarray, x: Value) -> str:
        """c - x == (-x) + c exactly."""
        if node.kwargs.get("alpha", 1) != 1 or not isinstance(x, str):
            raise FrontendError(f"{self.loc(node)}: only constant - tensor with alpha 1 is supported")
        negated = self.b.add(f"{node.name}.neg", "scale", (x,), {"factor": -1.0}, self.loc(node))
        return self.b.add(
            node.name, "offset", (negated,), {"value": self.const(node, c, "value", negated)}, self.loc(node)
        )

    def _gt(self, node: Any, swap: bool = False) -> str:
        """a > b: threshold(a, b) for a constant b; (a - b) > 0 for two tensors (the same predicate for finite
        floats); a constant a compares as -b > -a."""
        a, b = (self.arg(node, v) for v in node.args[:2])
        if swap:
            a, b = b, a
        if isinstance(a, str) and isinstance(b, str):
            shape = self.out_shape(node)
            a, b = self._broadcast(node, a, shape, 0), self._broadcast(node, b, shape, 1)
            diff = self.b.add(f"{node.name}.diff", "sub", (a, b), {}, self.loc(node))
            return self.b.add(node.name, "threshold", (diff,), {"threshold": 0.0}, self.loc(node))
        if isinstance(a, np.ndarray):
            if not isinstance(b, str):
                raise FrontendError(f"{self.loc(node)}: comparing two constants; fold it before exporting")
            b = self.b.add(f"{node.name}.neg", "scale", (b,), {"factor": -1.0}, self.loc(node))
            a = -a
            a, b = b, a
        return self.b.add(
            node.name, "threshold", (a,), {"threshold": self.const(node, b, "threshold", a)}, self.loc(node)
        )

    def _lt(self, node: Any) -> str:
        return self._gt(node, swap=True)

    def _div(self, node: Any) -> str:
        """a / b: `div` of two tensors, `div_by` a constant divisor, `div_into` a constant dividend."""
        if node.kwargs.get("rounding_mode") is not None:
            raise FrontendError(f"{self.loc(node)}: division with rounding_mode is not supported")
        a, b = (self.arg(node, v) for v in node.args[:2])
        if isinstance(a, str) and isinstance(b, str):
            return self._same_shapes(node, "div", a, b)
        if isinstance(a, str):
            return self.unary(node, "div_by", {"divisor": self.const(node, b, "divisor", a)}, a)
        return self.unary(node, "div_into", {"dividend": self.const(node, a, "dividend", b)}, b)

    def _same_shapes(self, node: Any, op: str, *operands: str) -> str:
        """An element-wise op of runtime tensors, each broadcast to the result's shape first."""
        shape = self.out_shape(node)
        values = tuple(self._broadcast(node, v, shape, k) for k, v in enumerate(operands))
        return self.b.add(node.name, op, values, {}, self.loc(node))

    def _broadcast(self, node: Any, value: str, shape: tuple[int, ...], k: int) -> str:
        """A runtime tensor broadcast to `shape` (PyTorch's rules): a dense layer whose weight holds one 1 per row,
        at the element each output repeats; exact for finite values (1*x, plus products 0*x' = 0)."""
        own = self.b.type_of(value).shape
        if own == shape:
            return value
        source = np.arange(int(np.prod(own)), dtype=np.int64).reshape(own)
        try:
            picked = np.broadcast_to(source, shape).reshape(-1)
        except ValueError:
            raise FrontendError(f"{self.loc(node)}: operand of shape {own} does not broadcast to {shape}") from None
        if picked.size * source.size > MAX_BROADCAST_WEIGHTS:
            raise FrontendError(
                f"{self.loc(node)}: broadcasting a runtime tensor {own} to {shape} needs a {picked.size}x{source.size}"
                f" matrix, more than masic's {MAX_BROADCAST_WEIGHTS} elements for it"
            )
        weight = np.zeros((picked.size, source.size), np.float32)
        weight[np.arange(picked.size), picked] = 1.0
        name, loc = f"{node.name}.broadcast{k}", self.loc(node)
        flat = value if len(own) == 1 else self.b.add(f"{name}.flat", "flatten", (value,), {}, loc)
        attrs = {"weight": self.b.param(f"{name}.weight", weight), "in_features": source.size}
        spread = self.b.add(name, "dense", (flat,), attrs | {"out_features": picked.size}, loc)
        return spread if len(shape) == 1 else self.b.add(f"{name}.shape", "reshape", (spread,), {"shape": shape}, loc)

    def _compare(self, node: Any, op: str, mirrored: str) -> str:
        """a >= b, a <= b, a == b as 1.0 / 0.0: of two tensors, or of a tensor and a constant on either side (c >= x
        is x <= c)."""
        a, b = (self.arg(node, v) for v in node.args[:2])
        if isinstance(a, str) and isinstance(b, str):
            return self._same_shapes(node, op, a, b)
        x, c, op = (a, b, op) if isinstance(a, str) else (b, a, mirrored)
        if not isinstance(x, str):
            raise FrontendError(f"{self.loc(node)}: comparing two constants; fold it before exporting")
        return self.unary(node, f"{op}_value", {"value": self.const(node, c, "value", x)}, x)

    def _extremum(self, node: Any, op: str, bound_op: str, key: str, args: tuple[Any, Any] | None = None) -> str:
        """max / min of two tensors, or of a tensor and a constant bound (clamp_min / clamp_max)."""
        a, b = args if args is not None else (self.arg(node, v) for v in node.args[:2])
        if isinstance(a, str) and isinstance(b, str):
            return self._same_shapes(node, op, a, b)
        x, c = (a, b) if isinstance(a, str) else (b, a)
        name = node.name if args is None else f"{node.name}.{key}"
        return self.b.add(name, bound_op, (x,), {key: self.const(node, c, key, x)}, self.loc(node))

    def _clamp(self, node: Any) -> str:
        """clamp(x, lo, hi) = min(max(x, lo), hi), as PyTorch computes it; a missing bound is skipped."""
        args = [*node.args, None, None][:3]
        lo = node.kwargs.get("min", args[1])
        hi = node.kwargs.get("max", args[2])
        value = self.arg(node, node.args[0])
        if lo is not None:
            value = self._extremum(node, "maximum", "clamp_min", "min", (value, self.arg(node, lo)))
        if hi is not None:
            value = self._extremum(node, "minimum", "clamp_max", "max", (value, self.arg(node, hi)))
        if not isinstance(value, str):
            raise FrontendError(f"{self.loc(node)}: clamp of a constant; fold it before exporting")
        return value

    def _where(self, node: Any) -> str:
        cond, a, b = (self.arg(node, v) for v in node.args[:3])
        if not isinstance(cond, str):
            raise FrontendError(f"{self.loc(node)}: a constant condition; fold it before exporting")
        return self._same_shapes(
            node, "select", cond, self.materialise(node, a, "then"), self.materialise(node, b, "else")
        )
