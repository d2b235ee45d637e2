"""NumPy reference interpreter of the IR, and the plan simulator built on it.

`run(graph, x)` executes the graph for T timesteps and returns the output of every step, shape (T, *output).
Neuron updates are their families' own (`masic.ir.neurons`) and element-wise ops the functions of
`masic.ir.elementwise`, both run by the numpy backend of `masic.ir.arith`: float32, one rounding per operation.
Given the same synaptic input the neurons reproduce Norse bit-for-bit, and the element-wise ops PyTorch's float32
arithmetic; the kernels, which run the same definitions, reproduce the interpreter. Convolutions, dense layers and
pooling sums accumulate in float64 and round once, so they are at least as accurate as any float32 kernel they are
compared with. A `delay` outputs its state, and its state takes its source's value right after the source is
computed. Values of type `spike` are uint8 arrays of 0/1,
as the compiled kernels store them; ops with a float32 output read them as 0.0 / 1.0. Values of type `bits` are
held the same way (one 0/1 byte each): the interpreter computes logical values, and only the plan simulator
stores them packed in its arena.

With `simulate_plan=True` every value, state and weight lives inside one byte array at the offset the plan gives
it, and each buffer is filled with NaN when its lifetime starts: a plan that lets two live buffers overlap, or
that ends a lifetime too early, corrupts the result instead of passing silently (a poisoned spike byte reads as
255, not 0 or 1; a poisoned word of bits as 32 spikes). Streamed weights and transient
states (`masic.ir.graph.transient_states`) are then filled in, as the loading thread would: a plan that
starts their lifetimes too late corrupts the result too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from masic.ir import arith
from masic.ir.elementwise import FUNCTIONS
from masic.ir.elementwise import OPS as ELEMENTWISE_OPS
from masic.ir.graph import Buffer, Graph, Node, ParamRef, pack_bits, transient_states, unpack_bits
from masic.ir.neurons import FAMILIES
from masic.ir.ops import adaptive_bins, neuron_op, row_padding, state_names, state_type

F32 = np.float32


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """(C, OH, OW, kh, kw) view of the windows of an already padded (C, H, W) array."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    view = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    return view[:, ::sh, ::sw, ::dh, ::dw]


def _pad(x: np.ndarray, node: Node, value: float) -> np.ndarray:
    """The input of a conv or pooling node with its padding: `row_padding` rows above and below, if given."""
    pw = node.attr("padding")[1]
    return np.pad(x, ((0, 0), row_padding(node), (pw, pw)), constant_values=value)


def conv2d(node: Node, x: np.ndarray, p: Callable[[str], np.ndarray | None]) -> np.ndarray:
    weight, bias, groups = p("weight"), p("bias"), node.attr("groups")
    padded = _pad(x, node, 0.0)
    windows = _windows(padded, node.attr("kernel"), node.attr("stride"), node.attr("dilation"))
    c_in, out_c = x.shape[0] // groups, weight.shape[0] // groups
    out = np.empty((weight.shape[0], *windows.shape[1:3]), dtype=np.float64)
    for g in range(groups):
        w = weight[g * out_c : (g + 1) * out_c].astype(np.float64)
        win = windows[g * c_in : (g + 1) * c_in].astype(np.float64)
        out[g * out_c : (g + 1) * out_c] = np.einsum("chwij,ocij->ohw", win, w)
    if bias is not None:
        out += bias.astype(np.float64)[:, None, None]
    return out.astype(F32)


def dense(node: Node, x: np.ndarray, p: Callable[[str], np.ndarray | None]) -> np.ndarray:
    out = p("weight").astype(np.float64) @ x.astype(np.float64)
    bias = p("bias")
    return (out if bias is None else out + bias.astype(np.float64)).astype(F32)


def pool2d(node: Node, x: np.ndarray) -> np.ndarray:
    is_max = node.op == "maxpool2d"
    # Spikes pad with 0: every window holds an input element (ops.py), and spikes are never below 0.
    padded = _pad(x, node, -np.inf if is_max and x.dtype == F32 else 0.0)
    windows = _windows(padded, node.attr("kernel"), node.attr("stride"), (1, 1))
    if is_max:
        return windows.max(axis=(3, 4)).astype(x.dtype)
    reduce = np.mean if node.op == "avgpool2d" else np.sum
    return reduce(windows.astype(np.float64), axis=(3, 4)).astype(F32)


def adaptive_avgpool2d(node: Node, x: np.ndarray) -> np.ndarray:
    (oh, ow), (_, h, w) = node.attr("output"), x.shape
    out = np.empty((x.shape[0], oh, ow), dtype=F32)
    for i, (h0, h1) in enumerate(adaptive_bins(h, oh)):
        for j, (w0, w1) in enumerate(adaptive_bins(w, ow)):
            out[:, i, j] = x[:, h0:h1, w0:w1].astype(np.float64).mean(axis=(1, 2))
    return out


def batchnorm2d(node: Node, x: np.ndarray, p: Callable[[str], np.ndarray | None]) -> np.ndarray:
    scale = 1.0 / np.sqrt(p("var").astype(np.float64) + node.attr("eps"))
    gamma, beta = p("gamma"), p("beta")
    if gamma is not None:
        scale = scale * gamma
    y = (x - p("mean").astype(np.float64)[:, None, None]) * scale[:, None, None]
    return (y if beta is None else y + beta[:, None, None]).astype(F32)


def neuron_step(node: Node, x: np.ndarray, state: dict[str, np.ndarray], p: Callable[[str], np.ndarray]) -> np.ndarray:
    """One update of a neuron family (`masic.ir.neurons`) with the numpy backend; updates `state` arrays in place,
    returns the output (the probed state's new value, if the node probes one)."""
    family = FAMILIES[node.op]
    new = family.step(
        arith.numpy(x),
        {name: arith.numpy(array) for name, array in state.items()},
        {name: arith.numpy(p(name)) for name in family.params},
        {name: node.attr(name) for name in family.mode_names},
    )
    for name in family.state_names:
        state[name][...] = new[name].value
    output = new[node.attr("probe") or family.output].value
    return np.asarray(output).astype(node.type.np_dtype)


def elementwise(node: Node, operands: list[np.ndarray], p: Callable[[str], np.ndarray | None]) -> np.ndarray:
    """An element-wise op (`masic.ir.elementwise`) with the numpy backend: float32, one rounding per operation as in
    PyTorch."""
    fn, key = ELEMENTWISE_OPS[node.op]
    args = [arith.numpy(x) for x in operands] + ([arith.numpy(p(key))] if key else [])
    return np.broadcast_to(FUNCTIONS[fn].body(*args).value, node.type.shape).astype(F32)


def initial_state(graph: Graph, node: Node) -> dict[str, np.ndarray]:
    """Fresh state arrays of a neuron node: each filled with its initial-value attribute, or zeros."""
    definition = neuron_op(node.op)
    assert definition is not None and node.type is not None
    state, state_dtype = {}, state_type(node).np_dtype
    for name, init in definition.states:
        value = 0.0 if init is None else node.attr(init)
        array = np.empty(node.type.shape, dtype=state_dtype)
        array[...] = graph.weights[value.name] if isinstance(value, ParamRef) else F32(value)
        state[name] = array
    return state


class _Values:
    """Where values live during a run: a dict of arrays, or views into one arena at planned offsets."""

    def __init__(self, graph: Graph, simulate_plan: bool) -> None:
        self.graph = graph
        self.arena: np.ndarray | None = None
        self.arrays: dict[str, np.ndarray] = dict(graph.weights)
        self.packed: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}  # "bits" value -> (arena bytes, shape)
        # position -> buffers poisoned as their lifetime starts, then the streamed weights and transient states
        # filled into them (array name, value)
        self.poisoned: dict[int, list[Buffer]] = {}
        self.filled: dict[int, list[tuple[str, np.ndarray]]] = {}
        # whether the arena gets each state's initial value at its lifetime's start rather than before the run
        self.loads_state = simulate_plan and transient_states(graph)
        if simulate_plan:
            plan = graph.plan
            if plan is None:
                raise ValueError("simulate_plan needs a planned graph (run assign-offsets first)")
            types = {n.name: n.type for n in graph.nodes} | {f"@{p.name}": p.type for p in graph.params}
            types |= {s: state_type(n) for n in graph.nodes for s in state_names(n)}
            self.arena = np.full(plan.arena_bytes, 0xFF, dtype=np.uint8)
            for value, buffer in plan.values:
                base = value if value.startswith("@") else value.split("@")[0]  # a block's copy x@t is an x
                offset, vtype = plan.buffer(buffer).offset, types[base]
                stored = self.arena[offset : offset + vtype.nbytes]
                if vtype.dtype == "bits":  # words in the arena; `load` and `store` unpack and pack them
                    self.packed[value] = (stored, vtype.shape)
                else:
                    self.arrays[value] = stored.view(vtype.np_dtype).reshape(vtype.shape)
            for node in (n for n in graph.nodes if graph.elided(n.name)):  # kept in a fused kernel's registers
                for t in range(graph.schedule.block):
                    self.arrays[graph.copy_name(node.name, t)] = np.empty(node.type.shape, node.type.np_dtype)
            for param in graph.params:
                self.arrays[param.name] = self.arrays.pop(f"@{param.name}")
                self.arrays[param.name][...] = graph.weights[param.name]
            loaded = {f"@{name}": (name, graph.weights[name]) for name in graph.schedule.streamed}
            if self.loads_state:
                for node in (n for n in graph.nodes if neuron_op(n.op)):
                    loaded |= {
                        f"{node.name}.{k}": (f"{node.name}.{k}", a) for k, a in initial_state(graph, node).items()
                    }
            for buf in plan.buffers:
                if buf.name in loaded:
                    self.filled.setdefault(buf.start, []).append(loaded[buf.name])
                if buf.kind not in ("weight", "state") or buf.name in loaded:  # not pinned
                    self.poisoned.setdefault(buf.start, []).append(buf)

    def begin_position(self, position: int) -> None:
        """What happens to the arena as a position starts: every buffer whose lifetime starts is poisoned with 0xFF
        bytes (a NaN as float32, 255 as a spike), except pinned state and resident weights; streamed weight slots
        and transient states are then filled, as the loading thread would. A plan that overlaps live buffers, or
        starts a slot too late, then corrupts the results."""
        for buf in self.poisoned.get(position, []):
            self.arena[buf.offset : buf.offset + buf.size] = 0xFF
        for name, value in self.filled.get(position, []):
            self.arrays[name][...] = value

    def store(self, name: str, value: np.ndarray) -> None:
        if name in self.packed:
            self.packed[name][0][...] = pack_bits(value).view(np.uint8)
        elif self.arena is None:
            self.arrays[name] = value
        else:
            self.arrays[name][...] = value

    def load(self, name: str) -> np.ndarray:
        """A value's elements: bits unpacked to one 0/1 byte each, as the plain interpreter holds them."""
        if name in self.packed:
            return unpack_bits(*self.packed[name])
        return self.arrays[name]


def run(
    graph: Graph,
    x: np.ndarray,
    timesteps: int | None = None,
    simulate_plan: bool = False,
    on_value: Callable[[str, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Runs the graph. `x` is one sample (presented at every step) or a sequence with a leading time axis.
    `on_value(name, value)`, if given, sees each value as it is computed, step after step (the name of its copy
    in the plan's block when simulating the plan); `value` is the interpreter's own array, to copy if kept."""
    (input_node,) = graph.inputs
    sample_shape = input_node.type.shape
    x = np.asarray(x, dtype=F32)
    sequence = x.shape != sample_shape
    if sequence and x.shape[1:] != sample_shape:
        raise ValueError(f"input of shape {x.shape} is neither {sample_shape} nor (T, *{sample_shape})")
    steps = timesteps or (x.shape[0] if sequence else graph.timesteps)
    values = _Values(graph, simulate_plan)
    has_state = any(neuron_op(node.op) for node in graph.nodes)
    if values.loads_state and has_state and steps > graph.schedule.block:
        raise ValueError(
            f"the plan keeps neuron state within one block of {graph.schedule.block} steps; it cannot run {steps}"
        )
    for node in graph.nodes:
        if neuron_op(node.op) and not values.loads_state:
            for key, array in initial_state(graph, node).items():
                values.store(f"{node.name}.{key}", array)
    # The simulator runs the plan's order (blocks of steps, layer-major inside a block, each step's copy of a value
    # where the plan put it); the plain interpreter runs step by step, which computes the same.
    block = graph.schedule.block if simulate_plan else 1
    order = graph.positions() if simulate_plan else [(node, 0) for node in graph.nodes]
    name_of = (lambda value, t: graph.copy_name(value, t)) if simulate_plan else (lambda value, t: value)
    outputs = []
    for first in range(0, steps, block):
        count = min(block, steps - first)
        for position, (node, t) in enumerate(order):
            values.begin_position(position)
            # A batched node computes every step of the block at its first position (Graph.batched); a fused
            # neuron runs right after its operand, in the same kernel call (Graph.epilogue).
            batched = simulate_plan and graph.batched(node)
            if t >= count or (batched and t > 0) or (simulate_plan and node.attr("fused")):
                continue
            for step in range(t, count if batched else t + 1):
                copy = partial(name_of, t=step)
                sample = x[first + step] if sequence else x
                for computed in (node, graph.epilogue(node) if simulate_plan else None):
                    if computed is not None:
                        value = _execute(computed, values, sample, copy)
                        values.store(copy(computed.name), value)
                        if on_value is not None:
                            on_value(copy(computed.name), value)
                for delay in graph.delays_of(node.name):
                    values.arrays[f"{delay.name}.last"][...] = values.arrays[copy(node.name)]
        outputs += [values.arrays[name_of(graph.output, t)].copy() for t in range(count)]
    return np.stack(outputs)


def _execute(node: Node, values: _Values, sample: np.ndarray, copy: Callable[[str], str]) -> np.ndarray:
    """Runs one node; `copy` names the copy of each value for the step being run."""

    def param(key: str) -> np.ndarray | None:
        value = node.attr(key)
        if value is None:
            return None
        return values.arrays[value.name] if isinstance(value, ParamRef) else F32(value)

    operands = [values.load(copy(v)) for v in node.inputs]
    if node.type.dtype == "f32":  # spikes read as 0.0 / 1.0
        operands = [operand.astype(F32, copy=False) for operand in operands]
    if node.op == "input":
        return sample
    if node.op == "delay":
        return values.arrays[f"{node.name}.last"].copy()
    if node.op in ELEMENTWISE_OPS:
        return elementwise(node, operands, param)
    if neuron_op(node.op):
        state = {s.split(".")[-1]: values.arrays[s] for s in state_names(node)}
        return neuron_step(node, operands[0], state, param)
    if node.op == "conv2d":
        return conv2d(node, operands[0], param)
    if node.op == "dense":
        return dense(node, operands[0], param)
    if node.op in ("maxpool2d", "avgpool2d", "sumpool2d"):
        return pool2d(node, operands[0])
    if node.op == "adaptive_avgpool2d":
        return adaptive_avgpool2d(node, operands[0])
    if node.op == "batchnorm2d":
        return batchnorm2d(node, operands[0], param)
    if node.op in ("flatten", "reshape"):
        return operands[0].reshape(node.type.shape)
    if node.op == "concat":
        return np.concatenate(operands, axis=node.attr("axis", 0))
    if node.op == "crop_rows":
        lo, hi = node.attr("rows")
        return operands[0][:, lo:hi].copy()
    raise NotImplementedError(f"the interpreter has no rule for op {node.op!r}")
