"""NumPy reference interpreter of the IR, and the plan simulator built on it.

`run(graph, x)` executes the graph for T timesteps and returns the output of every step, shape (T, *output). Each
node runs its op's `interpret` hook (`masic.ir.ops`): the op's reference implementation in `masic.ir.reference`
(neurons their families' updates, element-wise ops the functions of `masic.ir.elementwise`, both with the numpy
backend of `masic.ir.arith`), so that given the same synaptic input the neurons reproduce Norse bit-for-bit, the
element-wise ops PyTorch's float32 arithmetic, and the kernels, which run the same definitions, the interpreter. A
`delay` outputs its state, and its state takes its source's value right after the source is computed. Values of
type `spike` are uint8 arrays of 0/1, as the compiled kernels store them; ops with a float32 output read them as
0.0 / 1.0. Values of type `bits` are held the same way (one 0/1 byte each): the interpreter computes logical
values, and only the plan simulator stores them packed in its arena.

With `simulate_plan=True` every value, state and weight lives inside one byte array at the offset the plan gives
it, and each buffer is filled with NaN when its lifetime starts: a plan that lets two live buffers overlap, or
that ends a lifetime too early, corrupts the result instead of passing silently (a poisoned spike byte reads as
255, not 0 or 1; a poisoned word of bits as 32 spikes). Streamed weights and transient
states (`masic.ir.graph.transient_states`) are then filled in, as the loading thread would: a plan that
starts their lifetimes too late corrupts the result too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import numpy as np

from masic.ir import names
from masic.ir.graph import Buffer, Graph, Node, ParamRef, TensorType, pack_bits, transient_states, unpack_bits
from masic.ir.names import BufferId
from masic.ir.ops import OPS, neuron_op, state_names, state_type
from masic.ir.ports import pack
from masic.ir.reference import Step

F32 = np.float32


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
        self.arrays: dict[BufferId, np.ndarray] = {names.param(k): array for k, array in graph.weights.items()}
        self.packed: dict[BufferId, tuple[np.ndarray, tuple[int, ...]]] = {}  # "bits" value -> (arena bytes, shape)
        # position -> buffers poisoned as their lifetime starts, then the streamed weights and transient states
        # filled into them (what, value)
        self.poisoned: dict[int, list[Buffer]] = {}
        self.filled: dict[int, list[tuple[BufferId, np.ndarray]]] = {}
        # whether the arena gets each state's initial value at its lifetime's start rather than before the run
        self.loads_state = simulate_plan and transient_states(graph)
        if simulate_plan:
            plan = graph.plan
            if plan is None:
                raise ValueError("simulate_plan needs a planned graph (run assign-offsets first)")
            self.arena = np.full(plan.arena_bytes, 0xFF, dtype=np.uint8)
            for value, buffer in plan.values:
                offset, vtype = plan.buffer(buffer).offset, _type(graph, value)
                stored = self.arena[offset : offset + vtype.nbytes]
                if vtype.dtype == "bits":  # words in the arena; `load` and `store` unpack and pack them
                    self.packed[value] = (stored, vtype.shape)
                else:
                    self.arrays[value] = stored.view(vtype.np_dtype).reshape(vtype.shape)
            for node in (n for n in graph.nodes if graph.elided(n.name)):  # kept in a fused kernel's registers
                for t in range(graph.schedule.block):
                    self.arrays[graph.value_copy(node.name, t)] = np.empty(node.type.shape, node.type.np_dtype)
            for param in graph.params:
                self.arrays[names.param(param.name)][...] = graph.weights[param.name]
            loaded = {names.param(name): graph.weights[name] for name in graph.schedule.streamed}
            if self.loads_state:
                for node in (n for n in graph.nodes if neuron_op(n.op)):
                    loaded |= {names.state(node.name, k): a for k, a in initial_state(graph, node).items()}
            for buf in plan.buffers:
                if buf.name in loaded:
                    self.filled.setdefault(buf.start, []).append((buf.name, loaded[buf.name]))
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

    def store(self, name: BufferId, value: np.ndarray) -> None:
        if name in self.packed:
            self.packed[name][0][...] = pack_bits(value).view(np.uint8)
        elif self.arena is None:
            self.arrays[name] = value
        else:
            self.arrays[name][...] = value

    def load(self, name: BufferId) -> np.ndarray:
        """A value's elements: bits unpacked to one 0/1 byte each, as the plain interpreter holds them."""
        if name in self.packed:
            return unpack_bits(*self.packed[name])
        return self.arrays[name]


def run(
    graph: Graph,
    x: np.ndarray | Mapping[str, np.ndarray],
    timesteps: int | None = None,
    simulate_plan: bool = False,
    on_value: Callable[[BufferId, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Runs the graph. `x` is one sample (presented at every step) or a sequence with a leading time axis; for a
    graph with input ports, it may be one such array per port, by name (packed by `masic.ir.ports.pack`). The
    output of a graph with output ports is packed (`masic.ir.ports.split` names its parts).
    `on_value(name, value)`, if given, sees each value as it is computed, step after step (the name of its copy
    in the plan's block when simulating the plan); `value` is the interpreter's own array, to copy if kept."""
    if isinstance(x, Mapping):
        x = pack(graph.input_ports, x)
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
                values.store(names.state(node.name, key), array)
    # The simulator runs the plan's order (blocks of steps, layer-major inside a block, each step's copy of a value
    # where the plan put it); the plain interpreter runs step by step, which computes the same.
    block = graph.schedule.block if simulate_plan else 1
    order = graph.positions() if simulate_plan else [(node, 0) for node in graph.nodes]
    name_of = graph.value_copy if simulate_plan else (lambda value, step: names.value(value))
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
                copy = partial(name_of, step=step)
                sample = x[first + step] if sequence else x
                for computed in (node, graph.epilogue(node) if simulate_plan else None):
                    if computed is not None:
                        value = _execute(computed, values, sample, copy)
                        values.store(copy(computed.name), value)
                        if on_value is not None:
                            on_value(copy(computed.name), value)
                for delay in graph.delays_of(node.name):
                    (last,) = state_names(delay)
                    values.arrays[last][...] = values.arrays[copy(node.name)]
        outputs += [values.arrays[name_of(graph.output, step)].copy() for step in range(count)]
    return np.stack(outputs)


def _type(graph: Graph, ident: BufferId) -> TensorType:
    """The type of what a plan places: a value (any step's copy), a state or a parameter."""
    if ident.kind == "param":
        return graph.param(ident.node).type
    node = graph.node(ident.node)
    return state_type(node) if ident.kind == "state" else node.type


def _execute(node: Node, values: _Values, sample: np.ndarray, copy: Callable[[str], BufferId]) -> np.ndarray:
    """Runs one node; `copy` gives the copy of each value for the step being run."""

    def param(key: str) -> np.ndarray | None:
        value = node.attr(key)
        if value is None:
            return None
        return values.arrays[names.param(value.name)] if isinstance(value, ParamRef) else F32(value)

    operands = [values.load(copy(v)) for v in node.inputs]
    if node.type.dtype == "f32":  # spikes read as 0.0 / 1.0
        operands = [operand.astype(F32, copy=False) for operand in operands]
    state = {s.field: values.arrays[s] for s in state_names(node)}
    return OPS[node.op].interpret(node, Step(operands, param, state, sample))
