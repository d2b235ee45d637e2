"""torch.export frontend: a plain PyTorch SNN step (no Norse classes) -> Graph IR of one timestep.

Covers modules written in the snnTorch style: `forward(x, *state)` takes the input and the state tensors of one
timestep, for a batch of one, and returns `(output, *new_state)`, the new states in the order of the state inputs.
They come as a torch.export archive (`.pt2`, from `torch.export.save`) or from a `package.module:factory` that
returns a `torch.export.ExportedProgram` or a pair `(module, example_inputs)`, which is exported here.

Mechanism. Each aten op of the exported graph maps one-to-one onto an IR op with the same float32 semantics, so a
neuron update compiles exactly as written, whatever formulation it uses (reset by subtraction or to zero, `where`
or arithmetic masks, per-neuron decay buffers): the IR repeats PyTorch's roundings one operation at a time. Matching
neuron patterns instead would recognise only the formulations someone listed. Each state input becomes a `delay`
whose source is the matching state output: at step t it holds the state the step t-1 returned, zeros at the first
step (the state starts at zero, as snnTorch's `init_leaky` makes it).

Ops: linear, conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d, relu, flatten / view / reshape / squeeze /
unsqueeze (order-preserving views), add, sub, rsub, mul, div, reciprocal, neg, gt, lt, ge, le, eq, where, maximum,
minimum, clamp, clamp_min, clamp_max, exp and sigmoid (within a few ulps of PyTorch's: the only two not bit for
bit), ones_like / zeros_like / full_like, and no-ops (clone, detach, dropout, conversions to float32, assertions).
Parameters, buffers and constant tensors fold into the ops that read them (a product with a buffer becomes a `scale`
by a per-element parameter), and any op whose operands are all constants is computed by PyTorch itself at import
(snnTorch's `beta.clamp(0, 1)`, Sinabs' `exp(-1/tau)`). State may also live in buffers that the forward updates in
place (`self.mem.mul_(beta).add_(x)`, or `copy_`): each such buffer becomes a `delay` of its new value, and must
start at zero. A forward that reads a buffer and assigns it a new tensor (snnTorch's `init_hidden` neurons) is
refused, since torch.export does not record that assignment (such models are read by walking, see
`masic.frontends.snntorch`); snnTorch neurons stepped with explicit state assign their buffers too, but read only
the state they are given, and compile. Operands of different shapes broadcast as in PyTorch: a constant becomes a
per-element parameter, a runtime tensor is spread by a dense layer of ones (exact for finite values; its matrix has
at most `MAX_BROADCAST_WEIGHTS` elements, `masic.frontends.export_values`). Alpha != 1, rounding division and any
other op are refused, naming the op and its source line. A forward that loops over time itself (snnTorch's
tutorials) compiles one iteration of its loop (`masic.frontends.unroll`).

Archives are checked before torch.export.load sees them, and it reads exactly the checked bytes
(`masic.frontends.pt2_archive`): raw tensors, plain sample inputs and a static aten graph, so a hostile archive cannot
run code.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from masic.frontends.errors import FrontendError, first_line, library_warnings_silenced, well_formed
from masic.frontends.export_values import Value, ValueOps
from masic.frontends.graph_builder import GraphBuilder, real_float32
from masic.frontends.limits import MAX_TENSOR_ELEMENTS
from masic.frontends.pt2_archive import checked_archive
from masic.frontends.unroll import Loop, unrolled_loop

from masic.ir.graph import Graph, TensorType


def load_export(path: str | Path) -> torch.export.ExportedProgram:
    """Loads a .pt2 archive from the bytes `checked_archive` accepted; every failure is a one-line FrontendError."""
    path = Path(path)
    archive = checked_archive(path)
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # torch logs a failed load's traceback before raising; the error says it
    try:
        with library_warnings_silenced():
            return torch.export.load(archive)
    except Exception as err:
        raise FrontendError(f"cannot read {path}: {first_line(err)}") from None
    finally:
        export_log.setLevel(level)


def export_module(module: torch.nn.Module, example_inputs: tuple[Any, ...], spec: str) -> torch.export.ExportedProgram:
    """torch.export.export of one step, in inference mode; refuses a forward that reads a buffer it assigns."""
    module.eval()
    assigned = _assigned_buffers(module, tuple(example_inputs), spec)
    try:
        with torch.no_grad(), library_warnings_silenced():  # e.g. snnTorch's neurons assign tensor attributes
            program = torch.export.export(module, tuple(example_inputs))
    except Exception as err:
        raise FrontendError(f"{spec}: torch.export failed: {first_line(err)}") from None
    nodes = {n.name: n for n in program.graph.nodes}
    for placeholder, target in program.graph_signature.inputs_to_buffers.items():
        read = [u for u in nodes[placeholder].users if str(u.target) not in _SHAPE_ONLY]
        if target in assigned and read:
            raise FrontendError(
                f"{spec}: forward reads buffer {target} and assigns it a new tensor, which torch.export does not "
                "record (the state would compile as a constant); update it in place, take and return the state, or "
                "(snnTorch init_hidden neurons) give the nn.Sequential itself"
            )
    return program


def _assigned_buffers(module: torch.nn.Module, example_inputs: tuple[Any, ...], spec: str) -> set[str]:
    """The buffers one step of the module replaces with a new tensor (`self.buf = ...`, which torch.export drops,
    unlike an in-place update): seen by running the step on a copy of the module."""
    twin = copy.deepcopy(module)
    before = {name: id(buffer) for name, buffer in twin.named_buffers()}
    try:
        with torch.no_grad():
            twin(*copy.deepcopy(example_inputs))
    except Exception as err:
        raise FrontendError(f"{spec}: the module fails on its example inputs: {first_line(err)}") from None
    return {name for name, buffer in twin.named_buffers() if before.get(name) != id(buffer)}


# Ops that read only their operand's shape: snnTorch's init_leaky() makes its zero state from the buffer it assigns
_SHAPE_ONLY = {"aten.zeros_like.default", "aten.ones_like.default", "aten.full_like.default", "aten.empty_like.default"}
_NO_OPS = {
    "aten.clone.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.detach_.default",
    "aten.contiguous.default",
    "aten.lift_fresh_copy.default",
    "aten.dropout.default",
    "aten.to.dtype",
    "aten._to_copy.default",
    "aten.to.dtype_layout",
}
_ASSERTIONS = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default"}
_VIEWS = {
    "aten.flatten.using_ints",
    "aten.view.default",
    "aten.reshape.default",
    "aten._unsafe_view.default",
    "aten.squeeze.dim",
    "aten.squeeze.dims",
    "aten.squeeze.default",
    "aten.unsqueeze.default",
}
_FILLS = {"aten.ones_like.default": 1.0, "aten.zeros_like.default": 0.0}


class _Importer(ValueOps):
    """Walks the exported graph in its (topological) order, mapping each FX node to a Value."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        self.b = GraphBuilder()
        self.values: dict[str, Value] = {}
        self.handlers: dict[str, Callable[[Any], Value]] = {
            "aten.linear.default": self._linear,
            "aten.conv2d.default": self._conv2d,
            "aten.max_pool2d.default": self._max_pool2d,
            "aten.avg_pool2d.default": self._avg_pool2d,
            "aten.adaptive_avg_pool2d.default": self._adaptive_avg_pool2d,
            "aten.relu.default": lambda n: self.unary(n, "relu", {}),
            "aten.neg.default": lambda n: self.unary(n, "scale", {"factor": -1.0}),
            "aten.add.Tensor": self._add,
            "aten.sub.Tensor": self._sub,
            "aten.rsub.Scalar": self._rsub,
            "aten.mul.Tensor": self._mul,
            "aten.gt.Scalar": self._gt,
            "aten.gt.Tensor": self._gt,
            "aten.lt.Scalar": self._lt,
            "aten.lt.Tensor": self._lt,
            "aten.where.self": self._where,
            "aten.full_like.default": lambda n: self.fill(n, float(n.args[1])),
            "aten.div.Tensor": self._div,
            "aten.reciprocal.default": lambda n: self.unary(n, "div_into", {"dividend": 1.0}),
            "aten.ge.Scalar": lambda n: self._compare(n, "ge", "le"),
            "aten.ge.Tensor": lambda n: self._compare(n, "ge", "le"),
            "aten.le.Scalar": lambda n: self._compare(n, "le", "ge"),
            "aten.le.Tensor": lambda n: self._compare(n, "le", "ge"),
            "aten.eq.Scalar": lambda n: self._compare(n, "eq", "eq"),
            "aten.eq.Tensor": lambda n: self._compare(n, "eq", "eq"),
            "aten.maximum.default": lambda n: self._extremum(n, "maximum", "clamp_min", "min"),
            "aten.minimum.default": lambda n: self._extremum(n, "minimum", "clamp_max", "max"),
            "aten.clamp_min.default": lambda n: self._extremum(n, "maximum", "clamp_min", "min"),
            "aten.clamp_max.default": lambda n: self._extremum(n, "minimum", "clamp_max", "max"),
            "aten.clamp.default": self._clamp,
            "aten.clamp.Tensor": self._clamp,
            "aten.exp.default": lambda n: self.unary(n, "exp", {}),
            "aten.sigmoid.default": lambda n: self.unary(n, "sigmoid", {}),
        }

    # -- ops --

    def _weights(self, node: Any, index: int) -> np.ndarray | None:
        if len(node.args) <= index or node.args[index] is None:
            return None
        value = self.arg(node, node.args[index])
        if isinstance(value, str):
            raise FrontendError(f"{self.loc(node)}: weights computed at run time are not supported")
        return value

    def _linear(self, node: Any) -> str:
        weight, bias = self._weights(node, 1), self._weights(node, 2)
        attrs = {
            "weight": self.b.param(f"{node.name}.weight", weight),
            "bias": None if bias is None else self.b.param(f"{node.name}.bias", bias),
            "in_features": int(weight.shape[1]),
            "out_features": int(weight.shape[0]),
        }
        return self.unary(node, "dense", attrs)

    def pair(self, node: Any, value: Any, default: int | None) -> tuple[int, int] | None:
        """An int-or-list conv/pool argument as a pair; None or an empty list mean `default` (None: no default)."""
        if value is None or (isinstance(value, list | tuple) and not value):
            return None if default is None else (default, default)
        if isinstance(value, str):
            raise FrontendError(f"{self.loc(node)}: padding={value!r} is not supported; give numbers")
        values = [int(value)] * 2 if isinstance(value, int) else [int(v) for v in value]
        return (values[0], values[-1])

    def _conv2d(self, node: Any) -> str:
        args = [*node.args, *[None] * 7][:7]
        weight, bias = self._weights(node, 1), self._weights(node, 2)
        attrs = {
            "weight": self.b.param(f"{node.name}.weight", weight),
            "bias": None if bias is None else self.b.param(f"{node.name}.bias", bias),
            "out_channels": int(weight.shape[0]),
            "kernel": (int(weight.shape[2]), int(weight.shape[3])),
            "stride": self.pair(node, args[3], 1),
            "padding": self.pair(node, args[4], 0),
            "dilation": self.pair(node, args[5], 1),
            "groups": int(args[6] or 1),
        }
        return self.unary(node, "conv2d", attrs)

    def _pool(self, node: Any, op: str, args: list[Any]) -> str:
        """kernel, stride (default: the kernel), padding of max_pool2d / avg_pool2d."""
        kernel = self.pair(node, args[1], 1)
        stride = self.pair(node, args[2], None) or kernel
        return self.unary(node, op, {"kernel": kernel, "stride": stride, "padding": self.pair(node, args[3], 0)})

    def _max_pool2d(self, node: Any) -> str:
        args = [*node.args, *[None] * 6][:6]
        if self.pair(node, args[4], 1) != (1, 1) or args[5]:
            raise FrontendError(f"{self.loc(node)}: dilation and ceil_mode are not supported")
        return self._pool(node, "maxpool2d", args)

    def _avg_pool2d(self, node: Any) -> str:
        args = [*node.args, *[None] * 7][:7]
        if args[4] or args[5] is False or args[6] is not None:
            raise FrontendError(f"{self.loc(node)}: ceil_mode, count_include_pad=False, divisor_override unsupported")
        return self._pool(node, "avgpool2d", args)

    def _adaptive_avg_pool2d(self, node: Any) -> str:
        return self.unary(node, "adaptive_avgpool2d", {"output": self.out_shape(node)[1:]})

    def _view(self, node: Any) -> str:
        shape = self.out_shape(node)
        if len(shape) == 1:
            return self.unary(node, "flatten", {})
        return self.unary(node, "reshape", {"shape": shape})

    # -- constants --

    def _constant_operands(self, node: Any) -> bool:
        """Whether every operand of the node is a constant (and the op draws no random numbers)."""
        operands: list[Any] = []
        torch.fx.node.map_arg((node.args, node.kwargs), operands.append)
        deterministic = torch.Tag.nondeterministic_seeded not in getattr(node.target, "tags", ())
        return deterministic and all(
            n.name in self.values and not isinstance(self.values[n.name], str) for n in operands
        )

    def _fold(self, node: Any) -> np.ndarray:
        """The op computed by PyTorch on its constant operands, as the program would compute it at every step."""
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.numel() > MAX_TENSOR_ELEMENTS:
            raise FrontendError(f"{self.loc(node)}: a constant of {val.numel()} elements is beyond masic's limit")

        def tensor(n: Any) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(self.values[n.name]))

        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), tensor)
        try:
            with torch.no_grad(), library_warnings_silenced():
                result = node.target(*args, **kwargs)
        except Exception as err:
            raise FrontendError(f"{self.loc(node)}: cannot compute this constant: {first_line(err)}") from None
        if not isinstance(result, torch.Tensor):
            raise FrontendError(f"{self.loc(node)}: the op gives a {type(result).__name__}, not a tensor")
        array = result.detach().cpu().numpy()
        return array if array.dtype == np.bool_ else real_float32(array, self.loc(node))

    # -- the walk --

    def convert(self, node: Any, lifted: dict[str, str], constants: dict[str, Any]) -> None:
        """The Value of one FX node (placeholders of parameters and buffers become constants)."""
        target = str(node.target)
        if node.op == "placeholder":
            if node.name in lifted:
                tensor = constants[lifted[node.name]].detach().cpu().numpy()
                self.values[node.name] = real_float32(tensor, f"{self.loc(node)}: {lifted[node.name]}")
            elif node.name not in self.values:
                raise FrontendError(f"unsupported input {node.name} of the exported program")
        elif node.op == "call_function" and target in _ASSERTIONS:
            return
        elif node.op == "call_function" and self._constant_operands(node):
            self.values[node.name] = self._fold(node)
        elif node.op == "call_function" and target in _NO_OPS:
            self.out_shape(node)  # float32 or bool results only
            source = getattr(node.args[0], "meta", {}).get("val")
            if node.meta["val"].dtype == torch.bool and getattr(source, "dtype", torch.bool) != torch.bool:
                raise FrontendError(f"{self.loc(node)}: converting numbers to bool is not supported")
            self.values[node.name] = self.arg(node, node.args[0])
        elif node.op == "call_function" and target in _VIEWS:
            self.values[node.name] = self._view(node)
        elif node.op == "call_function" and target in _FILLS:
            self.values[node.name] = self.fill(node, _FILLS[target])
        elif node.op == "call_function" and target in self.handlers:
            self.values[node.name] = self.handlers[target](node)
        elif node.op == "call_function":
            raise FrontendError(f"unsupported op {self.loc(node)}")

    def run(self, name: str, timesteps: int, input_shape: tuple[int, ...] | None) -> Graph:
        with well_formed("the exported program"):
            return self._run(name, timesteps, input_shape)

    def _run(self, name: str, timesteps: int, input_shape: tuple[int, ...] | None) -> Graph:
        program, sig = self.program, self.program.graph_signature
        if getattr(sig, "user_inputs_to_mutate", None):
            raise FrontendError("the module updates its inputs in place; return the new state instead")
        constants = {**program.state_dict, **program.constants}
        lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
        state_buffers = {p: t for p, t in sig.inputs_to_buffers.items() if t in sig.buffers_to_mutate.values()}
        nodes = {n.name: n for n in program.graph.nodes}
        for placeholder, target in state_buffers.items():
            del lifted[placeholder]
            self.values[placeholder] = self._state_buffer(nodes[placeholder], target, constants[target])
        user_inputs, user_outputs = list(sig.user_inputs), list(sig.user_outputs)
        if not user_inputs:
            raise FrontendError("the exported forward takes no input")
        loop = unrolled_loop(program, user_inputs[0])
        if loop is not None:
            if len(user_inputs) > 1 or state_buffers:
                raise FrontendError("a forward that loops over time must take only its input and keep no buffers")
            return self._run_loop(loop, name, timesteps, input_shape, lifted, constants)
        if len(user_outputs) != len(user_inputs):
            raise FrontendError(
                f"forward takes {len(user_inputs)} tensors (input and {len(user_inputs) - 1} states) but returns "
                f"{len(user_outputs)}; it must return (output, *new_states) with one new state per state input"
            )
        delays: list[str] = []
        for position, placeholder in enumerate(user_inputs):
            node = nodes[placeholder]
            shape = self.out_shape(node)
            if position == 0:
                if input_shape is not None and tuple(input_shape) != shape:
                    raise FrontendError(f"--input-shape {input_shape} differs from the exported input {shape}")
                self.values[placeholder] = self.b.add(placeholder, "input", (), {}, "model input", TensorType(shape))
            else:
                delay = self.b.delay(placeholder, TensorType(shape), f"state input {placeholder}")
                self.values[placeholder] = delay
                delays.append(delay)
        for node in program.graph.nodes:
            with well_formed(self.loc(node)):
                self.convert(node, lifted, constants)
        (returned,) = [n for n in program.graph.nodes if n.op == "output"]
        outputs = {
            spec.arg.name: self.values[v.name] if isinstance(v, torch.fx.Node) else v
            for spec, v in zip(sig.output_specs, returned.args[0], strict=True)
        }
        results = [outputs[n] for n in sig.user_outputs]
        if not all(isinstance(r, str) for r in outputs.values()):
            raise FrontendError("an output or new state of the exported forward is a constant")
        for delay, new_state in zip(delays, results[1:], strict=True):
            self.b.connect_delay(delay, new_state)
        buffers = {target: placeholder for placeholder, target in state_buffers.items()}
        for value, target in sig.buffers_to_mutate.items():
            self.b.connect_delay(self.values[buffers[target]], outputs[value])
        return self.b.finish(name, results[0], timesteps)

    def _run_loop(
        self,
        loop: Loop,
        name: str,
        timesteps: int,
        input_shape: tuple[int, ...] | None,
        lifted: dict[str, str],
        constants: dict[str, Any],
    ) -> Graph:
        """One iteration of the forward's own loop over time (`masic.frontends.unroll`): the values it reads from
        the iteration before are states, and the set-up before the loop must be constants."""
        nodes = {n.name: n for n in self.program.graph.nodes}
        (x,) = self.program.graph_signature.user_inputs
        taker = nodes[loop.step_input or x]
        shape = self.out_shape(taker)
        if input_shape is not None and tuple(input_shape) != shape:
            raise FrontendError(f"--input-shape {input_shape} differs from the input of one step {shape}")
        self.values[taker.name] = self.b.add(x, "input", (), {}, "model input", TensorType(shape))
        for previous, _ in loop.states:
            state = TensorType(self.out_shape(nodes[previous]))
            self.values[previous] = self.b.delay(previous, state, f"state {previous} {self.loc(nodes[previous])}")
        step, before = set(loop.step), set(loop.before)
        for node in self.program.graph.nodes:
            with well_formed(self.loc(node)):
                if node.op == "placeholder" and node.name != x:
                    self.convert(node, lifted, constants)
                elif node.name in before and self._constant_operands(node):
                    self.values[node.name] = self._fold(node)
                elif node.name in step and node.name not in self.values:
                    missing = [n.name for n in node.all_input_nodes if n.name not in self.values]
                    if missing:
                        raise FrontendError(f"{self.loc(node)} reads %{missing[0]}, set up before the loop at run time")
                    self.convert(node, lifted, constants)
        for previous, current in loop.states:
            self.b.connect_delay(self.values[previous], self.values[current])
        return self.b.finish(name, self.values[loop.output], timesteps)

    def _state_buffer(self, node: Any, target: str, initial: torch.Tensor) -> str:
        """A buffer the forward updates in place: a state, the delay of its new value, which must start at zero."""
        shape = self.out_shape(node)
        start = real_float32(initial.detach().cpu().numpy(), f"buffer {target}")
        if np.any(start != 0):
            raise FrontendError(
                f"buffer {target} is updated in place as a state but starts at {start[start != 0].flat[0]:g}; "
                "masic's states start at zero"
            )
        return self.b.delay(node.name, TensorType(shape), f"state buffer {target}")


def import_export(
    program: torch.export.ExportedProgram,
    input_shape: tuple[int, ...] | None = None,
    timesteps: int = 16,
    name: str = "model",
) -> Graph:
    """Lowers the exported step function (see the module docstring) to the IR, once functionalised (in-place
    updates of buffers become new values and buffer mutations)."""
    return _Importer(_functional(program)).run(name, timesteps, input_shape)


def _functional(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The program with its in-place ops (`add_`, `copy_` of a buffer) turned into new values and buffer mutations,
    by torch's own functionalisation (which re-runs the graph on fake tensors, so only when it has such ops)."""
    mutable = [n for n in program.graph.nodes if getattr(getattr(n.target, "_schema", None), "is_mutable", False)]
    if not mutable:
        return program
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)  # torch logs a failed re-run's traceback before raising; the error says it
    try:
        with library_warnings_silenced():
            return program.run_decompositions({})
    except Exception as err:
        raise FrontendError(f"cannot functionalise the exported program: {first_line(err)}") from None
    finally:
        fake_log.setLevel(level)
