"""Layout of weights.bin: every weight of the plan (resident or streamed), then every neuron state's initial value.

Each block starts at a multiple of 64 bytes, in plan order, so the loader reads it with one aligned pread straight
into its arena slot. The file's size goes into model.c and the manifest, and each block's CRC-32C (`crc32c`) into
model.c's tables beside its offsets: the loader checks a block right after reading it into the arena (resident
weights at start, initial states before each sample, streamed pieces in the loading thread), so nothing reads the
file a second time to check it, and `model --check` verifies every block. Initial states are copied in before each
sample (`state_init`) or, when states are transient (`masic.ir.graph.transient_states`), by the loading
thread once per block like streamed weights (`state_loads`).

A weight is stored in the layout its node's `weight_layout` attribute names, a per-element parameter and a neuron's
initial state in its node's `layout` (`stored_weight`); `Graph.weights` keeps the logical layout, so the interpreter
and the passes never see a stored one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masic.analysis.liveness import align_up
from masic.codegen.crc32c import crc32c
from masic.ir import names
from masic.ir.graph import Graph, transient_states
from masic.ir.interpret import initial_state
from masic.ir.names import BufferId
from masic.ir.ops import neuron_op
from masic.ir.shapes import activation_block, weight_block
from masic.ir.verify import weight_layouts

FILE_ALIGNMENT = 64


def stored_weight(array: np.ndarray, layout: str | None) -> np.ndarray:
    """A weight as weights.bin stores it in `layout` (a node's `weight_layout`; None: the logical layout, as in
    `Graph.weights`).

    "IO": a dense (out, in) matrix transposed, an input's weights contiguous, for the accumulate-only kernel.
    "OIHW{ob}o": blocks of ob output channels, each (I, kh, kw, ob) with the ob channels innermost, so a conv kernel
    vectorised along output channels reads one contiguous vector per input tap. ob divides O: no padding, the
    stored weight has as many bytes as the logical one.
    "NCHW{c}c": a (C, H, W) per-element parameter or neuron state of a value stored so (`Graph.layout`), as
    (C/c, H, W, c); c divides C.
    """
    match layout:
        case None | "OIHW" | "NCHW":
            return array
        case "IO":
            return array.T
        case _ if layout.startswith("NCHW"):
            block = activation_block(layout)
            c, h, w = array.shape
            return array.reshape(c // block, block, h, w).transpose(0, 2, 3, 1)
        case _ if layout.startswith("OIHW"):
            block = weight_block(layout)
            o, i, kh, kw = array.shape
            if o % block:
                raise ValueError(f"layout {layout}: block {block} does not divide {o} output channels")
            return array.reshape(o // block, block, i, kh, kw).transpose(0, 2, 3, 4, 1)
    raise ValueError(f"unknown weight layout {layout!r}")


@dataclass(frozen=True)
class Segment:
    """Bytes for the arena slot of `buffer` (a parameter or a state; `name` its text, but a parameter's without the
    "@"): read from weights.bin at `file_offset`, or, with `fill` set, that float32 value in every element, with
    nothing stored in the file (a transient state's uniform initial value). `crc32c` is the CRC-32C of the bytes
    read (0 for a fill)."""

    buffer: BufferId
    name: str
    file_offset: int
    arena_offset: int
    nbytes: int
    crc32c: int = 0
    fill: float | None = None


@dataclass(frozen=True)
class WeightsFile:
    resident: tuple[Segment, ...]
    state_init: tuple[Segment, ...]
    nbytes: int
    streamed: tuple[Segment, ...] = ()  # read into their slots once per block (Schedule.streamed)
    state_loads: tuple[Segment, ...] = ()  # transient states' initial values, read once per block (not state_init)

    @property
    def pieces(self) -> tuple[Segment, ...]:
        """The segments read from the file, each with its CRC-32C (fills read nothing)."""
        every = (*self.resident, *self.state_init, *self.streamed, *self.state_loads)
        return tuple(s for s in every if s.fill is None)


def write_weights(graph: Graph, path: Path) -> WeightsFile:
    """Writes weights.bin for a planned graph and returns its layout."""
    plan = graph.plan
    assert plan is not None, "write_weights needs a planned graph"
    blocks = [(names.param(p.name), p.name, graph.weights[p.name]) for p in graph.params]
    states: list[tuple[BufferId, str, np.ndarray]] = []
    for node in graph.nodes:
        if neuron_op(node.op):  # a neuron's state is stored in its output's layout
            layout = node.attr("layout")
            for key, array in initial_state(graph, node).items():
                ident = names.state(node.name, key)
                states.append((ident, str(ident), stored_weight(array, layout)))
    streamed_names = set(graph.schedule.streamed)
    layouts = weight_layouts(graph)
    transient = transient_states(graph)
    resident, streamed, state_init, state_loads, offset = [], [], [], [], 0
    with path.open("wb") as out:
        for kind, items in (("weight", blocks), ("state", states)):
            for ident, name, array in items:
                if kind == "state" and transient and array.size and (array == array.flat[0]).all():
                    # Filled by the loading thread, not read: patched and sliced graphs have many such states.
                    buffer_offset = plan.buffer_of(ident).offset
                    state_loads.append(Segment(ident, name, 0, buffer_offset, array.nbytes, fill=float(array.flat[0])))
                    continue
                stored = stored_weight(array, layouts.get(name)) if kind == "weight" else array
                # weights in their stored type (masic.ir.weight_formats); states in their own (a delay of spikes
                # holds bytes)
                dtype = graph.param(name).type.np_dtype if kind == "weight" else array.dtype
                data = np.ascontiguousarray(stored, dtype=dtype)
                padding = b"\0" * (align_up(offset, FILE_ALIGNMENT) - offset)
                out.write(padding)
                offset += len(padding)
                segment = Segment(ident, name, offset, plan.buffer_of(ident).offset, data.nbytes, crc32c(data))
                if kind == "state":
                    (state_loads if transient else state_init).append(segment)
                else:
                    (streamed if name in streamed_names else resident).append(segment)
                out.write(data.tobytes())
                offset += data.nbytes
    return WeightsFile(tuple(resident), tuple(state_init), offset, tuple(streamed), tuple(state_loads))
