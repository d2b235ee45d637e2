"""Buffer identities: what a memory plan places, as a typed value rather than a string built and split again.

A plan places four kinds of things, each named by a `BufferId`:
- a node's value (`value`), once per step of a block when blocks have several steps (`step`);
- a state of a neuron or delay (`state`: the node and the state's `field`), once, as it carries over steps;
- a parameter (`param`: its name), once;
- the workspace of a node's kernel (`scratch`: a window's padded input), once per step like values.
A buffer is named by the identity it was made for (the value owning it, the state, parameter or scratch), and a
plan maps every value, state and parameter to its buffer (`masic.ir.graph.Plan`).

The textual form (`str`) is what the plan's text, model.c's comments, the manifest and error messages show:
`x` (value), `x@3` (its copy for step 3), `lif.v` (state), `@fc.weight` (parameter), `conv.scratch` and
`conv.scratch@3` (scratch). It is taken apart only where text comes back in: the textual IR's parser resolves it
against the graph (`masic.ir.text`), and a manifest's rows, which carry no graph, are read by `role`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Kind = Literal["value", "state", "param", "scratch"]
PER_STEP: tuple[Kind, ...] = ("value", "scratch")  # kinds with a copy per step of a block; state and parameters once


class BufferId(NamedTuple):
    """One thing a plan places: `kind`, its `node` (for a parameter, the parameter's name), a state's `field`, and
    the `step` of a block whose copy it is (None: the thing itself, as in blocks of one step).

    Immutable like a frozen dataclass, but a tuple: planning makes and looks up hundreds of thousands of them
    (liveness runs for every plan the budget passes try), and a frozen dataclass made liveness three times slower
    (its constructor and hash run Python code; a tuple's run in C)."""

    kind: Kind
    node: str
    field: str = ""
    step: int | None = None

    def __str__(self) -> str:
        match self.kind:
            case "value":
                text = self.node
            case "state":
                text = f"{self.node}.{self.field}"
            case "param":
                text = f"@{self.node}"
            case "scratch":
                text = f"{self.node}.scratch"
        return text if self.step is None else f"{text}@{self.step}"

    @property
    def per_step(self) -> bool:
        """Whether it exists once per step of a block (values and scratch) rather than once (state, parameters)."""
        return self.kind in PER_STEP

    def at(self, step: int | None) -> BufferId:
        """Its copy for `step` of a block (None: the thing itself)."""
        return BufferId(self.kind, self.node, self.field, step)  # not dataclasses.replace: planning makes many


def value(node: str, step: int | None = None) -> BufferId:
    return BufferId("value", node, step=step)


def state(node: str, field: str) -> BufferId:
    return BufferId("state", node, field)


def param(name: str) -> BufferId:
    return BufferId("param", name)


def scratch(node: str, step: int | None = None) -> BufferId:
    return BufferId("scratch", node, step=step)


def role(text: str) -> str:
    """Which of its layer's buffers the textual form of a buffer names, for a label: the part after its last dot (a
    state's field, "scratch", a parameter's last part such as "weight"), else the whole."""
    return text.rsplit(".", 1)[-1]
