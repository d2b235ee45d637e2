"""The op table: for each op its operands, attributes, neuron state and shape rule.

Neuron ops are one `NeuronOp` each, with their discrete-time update in the docstring. All arithmetic is float32,
each operation rounded separately, in exactly the order written (Norse's order), so that the reference interpreter
reproduces Norse bit-for-bit. Coefficients are folded at import time in float32, as Norse computes them:
`dt_tau_mem = dt * tau_mem_inv`, `neg_dt_tau_syn = -dt * tau_syn_inv`. A neuron parameter is either a float
attribute or a `ParamRef` to a per-neuron array of the neuron's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from types import MappingProxyType

from masic.ir.graph import Node, TensorType


class ShapeError(ValueError):
    """An op's operands or attributes do not fit together."""


ShapeRule = Callable[[Node, tuple[TensorType, ...]], TensorType]


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int
    required: tuple[str, ...]
    optional: tuple[str, ...]
    infer: ShapeRule
    doc: str = ""


@dataclass(frozen=True)
class NeuronOp(OpDef):
    """A neuron family: element-wise over its input, with state carried across timesteps.

    `states` lists (state name, attribute giving its initial value, or None for zero).
    `spiking` is true when the output is a spike (0/1) tensor.
    """

    states: tuple[tuple[str, str | None], ...] = ()
    spiking: bool = True


def _pair(node: Node, key: str) -> tuple[int, int]:
    value = node.attr(key)
    if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise ShapeError(f"attribute {key} must be a pair of integers, got {value!r}")
    return value


def _window_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _infer_identity(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    return ins[0]


def _infer_input(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if node.type is None:
        raise ShapeError("an input node must declare its type")
    return node.type


def _infer_conv2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"conv2d expects a (C,H,W) input, got {ins[0]}")
    c, h, w = ins[0].shape
    out_c = node.attr("out_channels")
    groups = node.attr("groups", 1)
    kh, kw = _pair(node, "kernel")
    (sh, sw), (ph, pw), (dh, dw) = _pair(node, "stride"), _pair(node, "padding"), _pair(node, "dilation")
    if not isinstance(out_c, int) or not isinstance(groups, int) or c % groups or out_c % groups:
        raise ShapeError(f"conv2d channels {c}->{out_c} do not divide into {groups} groups")
    oh, ow = _window_out(h, kh, sh, ph, dh), _window_out(w, kw, sw, pw, dw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"conv2d kernel {kh}x{kw} does not fit input {h}x{w}")
    return TensorType((out_c, oh, ow))


def _infer_pool2d(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 3:
        raise ShapeError(f"pooling expects a (C,H,W) input, got {ins[0]}")
    c, h, w = ins[0].shape
    (kh, kw), (sh, sw), (ph, pw) = _pair(node, "kernel"), _pair(node, "stride"), _pair(node, "padding")
    if 2 * ph > kh or 2 * pw > kw:
        raise ShapeError(f"pooling padding {ph},{pw} exceeds half the kernel {kh}x{kw}")
    oh, ow = _window_out(h, kh, sh, ph), _window_out(w, kw, sw, pw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"pooling kernel {kh}x{kw} does not fit input {h}x{w}")
    return TensorType((c, oh, ow))


def _infer_dense(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if len(ins[0].shape) != 1:
        raise ShapeError(f"dense expects a flat input, got {ins[0]} (insert a flatten)")
    if ins[0].shape[0] != node.attr("in_features"):
        raise ShapeError(f"dense expects {node.attr('in_features')} input features, got {ins[0].shape[0]}")
    return TensorType((node.attr("out_features"),))


def _infer_flatten(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    return TensorType((prod(ins[0].shape),))


def _infer_same(node: Node, ins: tuple[TensorType, ...]) -> TensorType:
    if any(t != ins[0] for t in ins):
        raise ShapeError(f"operands must have equal types, got {', '.join(map(str, ins))}")
    return ins[0]


_NEURON_PARAMS_LIF = ("dt_tau_mem", "neg_dt_tau_syn", "v_leak", "v_th", "v_reset")

OPS: Mapping[str, OpDef] = MappingProxyType(
    {
        op.name: op
        for op in (
            OpDef("input", 0, (), (), _infer_input, "the sample presented at this timestep"),
            OpDef(
                "conv2d",
                1,
                ("weight", "out_channels", "kernel", "stride", "padding", "dilation", "groups"),
                ("bias",),
                _infer_conv2d,
                "2-d cross-correlation as torch.nn.Conv2d; weight (O, C/groups, kh, kw)",
            ),
            OpDef("dense", 1, ("weight", "in_features", "out_features"), ("bias",), _infer_dense, "y = W x + b"),
            OpDef(
                "batchnorm2d",
                1,
                ("mean", "var", "eps"),
                ("gamma", "beta"),
                _infer_identity,
                "eval-mode batch norm: (x - mean) / sqrt(var + eps) * gamma + beta, per channel",
            ),
            OpDef("maxpool2d", 1, ("kernel", "stride", "padding"), (), _infer_pool2d, "max over windows"),
            OpDef(
                "avgpool2d",
                1,
                ("kernel", "stride", "padding"),
                (),
                _infer_pool2d,
                "mean over windows, padding counted (count_include_pad)",
            ),
            OpDef("flatten", 1, (), (), _infer_flatten, "a view of its input as one dimension"),
            OpDef("add", 2, (), (), _infer_same, "element-wise sum"),
            NeuronOp(
                "lif",
                1,
                _NEURON_PARAMS_LIF,
                (),
                _infer_identity,
                """Leaky integrate-and-fire with a current synapse (Norse LIFCell).
                i1 = i + x;  v1 = v + dt_tau_mem*((v_leak - v) + i1);  i' = i1 + neg_dt_tau_syn*i1
                z = (v1 - v_th) > 0;  v' = z ? v_reset : v1;  output z""",
                states=(("v", "v_leak"), ("i", None)),
            ),
            NeuronOp(
                "lif_box",
                1,
                ("dt_tau_mem", "v_leak", "v_th", "v_reset", "reset"),
                (),
                _infer_identity,
                """Leaky integrate-and-fire without synapse (Norse LIFBoxCell).
                v1 = v + dt_tau_mem*((x + v_leak) - v);  z = (v1 - v_th) > 0
                v' = z ? v_reset : v1  (reset="value")   or   v' = z ? v1 - v_th : v1  (reset="subtract")""",
                states=(("v", "v_leak"),),
            ),
            NeuronOp(
                "li",
                1,
                ("dt_tau_mem", "neg_dt_tau_syn", "v_leak"),
                (),
                _infer_identity,
                """Leaky integrator with a current synapse (Norse LICell).
                i1 = i + x;  v' = v + dt_tau_mem*((v_leak - v) + i1);  i' = i1 + neg_dt_tau_syn*i1;  output v'""",
                states=(("v", "v_leak"), ("i", None)),
                spiking=False,
            ),
            NeuronOp(
                "li_box",
                1,
                ("dt_tau_mem", "v_leak"),
                (),
                _infer_identity,
                """Leaky integrator without synapse (Norse LIBoxCell).
                v' = v + dt_tau_mem*((v_leak - v) + x);  output v'""",
                states=(("v", "v_leak"),),
                spiking=False,
            ),
            NeuronOp(
                "iaf",
                1,
                ("v_th", "v_reset"),
                (),
                _infer_identity,
                """Integrate-and-fire (Norse IAFCell).
                v1 = v + x;  z = (v1 - v_th) > 0;  v' = z ? v_reset : v1;  output z""",
                states=(("v", "v_reset"),),
            ),
        )
    }
)


def neuron_op(op: str) -> NeuronOp | None:
    definition = OPS.get(op)
    return definition if isinstance(definition, NeuronOp) else None


def state_names(node: Node) -> tuple[str, ...]:
    """Names of the state values of a node, e.g. ("lif1.v", "lif1.i"); empty for stateless ops."""
    definition = neuron_op(node.op)
    return tuple(f"{node.name}.{s}" for s, _ in definition.states) if definition else ()
