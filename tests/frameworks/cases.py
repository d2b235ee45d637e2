"""The shape every framework's model zoo shares (tests/frameworks/<framework>_models.py), and what tests and
bench/frontends.py do with a case: run it in its framework, import it, and compile many cases as one artifact.

A `Case` is one of the framework's own modules and how that framework runs it step by step from its initial state
(`run` returns the output of the model's last neuron and that neuron's membrane at every step). Weights, biases and
inputs are multiples of 1/16 (`quantised`, `Case.input`), so every sum a dense or conv layer forms is exact in any
order: the compiled model must then reproduce the framework exactly, and a difference can only come from a neuron.
Where a neuron's float32 operations are not exactly the framework's (Norse's exponential cells, and its recurrent
cells, which add their two synaptic inputs in another order), the framework's run also gives the threshold each
membrane met, and `check` explains each differing spike by a membrane at its threshold.

`merged` puts many cases into one graph, so that one compile per target checks a whole zoo: the cases read parts of
one flat input (crop_rows, reshape) and their outputs and membranes are concatenated (a neuron family's membrane is
a second copy of the last neuron probing its state; an update emitted as element-wise ops exposes its membrane as
the new value of the delay `<neuron>.<state>`, an exported step the new value of its state input or buffer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np
import torch
from masic.frontends.frameworks import import_framework_model
from masic.frontends.graph_builder import GraphBuilder
from torch import nn

from masic.ir.graph import Graph, ParamRef, TensorType
from masic.ir.neurons import FAMILIES

STEPS = 32  # every case runs at least this many steps (issue 18)
GRID = 16  # weights, biases and inputs are multiples of 1/GRID


@dataclass(frozen=True)
class Trace:
    """What a framework computed at each step: the last neuron's output (spikes, counts or a membrane) and its
    membrane, (T, *output) each."""

    output: np.ndarray
    membrane: np.ndarray
    threshold: np.ndarray | None = None  # the threshold the neuron's membrane met, where spikes may differ (check)


@dataclass(frozen=True)
class Case:
    """One framework module, its input shape per step, how its framework runs it, and what to expect of it.

    `membrane`: the state of the model's last neuron that holds its membrane, as masic names it (a probe), or the
    state input or buffer of an exported step that holds it; None when the output is itself a membrane (or the case
    has a twin that outputs it). `importer`: masic's frontend for the module. `repeat`: one input presented at every
    step (a model whose forward loops over time on the same input).
    `min_spikes`: the least output spikes (or non-zero outputs) the framework must give on the case's input over
    STEPS steps, so that the comparison exercises firing and resets. `scale`: inputs lie in [0, scale)."""

    framework: str
    name: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    run: Callable[[nn.Module, np.ndarray], Trace]
    membrane: str | None
    min_spikes: int = 32
    scale: float = 2.0
    importer: Callable[[nn.Module, tuple[int, ...], int], Graph] = import_framework_model
    repeat: bool = False

    @property
    def label(self) -> str:
        return f"{self.framework}:{self.name}"

    def input(self, steps: int = STEPS, seed: int = 0) -> np.ndarray:
        """Inputs on the 1/GRID grid, strong enough to make the case spike."""
        rng = np.random.default_rng([seed, sum(map(ord, self.label))])
        top = int(self.scale * GRID)
        x = (rng.integers(0, top, (steps, *self.input_shape)) / GRID).astype(np.float32)
        return np.repeat(x[:1], steps, axis=0) if self.repeat else x

    def graph(self, model: nn.Module | None = None, steps: int = STEPS) -> Graph:
        """masic's import of the module (what `masic compile` reads from a factory or a torch.save file)."""
        return self.importer(model if model is not None else self.make(), self.input_shape, steps)


def quantised(model: nn.Module) -> nn.Module:
    """The model with every conv and linear weight and bias, and every recurrent cell's input and recurrent weights
    (Norse's), rounded to the 1/GRID grid (module docstring)."""
    with torch.no_grad():
        for m in model.modules():
            names = ("weight", "bias") if isinstance(m, nn.Conv2d | nn.Linear) else ()
            for name in (*names, "input_weights", "recurrent_weights"):
                weight = getattr(m, name, None)
                if isinstance(weight, torch.Tensor):
                    weight.copy_(torch.round(weight * GRID) / GRID)
    return model.eval()


def exact_batchnorm(channels: int, kind: type[nn.BatchNorm2d] = nn.BatchNorm2d) -> nn.BatchNorm2d:
    """A batch norm (of class `kind`) in evaluation mode whose folding is exact: running_var + eps is 1 in float32,
    and mean, gamma and beta are on the grid."""
    bn = kind(channels)
    with torch.no_grad():
        bn.running_var.fill_(1.0 - bn.eps)
        bn.running_mean.copy_(torch.arange(channels) / GRID - 0.25)
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.arange(channels) % 3 / GRID)
    assert bool(torch.all(bn.running_var + bn.eps == 1.0))
    return bn.eval()


def stepped(call: Callable[[torch.Tensor], torch.Tensor], membrane: Callable[[], torch.Tensor]) -> Callable:
    """A `run` that feeds one step at a time (batch of one) and reads the last neuron's membrane after each."""

    def run(model: nn.Module, x: np.ndarray) -> Trace:
        outputs, membranes = [], []
        with torch.no_grad():
            for step in x:
                out = call(torch.from_numpy(step)[None])
                outputs.append(out[0].numpy().copy())
                membranes.append(membrane()[0].numpy().copy())
        return Trace(np.stack(outputs), np.stack(membranes))

    return run


def membrane_value(graph: Graph, state: str | None) -> tuple[Graph, str]:
    """The graph with a value holding the membrane of its last neuron: a probing twin of a family's neuron, or the
    new value of the delay `<neuron>.<state>` of an update emitted as element-wise ops (the output itself for
    None)."""
    if state is None:
        return graph, graph.output
    last = graph.node(graph.output)
    if last.op in FAMILIES:
        twin = last.with_attrs(probe=state)
        twin = type(last)(f"{last.name}.probe_{state}", twin.op, twin.inputs, twin.attrs, twin.type, twin.loc)
        return graph.with_nodes([*graph.nodes, twin]), twin.name
    delays = [n for n in graph.nodes if n.op == "delay" and (n.name == state or n.name.endswith(f".{state}"))]
    return graph, str(delays[-1].attr("source"))


@dataclass(frozen=True)
class Merged:
    """Cases compiled as one graph: `graph`, and for each case the columns of its output and membrane in the
    graph's flat output."""

    graph: Graph
    cases: tuple[Case, ...]
    columns: tuple[tuple[slice, slice], ...]
    shapes: tuple[tuple[int, ...], ...]  # each case's output shape

    def input(self, steps: int = STEPS, seed: int = 0) -> np.ndarray:
        """Each case's input, side by side in the merged input (steps, 1, total, 1)."""
        parts = [c.input(steps, seed).reshape(steps, -1) for c in self.cases]
        return np.concatenate(parts, axis=1)[:, None, :, None]

    def split(self, outputs: np.ndarray) -> list[Trace]:
        """The merged graph's outputs (steps, total) as one Trace per case."""
        steps = outputs.shape[0]
        traces = []
        for (out, mem), shape in zip(self.columns, self.shapes, strict=True):
            shape = (steps, *shape)
            traces.append(Trace(outputs[:, out].reshape(shape), outputs[:, mem].reshape(shape)))
        return traces


def merged(cases: Sequence[Case], steps: int = STEPS) -> Merged:
    """One graph computing every case side by side (module docstring)."""
    total = sum(prod(c.input_shape) for c in cases)
    b = GraphBuilder()
    x = b.add("input", "input", (), {}, "merged input", TensorType((1, total, 1)))
    outputs: list[str] = []
    columns: list[tuple[slice, slice]] = []
    shapes: list[tuple[int, ...]] = []
    start, column = 0, 0
    for case in cases:
        graph, membrane = membrane_value(case.graph(), case.membrane)
        n = prod(case.input_shape)
        crop = b.add(f"{case.name}.crop", "crop_rows", (x,), {"rows": (start, start + n)}, case.label)
        names = {graph.inputs[0].name: b.add(f"{case.name}.in", "reshape", (crop,), {"shape": case.input_shape}, "")}
        _copy(b, graph, case.name, names)
        out_shape = graph.node(graph.output).type.shape
        shapes.append(out_shape)
        size = prod(out_shape)
        for value in (graph.output, membrane):
            flat = (
                names[value]
                if len(out_shape) == 1
                else b.add(f"{names[value]}.flat", "flatten", (names[value],), {}, "")
            )
            outputs.append(flat)
        columns.append((slice(column, column + size), slice(column + size, column + 2 * size)))
        start, column = start + n, column + 2 * size
    out = b.add("outputs", "concat", tuple(outputs), {"axis": 0}, "merged output")
    return Merged(b.finish("cases", out, steps), tuple(cases), tuple(columns), tuple(shapes))


def _copy(b: GraphBuilder, graph: Graph, prefix: str, names: dict[str, str]) -> None:
    """Adds `graph`'s nodes (but its input) under `prefix`, their parameters copied; `names` maps old to new."""
    delays = []
    for node in graph.nodes:
        if node.op == "input":
            continue
        attrs = {}
        for key, value in node.attrs:
            attrs[key] = (
                b.param(f"{prefix}.{value.name}", graph.weights[value.name]) if isinstance(value, ParamRef) else value
            )
        declared = node.type if node.op in ("delay", "constant") else None
        if node.op == "delay":
            attrs["source"] = ""
            delays.append(node)
        names[node.name] = b.add(
            f"{prefix}.{node.name}", node.op, tuple(names[v] for v in node.inputs), attrs, node.loc, declared
        )
    for node in delays:
        b.connect_delay(names[node.name], names[str(node.attr("source"))])


@dataclass(frozen=True)
class Comparison:
    """A compiled (or interpreted) run against its framework's: output elements compared and differing, spikes the
    framework fired (non-zero outputs), and the largest membrane error relative to the largest membrane."""

    compared: int
    differing: int
    spikes: int
    membrane_error: float


def compare(expected: Trace, got: Trace) -> Comparison:
    scale = max(float(np.abs(expected.membrane).max()), 1e-30)
    return Comparison(
        compared=expected.output.size,
        differing=int(np.count_nonzero(got.output != expected.output)),
        spikes=int(np.count_nonzero(expected.output)),
        membrane_error=float(np.abs(got.membrane - expected.membrane).max()) / scale,
    )


SPIKES_DIFFERING = 1e-3  # the share of outputs that may differ where the framework's run gives its thresholds
NEAR_THRESHOLD = 1e-6  # relative to the threshold (at least 1)


def check(case: Case, expected: Trace, got: Trace) -> None:
    """What issue 18 asks of every case: it spikes, its outputs are identical and its membrane is within rtol 1e-5
    (absolutely within 1e-6 of its largest magnitude, at least 1). The sums of the dense and conv layers being exact,
    no spike near a threshold may differ, but where a neuron's own float32 operations are not the framework's (an
    exponential within an ulp of torch.exp, a recurrent cell's input summed in another order) and the framework's
    run says what threshold each membrane met (`Trace.threshold`): below 0.1% of the outputs may differ, each one
    explained by a membrane within 1e-6 of its threshold on the side that did not spike; membranes are compared up
    to the first difference (a spike resets one membrane and not the other)."""
    result = compare(expected, got)
    assert result.spikes >= case.min_spikes, f"{case.label}: the input made only {result.spikes} spikes"
    steps = len(expected.output)
    differ = np.argwhere(got.output.reshape(steps, -1) != expected.output.reshape(steps, -1))
    if expected.threshold is None or len(differ) == 0:
        assert result.differing == 0, f"{case.label}: {result.differing} of {result.compared} outputs differ"
    else:
        assert result.differing <= SPIKES_DIFFERING * result.compared, (
            f"{case.label}: {result.differing} of {result.compared} outputs differ"
        )
        threshold = expected.threshold.reshape(steps, -1)
        fired = expected.output.reshape(steps, -1)
        for t, j in differ:  # the side that did not spike holds its membrane as it met the threshold
            membrane = (expected if fired[t, j] == 0 else got).membrane.reshape(steps, -1)[t, j]
            gap = abs(float(membrane) - float(threshold[t, j]))
            assert gap <= NEAR_THRESHOLD * max(1.0, abs(float(threshold[t, j]))), (
                f"{case.label}: output {j} at step {t} differs, its membrane {gap:g} from its threshold"
            )
    agree = steps if len(differ) == 0 else int(differ[:, 0].min())
    scale = max(1.0, float(np.abs(expected.membrane).max()))
    np.testing.assert_allclose(
        got.membrane[:agree], expected.membrane[:agree], rtol=1e-5, atol=1e-6 * scale, err_msg=case.label
    )


def zoos() -> dict[str, list[Case]]:
    """Every framework's zoo: the CASES of each tests/frameworks/<framework>_models.py, by module name."""
    folder = Path(__file__).parent
    modules = sorted(p.stem for p in folder.glob("*_models.py"))
    return {name: importlib.import_module(f"tests.frameworks.{name}").CASES for name in modules}
