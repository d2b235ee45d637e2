"""One timestep out of an exported forward that loops over time itself, as snnTorch's tutorials write their models:

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        for step in range(num_steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)      # or self.fc1(x[step])
            ...
            spk2_rec.append(spk2)
        return torch.stack(spk2_rec), ...

torch.export unrolls the loop: every iteration calls the same submodules in the same order, and torch records each
call of a module apart (`fc1`, `fc1@1`, `fc1@2`, ...; `nn_module_stack` of every node). `unrolled_loop` cuts the
graph into iterations by those calls (a node outside any submodule, such as `x[step]`, belongs to the iteration
whose first call follows it) and takes the third iteration as the step: unlike the first, which starts from the
state `init_leaky` made, it reads only values of the iteration before it, and the second is its exact twin, node for
node, so each value the step reads from the previous iteration is a state whose new value is the twin's counterpart
in the step. The state starts at zero, as `init_leaky` and its siblings make it. The step's input is `x` itself
(presented at every step) or `x[step]` (a sequence with time first); its output is the step's element of the first
tensor the forward returns, a `torch.stack` over the iterations. A loop of fewer than three iterations, a module
called twice in one iteration, iterations that differ, or a step that reads a value of an iteration before the last
are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from masic.frontends.errors import FrontendError

TEMPLATE = 2  # the iteration taken as the step: its twin, iteration 1, also starts from a state computed in the loop


@dataclass(frozen=True)
class Loop:
    """The step of an unrolled loop: its nodes, and the names of what it reads and gives."""

    step: tuple[str, ...]  # node names of the step's iteration, in graph order
    states: tuple[tuple[str, str], ...]  # (value of the previous iteration, its counterpart in the step)
    step_input: str | None  # the node taking the step's slice of the input (x[step]), or None: x itself
    output: str  # the step's element of the forward's first (stacked) result
    before: tuple[str, ...]  # nodes before the loop (their values must be constants)


def _call(node: Any) -> tuple[str, int] | None:
    """(submodule, call index) of a node inside a submodule call, from its nn_module_stack; None outside any."""
    stack = list((node.meta.get("nn_module_stack") or {}).keys())
    if len(stack) < 2:
        return None
    module, _, index = stack[1].partition("@")
    return module, int(index or 0)


def _iterations(nodes: list[Any]) -> tuple[list[list[Any]], list[Any]] | None:
    """The nodes of each iteration and those before the loop, or None when no submodule is called twice."""
    calls: list[tuple[str, int]] = []
    for node in nodes:
        call = _call(node)
        if call is not None and call not in calls:
            calls.append(call)
    if not any(index > 0 for _, index in calls):
        return None
    first = [module for module, index in calls if index == 0]
    period = next(k for k, (_, index) in enumerate(calls) if index > 0)
    count = len(calls) // period
    if calls != [(m, k) for k in range(count) for m in first[:period]]:
        raise FrontendError(
            "the forward's loop is no repetition of one step that calls each submodule once; masic cannot cut it"
        )
    iterations: list[list[Any]] = [[] for _ in range(count)]
    before: list[Any] = []  # nodes outside submodules before the first call (the loop's set-up)
    pending: list[Any] = []  # nodes outside submodules since the last call: they belong to the next call's iteration
    for node in nodes:
        call = _call(node)
        if call is None:
            pending.append(node)
            continue
        (iterations[call[1]] if iterations[0] else before).extend(pending)
        pending = []
        iterations[call[1]].append(node)
    return iterations, before


def unrolled_loop(program: torch.export.ExportedProgram, user_input: str) -> Loop | None:
    """The step of the forward's loop (module docstring), or None when the forward has none."""
    nodes = [n for n in program.graph.nodes if n.op == "call_function"]
    cut = _iterations(nodes)
    if cut is None:
        return None
    iterations, before = cut
    if len(iterations) <= TEMPLATE:
        raise FrontendError(f"the forward's loop runs {len(iterations)} steps; export it with at least {TEMPLATE + 1}")
    previous, step = iterations[TEMPLATE - 1], iterations[TEMPLATE]
    step_input = _step_input(step, user_input)
    differ = len(previous) != len(step) or any(
        p.target != n.target or _shape(p) != _shape(n) or (n.name != step_input and _constants(p) != _constants(n))
        for p, n in zip(previous, step, strict=False)
    )
    if differ:
        raise FrontendError(
            "two iterations of the forward's loop differ (in their ops, or in a constant such as the step's index); "
            "masic cannot cut one step out of it"
        )
    twin = {p.name: s.name for p, s in zip(previous, step, strict=True)}
    members = {n.name for n in step}
    states: dict[str, str] = {}
    for node in step:
        for operand in node.all_input_nodes:
            if operand.name in twin:
                states[operand.name] = twin[operand.name]
            elif operand.op == "call_function" and operand.name not in members and operand not in before:
                raise FrontendError(
                    f"step {TEMPLATE} of the forward's loop reads %{operand.name} of an earlier step than the last; "
                    "masic carries state one step"
                )
    return Loop(
        tuple(n.name for n in step),
        tuple(states.items()),
        step_input,
        _step_output(program, members),
        tuple(n.name for n in before),
    )


def _constants(node: Any) -> str:
    """The node's arguments other than nodes (numbers, shapes, dtypes), as text to compare."""
    return repr(torch.fx.node.map_arg((node.args, node.kwargs), lambda _: None))


def _shape(node: Any) -> object:
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _step_input(step: list[Any], user_input: str) -> str | None:
    """The step's `x[step]` (a select of the step's index along the first axis of the input), if it takes one."""
    sliced = [n for n in step if any(a.name == user_input for a in n.all_input_nodes)]
    selects = [n for n in sliced if str(n.target) == "aten.select.int" and tuple(n.args[1:]) == (0, TEMPLATE)]
    if selects and len(selects) == len(sliced) == 1:
        return selects[0].name
    if any(str(n.target) in ("aten.select.int", "aten.slice.Tensor") for n in sliced):
        raise FrontendError("the forward's loop reads its input other than as x or x[step]; masic cannot cut it")
    return None


def _step_output(program: torch.export.ExportedProgram, members: set[str]) -> str:
    """The step's element of the forward's first result, which must stack one value of each iteration."""
    (returned,) = [n for n in program.graph.nodes if n.op == "output"]
    first = returned.args[0][0]
    if str(getattr(first, "target", "")) != "aten.stack.default" or first.args[1:] not in ((), (0,)):
        raise FrontendError("the forward's first result is not a torch.stack of one value per step along dim 0")
    element = first.args[0][TEMPLATE]
    if element.name not in members:
        raise FrontendError("the forward's first result does not stack one value of each step of its loop")
    return element.name
