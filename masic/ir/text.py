"""Deterministic textual form of the IR, and its parser: `parse(print_graph(g), g.weights) == g`.

    // a comment: lines whose first non-blank characters are // are skipped (`masic opt` tests keep RUN and CHECK
    // lines in them)
    graph @digits timesteps=16 {
      param @fc1.weight : f32[128,64]
      %x = input() : f32[64]
      %fc1 = dense(%x) {weight=@fc1.weight, in_features=64, out_features=128} : f32[128] loc("fc1: Linear")
      output %fc1
    }
    plan arena=33280 align=16 lower_bound=33280 {
      buffer @fc1.weight weight size=32768 live=[0,2) offset=0
      value %fc1 -> fc1
    }

A graph whose input or output packs several named tensors (`masic.ir.graph.Port`) lists them after its output
line, `ports input a[3] b[2,5]` and `ports output p[10] q[1]`, in order.

Types are an element type and a shape: `f32[128]`, `spike[64,8,8]` for spikes stored one byte each, or
`bits[1024]` for spikes bit-packed 32 to a 32-bit word (`masic.ir.graph.DTYPES`); a compressed weight is
`f16[...]` or `i8[...]` (`masic.ir.weight_formats`).
Floats are printed with Python's shortest repr, which parses back to the same value exactly.

Weights are referred to by name: a `param @name : f32[shape]` line declares one, and attributes refer to it as
`@name`. Their values are not part of the text. `parse` takes them by name (`masic opt --weights W.npz`: the .npz
keys are the parameter names); a declared parameter given no values gets deterministic random ones
(`random_weight`): float32 drawn uniformly from [0, 1) by a generator seeded with the SHA-256 of its name, so the
same name and shape always get the same values, on every machine. [0, 1) lies in the domain of every kind of
parameter (weights, biases, batch-norm variances, per-neuron thresholds and time constants), so a text alone is a
complete, compilable graph: a test input for any pass.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from masic.ir import names
from masic.ir.graph import DTYPES, AttrValue, Buffer, Graph, Node, Param, ParamRef, Plan, Port, Schedule, TensorType
from masic.ir.names import BufferId
from masic.ir.ops import state_names
from masic.ir.weight_formats import INT8_LEVELS

_NAME = r"[A-Za-z0-9_.\-]+"


def format_type(t: TensorType | None) -> str:
    return str(t) if t is not None else "?"


def format_attr(value: AttrValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, ParamRef):
        return str(value)
    if isinstance(value, tuple):
        return "(" + ",".join(map(str, value)) + ")"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def format_node(node: Node) -> str:
    attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in node.attrs)
    text = f"%{node.name} = {node.op}({', '.join('%' + i for i in node.inputs)})"
    if attrs:
        text += f" {{{attrs}}}"
    text += f" : {format_type(node.type)}"
    if node.loc:
        text += f" loc({json.dumps(node.loc)})"
    return text


def _sigil(value: BufferId) -> str:
    """A placed thing as the plan's text shows it: a parameter by its `@name`, anything else as a `%value`."""
    return str(value) if value.kind == "param" else f"%{value}"


def print_graph(graph: Graph) -> str:
    lines = [f"graph @{graph.name} timesteps={graph.timesteps} {{"]
    lines += [f"  param @{p.name} : {p.type}" for p in graph.params]
    lines += [f"  {format_node(n)}" for n in graph.nodes]
    lines.append(f"  output %{graph.output}")
    for kind, ports in (("input", graph.input_ports), ("output", graph.output_ports)):
        if ports:
            lines.append(f"  ports {kind} " + " ".join(f"{p.name}[{','.join(map(str, p.shape))}]" for p in ports))
    if graph.schedule != Schedule():
        s = graph.schedule
        streamed = ", ".join(f"@{p}" for p in s.streamed)
        carry = " carry_state" if s.carry_state else ""
        lines.append(f"  schedule block={s.block} prefetch={s.prefetch} streamed=({streamed}){carry}")
    lines.append("}")
    if graph.plan is not None:
        plan = graph.plan
        lines.append(f"plan arena={plan.arena_bytes} align={plan.alignment} lower_bound={plan.lower_bound} {{")
        lines += [
            f"  buffer {b.name} {b.kind} size={b.size} live=[{b.start},{b.end}) offset={b.offset}" for b in plan.buffers
        ]
        lines += [f"  value {_sigil(value)} -> {buffer}" for value, buffer in plan.values]
        lines.append("}")
    return "\n".join(lines) + "\n"


class ParseError(ValueError):
    def __init__(self, line_no: int, line: str, message: str) -> None:
        super().__init__(f"line {line_no}: {message}\n  {line.strip()}")


_TYPE = re.compile(r"^(?P<dtype>[a-z0-9]+)\[(?P<shape>[0-9,]*)\]$")
_GRAPH = re.compile(rf"^graph @(?P<name>{_NAME}) timesteps=(?P<t>\d+) \{{$")
_PARAM = re.compile(rf"^param @(?P<name>{_NAME}) : (?P<type>\S+)$")
_NODE = re.compile(
    rf"^%(?P<name>{_NAME}) = (?P<op>[a-z0-9_]+)\((?P<inputs>[^)]*)\)"
    r"(?: \{(?P<attrs>.*)\})? : (?P<type>\S+)(?: loc\((?P<loc>\".*\")\))?$"
)
_OUTPUT = re.compile(rf"^output %(?P<name>{_NAME})$")
_PORTS = re.compile(rf"^ports (?P<kind>input|output)(?P<ports>(?: {_NAME}\[[0-9,]+\])+)$")
_PORT = re.compile(rf" (?P<name>{_NAME})\[(?P<shape>[0-9,]+)\]")
_SCHEDULE = re.compile(
    r"^schedule block=(?P<block>\d+) prefetch=(?P<prefetch>\d+) streamed=\((?P<streamed>[^)]*)\)"
    r"(?P<carry> carry_state)?$"
)
_PLAN = re.compile(r"^plan arena=(?P<arena>\d+) align=(?P<align>\d+) lower_bound=(?P<lb>\d+) \{$")
_BUFFER = re.compile(
    r"^buffer (?P<name>\S+) (?P<kind>[a-z]+) size=(?P<size>\d+) live=\[(?P<start>\d+),(?P<end>\d+)\) "
    r"offset=(?P<offset>-?\d+)$"
)
_VALUE = re.compile(rf"^value (?:%(?P<value>{_NAME}(?:@\d+)?)|(?P<param>@{_NAME})) -> (?P<buffer>\S+)$")
_ATTR = re.compile(rf"\s*([a-z_][a-z0-9_]*)=(\"(?:[^\"\\]|\\.)*\"|\([0-9,\-]*\)|@{_NAME}|[^,]+)\s*(?:,|$)")


def parse_type(text: str) -> TensorType | None:
    if text == "?":
        return None
    match = _TYPE.match(text)
    if not match:
        raise ValueError(f"malformed type {text!r}")
    if match["dtype"] not in DTYPES:
        raise ValueError(f"unknown element type {match['dtype']!r} (known: {', '.join(DTYPES)})")
    shape = match["shape"]
    return TensorType(tuple(int(s) for s in shape.split(",")) if shape else (), match["dtype"])


def parse_attr(text: str) -> AttrValue:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("@"):
        return ParamRef(text[1:])
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("("):
        inner = text[1:-1]
        return tuple(int(v) for v in inner.split(",")) if inner else ()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return float(text)


def _parse_attrs(text: str | None) -> tuple[tuple[str, AttrValue], ...]:
    if not text:
        return ()
    attrs, pos = [], 0
    while pos < len(text):
        match = _ATTR.match(text, pos)
        if not match:
            raise ValueError(f"malformed attributes at {text[pos:]!r}")
        attrs.append((match[1], parse_attr(match[2])))
        pos = match.end()
    return tuple(attrs)


def random_weight(param: Param) -> np.ndarray:
    """The values a parameter gets when none are given: float32 uniform on [0, 1) (rounded to half for a float16
    weight; an int8 weight's uniform on [-127, 127]), seeded by its name."""
    seed = int.from_bytes(hashlib.sha256(param.name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    if param.type.dtype == "i8":
        return rng.integers(-INT8_LEVELS, INT8_LEVELS, param.type.shape, dtype=np.int8, endpoint=True)
    return rng.random(param.type.shape, dtype=np.float32).astype(param.type.np_dtype)


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("//")


def parse(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parses the textual form. Weights are taken by parameter name from `weights` as given; a declared parameter
    missing there gets `random_weight`'s values."""
    weights = weights or {}
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if _is_code(line)]
    graph: dict = {}
    params: list[Param] = []
    nodes: list[Node] = []
    plan_head: re.Match[str] | None = None
    # The plan's lines as written (line number, line, names and figures): names resolve once the graph is known
    buffers: list[tuple[int, str, str, str, int, int, int, int]] = []
    values: list[tuple[int, str, str, str]] = []
    section = "top"
    for line_no, raw in lines:
        line = raw.strip()
        try:
            if section == "top" and (m := _GRAPH.match(line)):
                graph.update(name=m["name"], timesteps=int(m["t"]))
                section = "graph"
            elif section == "graph" and (m := _PARAM.match(line)):
                params.append(Param(m["name"], parse_type(m["type"])))
            elif section == "graph" and (m := _NODE.match(line)):
                inputs = tuple(s.strip()[1:] for s in m["inputs"].split(",") if s.strip())
                loc = json.loads(m["loc"]) if m["loc"] else ""
                nodes.append(Node(m["name"], m["op"], inputs, _parse_attrs(m["attrs"]), parse_type(m["type"]), loc))
            elif section == "graph" and (m := _SCHEDULE.match(line)):
                streamed = tuple(s.strip().removeprefix("@") for s in m["streamed"].split(",") if s.strip())
                graph["schedule"] = Schedule(int(m["block"]), streamed, int(m["prefetch"]), m["carry"] is not None)
            elif section == "graph" and (m := _OUTPUT.match(line)):
                graph["output"] = m["name"]
            elif section == "graph" and (m := _PORTS.match(line)):
                ports = (
                    Port(p["name"], tuple(int(d) for d in p["shape"].split(","))) for p in _PORT.finditer(m["ports"])
                )
                graph[f"{m['kind']}_ports"] = tuple(ports)
            elif section in ("graph", "plan") and line == "}":
                section = "top"
            elif section == "top" and (m := _PLAN.match(line)):
                plan_head, section = m, "plan"
            elif section == "plan" and (m := _BUFFER.match(line)):
                sizes = (int(m["size"]), int(m["start"]), int(m["end"]), int(m["offset"]))
                buffers.append((line_no, raw, m["name"], m["kind"], *sizes))
            elif section == "plan" and (m := _VALUE.match(line)):
                values.append((line_no, raw, m["value"] or m["param"], m["buffer"]))
            else:
                raise ValueError("unexpected line")
        except ValueError as err:
            raise ParseError(line_no, raw, str(err)) from None
    if "name" not in graph or "output" not in graph:
        raise ParseError(len(text.splitlines()), "", "incomplete graph: missing header or output line")
    parsed = Graph(
        name=graph["name"],
        nodes=tuple(nodes),
        output=graph["output"],
        params=tuple(params),
        timesteps=graph["timesteps"],
        schedule=graph.get("schedule", Schedule()),
        input_ports=graph.get("input_ports", ()),
        output_ports=graph.get("output_ports", ()),
        weights={**weights, **{p.name: random_weight(p) for p in params if p.name not in weights}},
    )
    if plan_head is None:
        return parsed
    known = placeable(parsed)

    def resolve(line_no: int, raw: str, text: str) -> BufferId:
        if text not in known:
            raise ParseError(line_no, raw, f"{text} is no value, state, parameter or scratch of the graph")
        return known[text]

    placed = tuple(Buffer(resolve(n, raw, name), *rest) for n, raw, name, *rest in buffers)
    mapping = tuple((resolve(n, raw, value), resolve(n, raw, buffer)) for n, raw, value, buffer in values)
    head = (int(plan_head["arena"]), int(plan_head["align"]), int(plan_head["lb"]))
    return replace(parsed, plan=Plan(*head, placed, mapping))


def placeable(graph: Graph) -> dict[str, BufferId]:
    """Everything a plan of the graph may place, by its text (`masic.ir.names`): each value's and kernel scratch's
    copies for the steps of a block, each state and each parameter. Should two have one text (a node named like
    another's state), the first listed wins: values, then states, scratch and parameters."""
    steps = range(graph.schedule.block)
    found: dict[str, BufferId] = {}
    for ident in (
        *(graph.value_copy(node.name, t) for node in graph.nodes for t in steps),
        *(state for node in graph.nodes for state in state_names(node)),
        *(graph.copy(names.scratch(node.name), t) for node in graph.nodes for t in steps),
        *(names.param(p.name) for p in graph.params),
    ):
        found.setdefault(str(ident), ident)
    return found
