"""Graph IR of one timestep of a spiking network.

A `Graph` is an ordered tuple of `Node`s in a valid execution order. Every node produces one value named after the
node. Per-sample shapes only: the batch dimension is always 1 and never written. Weights are `Param`s referenced
from node attributes as `ParamRef`s; their data lives in `Graph.weights` (not part of the textual form, not part of
equality). Neuron ops carry state (membrane, current) from one step to the next; the op table in `masic.ir.ops`
says which state each op has.

After planning, `Graph.plan` holds every buffer's kind, size, lifetime and arena offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from math import prod

import numpy as np

from masic.ir import names
from masic.ir.names import BufferId
from masic.ir.node import (
    ACTIVATION_LAYOUT,
    DTYPES,
    SPIKE_DTYPES,
    WEIGHT_DTYPES,
    WORD_BITS,
    AttrValue,
    Node,
    ParamRef,
    TensorType,
    pack_bits,
    unpack_bits,
    words,
)
from masic.ir.ops import OPS

# The graph module is where the IR's types are imported from: nodes and value types are defined in masic.ir.node,
# below the op table, and exported here with the graph.
__all__ = [
    "ACTIVATION_LAYOUT",
    "BUFFER_KINDS",
    "DTYPES",
    "SPIKE_DTYPES",
    "WEIGHT_DTYPES",
    "WORD_BITS",
    "AttrValue",
    "Buffer",
    "Graph",
    "Node",
    "Param",
    "ParamRef",
    "Plan",
    "Schedule",
    "TensorType",
    "pack_bits",
    "unpack_bits",
    "words",
]


_COMPRESSED = {DTYPES[dtype]: dtype for dtype in WEIGHT_DTYPES if dtype != "f32"}


@dataclass(frozen=True)
class Param:
    name: str
    type: TensorType


BUFFER_KINDS = ("weight", "state", "activation", "scratch", "io")


@dataclass(frozen=True)
class Buffer:
    """A region of the arena, live over positions [start, end) of every block (Graph.positions); resident weights
    and neuron state carried from block to block span the whole block and so stay in place for the whole run. It is
    named by the identity it was made for (`masic.ir.names`): the value owning it, a state, parameter or scratch."""

    name: BufferId
    kind: str
    size: int
    start: int
    end: int
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Plan:
    """Fixed arena layout: every buffer at an aligned offset. `values` maps each value copy, state and parameter to
    the buffer that holds it, so views such as flatten can share their input's buffer."""

    arena_bytes: int
    alignment: int
    lower_bound: int
    buffers: tuple[Buffer, ...]
    values: tuple[tuple[BufferId, BufferId], ...]

    @cached_property
    def _buffers_by_name(self) -> dict[BufferId, Buffer]:
        return {b.name: b for b in self.buffers}

    @cached_property
    def _buffer_of_value(self) -> dict[BufferId, BufferId]:
        return dict(self.values)

    def buffer(self, name: BufferId) -> Buffer:
        return self._buffers_by_name[name]

    def buffer_of(self, value: BufferId) -> Buffer:
        return self.buffer(self._buffer_of_value[value])

    def locate(self, name: BufferId) -> Buffer:
        """The buffer holding a value, state or parameter, or else the buffer of that identity (kernel scratch)."""
        return self.buffer_of(name) if name in self._buffer_of_value else self.buffer(name)


@dataclass(frozen=True)
class Schedule:
    """How the timestep loop runs (decided by the schedule pass).

    `block` timesteps run per pass over the layers: 1 is timestep-major (every layer each step); with more, each
    layer runs for all the block's steps before the next layer (layer-major within the block), so every value
    exists once per step of the block while weights are read once per block. `streamed` weights stay in
    weights.bin and are read into an arena slot once per block, starting `prefetch` positions before their first
    use so the read overlaps computation; all other weights are resident for the whole run. When one block covers
    the whole run (`block >= timesteps`, no delays), each layer's neuron state lives only while the layer runs and
    is loaded like a streamed weight (`transient_states`), unless `carry_state` keeps it in
    place from block to block so that the artifact runs inputs longer than one block (the plan without a budget).

    In blocks of more than one step, a dense layer computes all the block's steps in one call at its first
    position (`Graph.batched`): one pass over its weights instead of one per step.
    """

    block: int = 1
    streamed: tuple[str, ...] = ()
    prefetch: int = 1
    carry_state: bool = False


@dataclass(frozen=True)
class Port:
    """One named tensor of a model's interface when it has several inputs or several outputs (a NIR graph's Input
    and Output nodes). The graph keeps one input node and one output value, the loader one input and one output
    buffer a step: each is the concatenation of its ports, in the order listed, each flattened in C order
    (`Graph.input_ports`, `Graph.output_ports`; `masic.ir.ports` packs and splits them)."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class Graph:
    """One timestep of a model (module docstring). `input_ports` / `output_ports` name the parts of the input and
    the output when the model has several (`Port`); empty, the input and the output are one tensor each."""

    name: str
    nodes: tuple[Node, ...]
    output: str
    params: tuple[Param, ...] = ()
    timesteps: int = 1
    plan: Plan | None = None
    schedule: Schedule = Schedule()
    weights: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    input_ports: tuple[Port, ...] = ()
    output_ports: tuple[Port, ...] = ()

    @cached_property
    def _nodes_by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def _params_by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def node(self, name: str) -> Node:
        return self._nodes_by_name[name]

    def param(self, name: str) -> Param:
        return self._params_by_name[name]

    @property
    def inputs(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if OPS[n.op].graph_input)

    def positions(self) -> list[tuple[Node, int]]:
        """One block's kernel calls in execution order, (node, step within the block): layer-major."""
        return [(node, t) for node in self.nodes for t in range(self.schedule.block)]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {n.name: k for k, n in enumerate(self.nodes)}

    @cached_property
    def _delays(self) -> dict[str, tuple[Node, ...]]:
        delays: dict[str, tuple[Node, ...]] = {}
        for node in self.nodes:
            if OPS[node.op].delay:
                delays[node.attr("source")] = (*delays.get(node.attr("source"), ()), node)
        return delays

    def delays_of(self, value: str) -> tuple[Node, ...]:
        """The delays whose source is `value` (each copies it into its state right after it is computed)."""
        return self._delays.get(value, ())

    @cached_property
    def _epilogues(self) -> dict[str, Node]:
        return {n.inputs[0]: n for n in self.nodes if n.attr("fused")}

    def epilogue(self, node: Node) -> Node | None:
        """The neuron fused into a conv or dense node's kernel (`fused=true`, the fuse-neurons pass), if any: one
        call at the node's position computes the layer and the neuron update, so the node's own value is never
        stored (`elided`) and the neuron's positions run nothing."""
        return self._epilogues.get(node.name)

    def elided(self, value: str) -> bool:
        """Whether a value (not a step's copy) exists only inside a fused kernel, in registers: no buffer holds it."""
        return value in self._epilogues

    def layout(self, value: str) -> str:
        """How a value is stored: its producer's `layout` attribute (the layout pass's choice), else "NCHW"."""
        return self.node(value).attr("layout", ACTIVATION_LAYOUT)

    def batched(self, node: Node) -> bool:
        """Whether the node computes every step of a block in one call, at its first position (step 0): ops that
        batch (`OpDef.batches`: dense layers) in blocks of several steps, which then read their weights once per
        block. Its positions for steps 1.. run
        nothing; it reads all its operands' copies and writes all its outputs' copies at the first."""
        return self.schedule.block > 1 and OPS[node.op].batches

    def call_position(self, position: int, node: Node, step: int) -> int:
        """The position whose kernel call computes `node` for `step`, given the node's position for that step: a
        fused neuron's is its operand's (layer-major, `block` positions per node)."""
        if self.batched(node):
            return position - step
        if node.attr("fused"):
            return position - (self._index[node.name] - self._index[node.inputs[0]]) * self.schedule.block
        return position

    def copy(self, ident: BufferId, step: int) -> BufferId:
        """A value's or kernel scratch's copy for one step of a block (`BufferId.per_step`): the identity itself when
        blocks are single steps."""
        return ident if self.schedule.block == 1 else ident.at(step)

    @cached_property
    def _value_copies(self) -> dict[str, tuple[BufferId, ...]]:
        """Each value's copies, one per step of a block: made once, as planning asks for them very often."""
        steps = range(self.schedule.block) if self.schedule.block > 1 else (None,)
        return {n.name: tuple(names.value(n.name, step) for step in steps) for n in self.nodes}

    def value_copy(self, name: str, step: int) -> BufferId:
        """The copy of the value of node `name` for one step of a block (`copy`)."""
        return self._value_copies[name][step if self.schedule.block > 1 else 0]

    @cached_property
    def _users(self) -> dict[str, tuple[Node, ...]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for value in dict.fromkeys(node.inputs):  # a node reading a value twice is one user
                users.setdefault(value, []).append(node)
        return {value: tuple(nodes) for value, nodes in users.items()}

    def users(self, value: str) -> tuple[Node, ...]:
        """The nodes reading `value`, in graph order (indexed once per graph: passes ask for every node's)."""
        return self._users.get(value, ())

    def with_nodes(self, nodes: tuple[Node, ...] | list[Node]) -> Graph:
        """A copy with new nodes; parameters no node references any more are dropped with their weights."""
        nodes = tuple(nodes)
        used = {ref.name for n in nodes for _, ref in n.param_refs()}
        params = tuple(p for p in self.params if p.name in used)
        weights = {k: v for k, v in self.weights.items() if k in used}
        return replace(self, nodes=nodes, params=params, weights=weights)

    def with_params(self, new: Mapping[str, np.ndarray]) -> Graph:
        """A copy with parameters added or replaced, type taken from the array: float32, or a compressed weight's
        float16 or int8 (`masic.ir.weight_formats`) kept as it is."""
        weights = dict(self.weights)
        params = {p.name: p for p in self.params}
        for name, array in new.items():
            dtype = _COMPRESSED.get(np.dtype(array.dtype), "f32")
            array = np.ascontiguousarray(array, dtype=DTYPES[dtype])
            weights[name] = array
            params[name] = Param(name, TensorType(tuple(array.shape), dtype))
        return replace(self, params=tuple(params.values()), weights=weights)


def transient_states(graph: Graph) -> bool:
    """Whether the graph's neuron state lives only while its node runs, rather than for the whole run.

    True when one block covers the whole run (`schedule.block >= timesteps`: every node runs all its steps at once,
    layer-major), no `delay` carries a value from one step to the next across nodes, and the schedule does not ask
    to carry state over blocks (`Schedule.carry_state`). Liveness, code generation
    and the plan simulator all decide by this function. Such a plan loads every state's initial value at the start
    of its node's lifetime in each block, so it cannot run more steps than one block: state would not carry over.
    """
    schedule = graph.schedule
    if schedule.carry_state or schedule.block < graph.timesteps:
        return False
    return not any(OPS[node.op].delay for node in graph.nodes)
