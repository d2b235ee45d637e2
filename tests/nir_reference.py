"""An independent reference simulation of NIR graphs in PyTorch (float32), for testing the NIR frontend.

It shares no code with masic: it walks the `nir` objects itself, computes each node with torch operations written
from the NIR equations (forward Euler with step dt), sums several inputs, and delivers each back edge (an edge to a
node on the depth-first search path from the Inputs, then from the remaining nodes in file order) from the previous
step. A graph with several Input and Output nodes takes and gives one array for each, by name. nirtorch cannot serve here: it loops forever on feedback_graph.nir, whose cycle has no node with two inputs.
Coefficients are folded as the documented convention says (`dt * (1/tau)` in float32, as Norse does); the LIF
membrane is written in NIR's order `(v_leak - v) + r*x`, which equals masic's `(r*x + v_leak) - v` when v_leak = 0.
"""

from __future__ import annotations

from typing import Any

import nir
import numpy as np
import torch
import torch.nn.functional as F

F32 = torch.float32


def _int(value: Any) -> int:
    return int(np.ravel(value)[0])


def _t(value: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), dtype=F32)


class NIRReference:
    def __init__(self, graph: nir.NIRGraph, dt: float) -> None:
        self.dt = dt
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self._collect(graph, "")
        self.inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
        self.outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
        self.back = self._back_edges()
        self.order = self._order()

    def _collect(self, graph: nir.NIRGraph, prefix: str) -> None:
        def resolve(name: str, kind: type) -> str:
            node = graph.nodes[name]
            if isinstance(node, nir.NIRGraph):
                (inner,) = [k for k, n in node.nodes.items() if isinstance(n, kind)]
                return f"{prefix}{name}.{inner}"
            return f"{prefix}{name}"

        for name, node in graph.nodes.items():
            if isinstance(node, nir.NIRGraph):
                self._collect(node, f"{prefix}{name}.")
            else:
                self.nodes[f"{prefix}{name}"] = node
        self.edges += [(resolve(a, nir.Output), resolve(b, nir.Input)) for a, b in graph.edges]

    def _back_edges(self) -> set[tuple[str, str]]:
        back, visited, path = set(), set(), []

        def visit(node: str) -> None:
            visited.add(node)
            path.append(node)
            for a, b in self.edges:
                if a != node:
                    continue
                if b in path:
                    back.add((a, b))
                elif b not in visited:
                    visit(b)
            path.pop()

        for root in [*self.inputs, *self.nodes]:
            if root not in visited:
                visit(root)
        return back

    def _order(self) -> list[str]:
        forward = [e for e in self.edges if e not in self.back]
        done: list[str] = []
        while len(done) < len(self.nodes):
            ready = next(n for n in self.nodes if n not in done and all(a in done for a, b in forward if b == n))
            done.append(ready)
        return done

    def run(self, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """Outputs (steps, *shape) for inputs (steps, *shape): one array, or for several Inputs and Outputs one for
        each, by name."""
        xs = x if isinstance(x, dict) else {self.inputs[0]: x}
        state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.nodes}
        previous: dict[str, torch.Tensor] = {}
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
        for t in range(len(next(iter(xs.values())))):
            values: dict[str, torch.Tensor] = {}
            for name in self.order:
                if name in self.inputs:
                    values[name] = _t(xs[name][t])
                    continue
                inputs = [
                    previous.get(a, torch.zeros(tuple(self.nodes[a].output_type["output"]), dtype=F32))
                    if (a, b) in self.back
                    else values[a]
                    for a, b in self.edges
                    if b == name
                ]
                total = inputs[0]
                for other in inputs[1:]:
                    total = total + other
                values[name] = self._node(self.nodes[name], total, state[name])
            previous = values
            for name in self.outputs:
                outputs[name].append(values[name].numpy().copy())
        stacked = {name: np.stack(steps) for name, steps in outputs.items()}
        return stacked if isinstance(x, dict) else stacked[self.outputs[0]]

    def _node(self, node: Any, x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        dt = torch.tensor(self.dt, dtype=F32)

        def a(tau: Any) -> torch.Tensor:
            return dt * (1 / _t(tau))

        if isinstance(node, nir.Input | nir.Output):
            return x
        if isinstance(node, nir.Affine):
            return F.linear(x, _t(node.weight), _t(node.bias))
        if isinstance(node, nir.Linear):
            return F.linear(x, _t(node.weight))
        if isinstance(node, nir.Scale):
            return x * _t(node.scale)
        if isinstance(node, nir.Threshold):
            return (x > _t(node.threshold)).to(F32)
        if isinstance(node, nir.Conv2d):
            return F.conv2d(
                x[None],
                _t(node.weight),
                _t(node.bias),
                tuple(node.stride),
                tuple(node.padding),
                tuple(node.dilation),
                int(node.groups),
            )[0]
        if isinstance(node, nir.Conv1d):
            args = (_int(node.stride), _int(node.padding), _int(node.dilation), _int(node.groups))
            return F.conv1d(x[None], _t(node.weight), _t(node.bias), *args)[0]
        if isinstance(node, nir.SumPool2d | nir.AvgPool2d):
            divisor = 1 if isinstance(node, nir.SumPool2d) else None
            k, st, p = (
                tuple(int(v) for v in np.broadcast_to(a_, 2)) for a_ in (node.kernel_size, node.stride, node.padding)
            )
            return F.avg_pool2d(x[None], k, st, p, divisor_override=divisor)[0]
        if isinstance(node, nir.Flatten):
            return torch.flatten(x, int(node.start_dim), int(node.end_dim))
        if isinstance(node, nir.Delay):
            steps = np.broadcast_to(np.rint(np.asarray(node.delay) / self.dt).astype(int), x.shape).copy()
            history = s.setdefault("history", [torch.zeros_like(x)] * int(steps.max()))
            history.insert(0, x)
            out = torch.gather(torch.stack(history), 0, torch.as_tensor(steps)[None])[0]
            history.pop()
            return out
        if isinstance(node, nir.I):
            s["v"] = s.get("v", torch.zeros_like(x)) + (dt * _t(node.r)) * x
            return s["v"]
        if isinstance(node, nir.IF):
            v = s.get("v", torch.zeros_like(x) + _t(node.v_reset)) + (dt * _t(node.r)) * x
            return self._fire(v, node, s)
        if isinstance(node, nir.LI):
            v = s.get("v", torch.zeros_like(x) + _t(node.v_leak))
            s["v"] = v + a(node.tau) * ((_t(node.v_leak) - v) + _t(node.r) * x)
            return s["v"]
        if isinstance(node, nir.LIF):
            v = s.get("v", torch.zeros_like(x) + _t(node.v_leak))
            return self._fire(v + a(node.tau) * ((_t(node.v_leak) - v) + _t(node.r) * x), node, s)
        if isinstance(node, nir.CubaLI | nir.CubaLIF):
            i = s.get("i", torch.zeros_like(x))
            s["i"] = i + a(node.tau_syn) * (-i + _t(node.w_in) * x)
            v = s.get("v", torch.zeros_like(x) + _t(node.v_leak))
            v = v + a(node.tau_mem) * ((_t(node.v_leak) - v) + _t(node.r) * s["i"])
            if isinstance(node, nir.CubaLI):
                s["v"] = v
                return v
            return self._fire(v, node, s)
        raise NotImplementedError(type(node).__name__)

    @staticmethod
    def _fire(v: torch.Tensor, node: Any, s: dict[str, torch.Tensor]) -> torch.Tensor:
        z = v > _t(node.v_threshold)
        s["v"] = torch.where(z, _t(node.v_reset).expand_as(v), v)
        return z.to(F32)
