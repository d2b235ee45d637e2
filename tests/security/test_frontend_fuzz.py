"""Property tests that feed the frontends random and mutated model files (issue 14): NIR graphs of random node types,
shapes, edges and parameters, written with `nir.write` and then altered at the HDF5 level (values, shapes and types
of datasets, datasets deleted, groups added, node types and edges changed); torch.save archives (.pt) and
torch.export archives (.pt2) with bytes flipped, cut or inserted in their pickles, tensors and JSON, JSON values
replaced, and members removed, repeated, renamed or added.

Every file must have one of two outcomes:
- a one-line `FrontendError` naming the file (the CLI prints it and exits 2), or
- a graph that the default pass pipeline plans, whose reference interpreter run matches the plan simulation and the
  source framework: tests/nir_reference.py for NIR, Norse for .pt, the exported module for .pt2 (where the framework
  itself runs the file).
Never another exception, never more than `DECISION_LIMIT_S` seconds for one file, never code run by the file: the
hostile files of tests/hostile_models.py are among the seeds the archives are mutated from, and their payloads
create a marker file.
"""

from __future__ import annotations

import io
import json
import signal
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import h5py
import nir
import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from masic.frontends.dispatch import ImportOptions, import_model
from masic.frontends.errors import FrontendError, FrontendWarning
from masic.frontends.export import load_export
from masic.frontends.norse import install_pickle_aliases, load_model
from norse.torch import LIBoxCell, LICell, LIFBoxCell, LIFCell, SequentialState
from torch import nn

from masic.ir.graph import Graph
from masic.ir.interpret import run
from tests.artifacts import masic_cli
from tests.export_models import conv_snn, neurons
from tests.hostile_models import build_all
from tests.nir_reference import NIRReference
from tests.norse_models import run_norse
from tests.pipelines import planned

DECISION_LIMIT_S = 30  # for one file: import and plan (the limits of masic.frontends.limits keep it far below)
RUN_LIMIT = 1 << 20  # values a step of an accepted graph holds, at most, for it to be run (a mutated shape may be big)
TIMESTEPS = 6


class Hang(BaseException):
    """A file masic did not decide on in time; not an Exception, so no frontend's `except Exception` can turn it
    into a refusal."""


@contextmanager
def decided_within(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no decision within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Compiled:
    graph: Graph  # as imported
    planned: Graph  # after the default pipeline


def compile_in_process(path: Path, options: ImportOptions) -> Compiled | str:
    """The imported and planned graph, or the message when masic refuses the file with one line naming it; any
    other exception fails the test, and so does a warning (the CLI would print it as more lines) but a frontend's
    own, in one line naming the file (the CLI prints it as one `masic: warning:` line)."""
    with decided_within(DECISION_LIMIT_S), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            graph = import_model(str(path), options)
            outcome: Compiled | str = Compiled(graph, planned(graph))
        except FrontendError as err:
            outcome = str(err)
            assert outcome and "\n" not in outcome, f"not one line: {outcome!r}"
            assert str(path) in outcome, f"the refusal does not name the file: {outcome}"
    own = [str(w.message) for w in caught if issubclass(w.category, FrontendWarning)]
    assert all("\n" not in message and str(path) in message for message in own), own
    others = [w for w in caught if not issubclass(w.category, FrontendWarning)]
    assert not others, [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in others]
    event("compiled" if isinstance(outcome, Compiled) else "refused")
    return outcome


def check_runs(compiled: Compiled, x: np.ndarray, reference: Callable[[], np.ndarray], valid: bool = False) -> None:
    """The interpreter runs the graph, the plan simulation agrees with it, and so does the framework's own run
    (`reference`), which must succeed for a `valid` file; a framework that cannot run a mutated file is no oracle."""
    graph = compiled.graph
    if sum(n.type.numel for n in graph.nodes if n.type) > RUN_LIMIT:
        return
    with np.errstate(all="ignore"):
        got = run(graph, x)
        np.testing.assert_allclose(run(compiled.planned, x, simulate_plan=True), got, rtol=1e-5, atol=1e-6)
    try:
        with np.errstate(all="ignore"):
            expected = reference()
    except Exception:
        if valid:
            raise
        return
    if expected.size == got.size:  # a parameter of shape (1, 1, n) makes PyTorch add axes of one; masic drops them
        expected = expected.reshape(got.shape)
    scale = max(1.0, float(np.abs(expected[np.isfinite(expected)]).max(initial=0.0)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def input_for(graph: Graph, seed: int) -> np.ndarray:
    """Spikes (0/1) at every step, of the graph's input shape."""
    shape = graph.inputs[0].type.shape
    return (np.random.default_rng(seed).random((TIMESTEPS, *shape)) < 0.5).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Mutations shared by the file kinds
# ---------------------------------------------------------------------------------------------------------------

HOSTILE_NUMBERS = (
    float("nan"),
    float("inf"),
    -float("inf"),
    0.0,
    -1.0,
    0.5,
    1e300,
    -1e300,
    3.4e38,
    1e-45,
    1e6,
    2.0**40,
    -(2.0**31),
)


def mutated_bytes(data: st.DataObject, content: bytes) -> bytes:
    """`content` with bytes flipped, cut off or inserted, or emptied."""
    how = data.draw(st.sampled_from(["flip", "truncate", "insert", "empty"]))
    if how == "empty" or not content:
        return b""
    position = data.draw(st.integers(0, len(content) - 1))
    if how == "truncate":
        return content[:position]
    if how == "insert":
        return content[:position] + data.draw(st.binary(min_size=1, max_size=8)) + content[position:]
    changed = bytearray(content)
    for _ in range(data.draw(st.integers(1, 4))):
        changed[data.draw(st.integers(0, len(changed) - 1))] ^= data.draw(st.integers(1, 255))
    return bytes(changed)


def mutated_members(data: st.DataObject, members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A ZIP archive's members with one changed, removed, repeated (with other bytes), renamed or added."""
    members = list(members)
    if not members:
        return [("archive/data.pkl", b"\x80\x02N.")]
    how = data.draw(st.sampled_from(["bytes", "bytes", "bytes", "remove", "repeat", "rename", "add"]))
    index = data.draw(st.integers(0, len(members) - 1))
    name, content = members[index]
    if how == "bytes":
        members[index] = (name, mutated_bytes(data, content))
    elif how == "remove":
        del members[index]
    elif how == "repeat":
        members.insert(data.draw(st.integers(0, len(members))), (name, mutated_bytes(data, content)))
    elif how == "rename":
        members[index] = (name + data.draw(st.sampled_from(["x", "/", ".json", "/../x"])), content)
    else:
        root = members[0][0].split("/", 1)[0]
        members.append((f"{root}/{data.draw(st.sampled_from(['data/99', 'extra.pkl', 'data.pkl']))}", b"\x80\x02N."))
    return members


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as out:
        for name, content in members:
            out.writestr(name, content)
    return path


def zip_members(content: bytes) -> list[tuple[str, bytes]]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return [(info.filename, archive.read(info)) for info in archive.infolist()]


# Norse models saved with torch.save, with the input shape to compile them with
PT_MODELS: tuple[tuple[Callable[[], SequentialState], tuple[int, ...]], ...] = (
    (lambda: SequentialState(nn.Linear(4, 6), LIFCell(), nn.Linear(6, 3), LICell()), (4,)),
    (
        lambda: SequentialState(
            nn.Conv2d(1, 2, 3, padding=1), LIFBoxCell(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3), LIBoxCell()
        ),
        (1, 4, 4),
    ),
)


@dataclass(frozen=True)
class Seeds:
    """The files the archives are mutated from: saved models and exported programs (each kind as often as all the
    hostile files of its kind together) and tests/hostile_models.py's files, whose payloads create `marker`."""

    pt: list[tuple[bytes, tuple[int, ...]]]  # with the input shape to compile it with
    pt2: list[bytes]
    marker: Path


def _saved(model: nn.Module) -> bytes:
    install_pickle_aliases()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def _exported(module: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module, example), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "payload-ran"
    cases = build_all(folder, marker)
    torch.manual_seed(3)
    models = [(_saved(make()), shape) for make, shape in PT_MODELS]
    # the archives among them: the mutations rewrite zip members (a bare pickle is refused before any is read)
    pickles = [(case.path.read_bytes(), (2,)) for case in cases if case.category == "pickles"]
    pickles = [(content, shape) for content, shape in pickles if zipfile.is_zipfile(io.BytesIO(content))]
    exported = [_exported(*neurons()), _exported(*conv_snn())]
    archives = [case.path.read_bytes() for case in cases if case.category == "archives"]
    return Seeds(
        models * (len(pickles) // len(models)) + pickles,
        exported * (len(archives) // len(exported)) + archives,
        marker,
    )


# ---------------------------------------------------------------------------------------------------------------
# NIR graphs
# ---------------------------------------------------------------------------------------------------------------


def _dyadic(rng: np.random.Generator, shape: tuple[int, ...] | int, low: int = -8, high: int = 8) -> np.ndarray:
    """Multiples of 1/4: sums of their products with spikes are exact in float32 and float64 alike, so the reference
    (float32 sums) and the interpreter (float64 sums) agree."""
    return (rng.integers(low, high + 1, shape) / 4).astype(np.float32)


def _values(rng: np.random.Generator, shape: tuple[int, ...], choices: list[float], each: bool) -> np.ndarray:
    """Values drawn from `choices`: one per element with `each`, else one for all (an array of one element)."""
    return rng.choice(choices, shape if each else (1,)).astype(np.float32)


class _NIRChain:
    """A random NIR graph under construction: a chain from the input, with neurons, recurrent blocks (a Linear
    feeding back into the neuron before it) and skip edges summed into a later node."""

    def __init__(self, rng: np.random.Generator, dt: float, shape: tuple[int, ...]) -> None:
        self.rng, self.dt, self.shape = rng, dt, shape
        self.nodes: dict[str, Any] = {"input": nir.Input(np.array(shape))}
        self.edges: list[tuple[str, str]] = []
        self.chain = ["input"]  # the nodes along the chain, in order
        self.loops: set[str] = set()  # the Linear nodes of recurrent blocks (beside the chain)
        self.shapes = {"input": shape}  # each chain node's output shape

    def append(self, node: Any, shape: tuple[int, ...]) -> str:
        name = f"n{len(self.nodes)}"
        self.nodes[name] = node
        self.edges.append((self.chain[-1], name))
        self.chain.append(name)
        self.shapes[name] = shape
        return name

    def neuron(self) -> Any:
        """A random neuron node; NIR wants all its parameters of one shape (one value, or one per element)."""
        rng, dt, each = self.rng, self.dt, bool(self.rng.random() < 0.5)
        kind = rng.choice(["I", "IF", "LI", "LIF", "CubaLI", "CubaLIF"])

        def values(choices: list[float]) -> np.ndarray:
            return _values(rng, self.shape, choices, each)

        tau = [dt * 2.0**k for k in range(4)]
        r, leak = values([0.5, 1.0, 2.0]), values([0.0])
        fire = {"v_threshold": values([0.25, 0.5, 1.0]), "v_reset": values([0.0, -0.25])}
        if kind == "I":
            return nir.I(r=r)
        if kind == "IF":
            return nir.IF(r=r, **fire)
        if kind == "LI":
            return nir.LI(tau=values(tau), r=r, v_leak=leak)
        if kind == "LIF":
            return nir.LIF(tau=values(tau), r=r, v_leak=leak, **fire)
        cuba = {"tau_syn": values(tau), "tau_mem": values(tau), "r": r, "v_leak": leak, "w_in": values([0.5, 1.0, 2.0])}
        if kind == "CubaLI":
            return nir.CubaLI(**cuba)
        return nir.CubaLIF(**cuba, **fire)

    def layer(self) -> None:
        """Appends one random layer that takes the current shape."""
        rng, shape = self.rng, self.shape
        kinds = ["neuron", "neuron", "scale", "threshold", "delay"]
        kinds += {1: ["linear", "affine", "recurrent"], 2: ["conv1d", "flatten"], 3: ["conv2d", "pool", "flatten"]}[
            len(shape)
        ]
        kind = rng.choice(kinds)
        each = bool(rng.random() < 0.5)
        if kind == "neuron":
            self.append(self.neuron(), shape)
        elif kind == "scale":
            self.append(nir.Scale(_values(rng, shape, [-1.0, 0.5, 2.0], each)), shape)
        elif kind == "threshold":
            self.append(nir.Threshold(_values(rng, shape, [0.0, 0.25, 1.0], each)), shape)
        elif kind == "delay":
            self.append(nir.Delay(_values(rng, shape, [k * self.dt for k in range(4)], each)), shape)
        elif kind in ("linear", "affine", "recurrent"):
            out = shape[0] if kind == "recurrent" else int(rng.integers(1, 7))
            weight = _dyadic(rng, (out, shape[0]))
            if kind == "affine":
                self.append(nir.Affine(weight, _dyadic(rng, out)), (out,))
            elif kind == "linear":
                self.append(nir.Linear(weight), (out,))
            else:  # a neuron whose input adds the previous step's output of the Linear it feeds
                neuron = self.append(self.neuron(), shape)
                loop = f"n{len(self.nodes)}"
                self.nodes[loop] = nir.Linear(_dyadic(rng, (out, out), -2, 2))
                self.loops.add(loop)
                self.edges += [(neuron, loop), (loop, neuron)]
            self.shape = (out,)
        elif kind == "flatten":
            start, end = (0, -1) if len(shape) == 2 or rng.random() < 0.5 else (1, 2)
            flat = (*shape[:start], int(np.prod(shape[start:]))) if end == -1 else (shape[0], shape[1] * shape[2])
            self.append(nir.Flatten({"input": np.array(shape)}, start, end), flat)
            self.shape = flat
        elif kind == "pool":
            self.pool()
        else:
            self.conv(len(shape) - 1)

    def pool(self) -> None:
        c, h, w = self.shape
        kernel = [int(self.rng.integers(1, 3)) if size >= 2 else 1 for size in (h, w)]
        stride = [int(s) for s in self.rng.integers(1, 3, 2)]
        padding = [int(self.rng.integers(0, k // 2 + 1)) for k in kernel]
        out = tuple((size + 2 * p - k) // s + 1 for size, k, s, p in zip((h, w), kernel, stride, padding, strict=True))
        node = nir.SumPool2d if self.rng.random() < 0.5 else nir.AvgPool2d
        self.append(node(np.array(kernel), np.array(stride), np.array(padding)), (c, *out))
        self.shape = (c, *out)

    def conv(self, spatial: int) -> None:
        rng = self.rng
        c, *sizes = self.shape
        groups = int(rng.choice([g for g in (1, 2, 3) if c % g == 0]))
        out_c = groups * int(rng.integers(1, 3))
        kernel = [int(rng.integers(1, 4)) for _ in sizes]
        stride, dilation = [int(rng.integers(1, 3)) for _ in sizes], [int(rng.integers(1, 3)) for _ in sizes]
        padding = [int(rng.integers(0, 2)) for _ in sizes]
        out = [
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(sizes, kernel, stride, padding, dilation, strict=True)
        ]
        if min(out) < 1:  # a 1-wide kernel fits any input
            kernel, dilation = [1] * spatial, [1] * spatial
            out = [(n + 2 * p - 1) // s + 1 for n, s, p in zip(sizes, stride, padding, strict=True)]
        weight = _dyadic(rng, (out_c, c // groups, *kernel), -4, 4)
        bias = _dyadic(rng, out_c)
        if spatial == 1:
            node = nir.Conv1d(sizes[0], weight, stride[0], padding[0], dilation[0], groups, bias)
        else:
            node = nir.Conv2d(tuple(sizes), weight, tuple(stride), tuple(padding), tuple(dilation), groups, bias)
        self.shape = (out_c, *out)
        self.append(node, self.shape)

    def skip(self) -> None:
        """An extra edge from a chain node to a later one that reads values of its shape (summed with the other)."""
        pairs = [
            (a, b)
            for i, a in enumerate(self.chain)
            for j, b in enumerate(self.chain[i + 2 :], start=i + 2)
            if self.shapes[a] == self.shapes[self.chain[j - 1]]
        ]
        if pairs:
            self.edges.append(pairs[int(self.rng.integers(len(pairs)))])

    def finish(self, nest: bool) -> nir.NIRGraph:
        """The graph; with `nest`, a stretch of the chain inside a subgraph when no edge but the chain's enters or
        leaves it."""
        self.nodes["output"] = nir.Output(np.array(self.shape))
        self.edges.append((self.chain[-1], "output"))
        if nest and len(self.chain) > 2:
            first = int(self.rng.integers(1, len(self.chain)))
            last = int(self.rng.integers(first, len(self.chain)))
            inside = set(self.chain[first : last + 1])
            inside |= {b for a, b in self.edges if a in inside and b in self.loops}
            crossing = [(a, b) for a, b in self.edges if (a in inside) != (b in inside)]
            entering, leaving = self.chain[first], self.chain[last]
            if all((b == entering and a not in inside) or a == leaving for a, b in crossing):
                self._nest(inside, entering, leaving)
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, type_check=False)

    def _nest(self, inside: set[str], entering: str, leaving: str) -> None:
        before = self.shapes[self.chain[self.chain.index(entering) - 1]]
        nodes = {"input": nir.Input(np.array(before))} | {n: self.nodes.pop(n) for n in sorted(inside)}
        nodes["output"] = nir.Output(np.array(self.shapes[leaving]))
        inner = [(a, b) for a, b in self.edges if a in inside and b in inside]
        inner += [("input", entering), (leaving, "output")]
        outer = [
            ("sub" if a in inside else a, "sub" if b in inside else b)
            for a, b in self.edges
            if not (a in inside and b in inside)
        ]
        self.nodes["sub"] = nir.NIRGraph(nodes=nodes, edges=inner, type_check=False)
        self.edges = outer


@st.composite
def nir_graphs(draw: st.DrawFn) -> tuple[nir.NIRGraph, float]:
    """A random valid NIR graph and its dt."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dt = draw(st.sampled_from([1.0, 0.25, 1e-3]))
    shape = draw(
        st.sampled_from(
            [(int(rng.integers(1, 7)),), (int(rng.integers(1, 4)), int(rng.integers(2, 9))), (1, 5, 5), (2, 6, 4)]
        )
    )
    chain = _NIRChain(rng, dt, shape)
    for _ in range(draw(st.integers(1, 5))):
        chain.layer()
    if draw(st.booleans()):
        chain.skip()
    return chain.finish(nest=draw(st.booleans())), dt


def _datasets(f: h5py.File) -> list[str]:
    found: list[str] = []
    f["node"].visititems(lambda name, item: found.append(f"node/{name}") if isinstance(item, h5py.Dataset) else None)
    return found


def _groups(f: h5py.File) -> list[str]:
    found = ["node"]
    f["node"].visititems(lambda name, item: found.append(f"node/{name}") if isinstance(item, h5py.Group) else None)
    return found


def _replace(f: h5py.File, name: str, value: Any) -> None:
    del f[name]
    f[name] = value


def mutate_nir(data: st.DataObject, path: Path) -> None:
    """One change at the HDF5 level: a dataset's value (an element, or the whole), shape or type; a dataset or
    group deleted; a group added; a node's type or a graph's edges changed."""
    with h5py.File(path, "r+") as f:
        datasets = [d for d in _datasets(f) if not d.endswith(("/type", "/edges"))]
        typed = [g for g in _groups(f) if "type" in f[g]]
        graphs = [g for g in typed if "edges" in f[g] and "nodes" in f[g]]
        choices = ["group", "delete"] if datasets else ["group"]
        choices += ["element", "value", "dtype", "shape"] if datasets else []
        choices += ["type"] if typed else []
        choices += ["edges"] if graphs else []
        how = data.draw(st.sampled_from(choices))
        if how in ("element", "value", "dtype", "shape"):
            _change_dataset(data, f, data.draw(st.sampled_from(datasets)), how)
        elif how == "delete":
            del f[data.draw(st.sampled_from(datasets + _groups(f)[1:]))]
        elif how == "group":
            parent = data.draw(st.sampled_from(_groups(f)))
            name = data.draw(st.sampled_from(["extra", "nodes", "metadata", "x.y"])) + "_g"
            if name not in f[parent]:
                f[parent].create_group(name)
        elif how == "type":
            kind = data.draw(st.sampled_from(["Input", "Output", "LIF", "Conv2d", "Delay", "NIRGraph", "Izhikevich"]))
            _replace(f, f"{data.draw(st.sampled_from(typed))}/type", kind.encode())
        else:
            _change_edges(data, f, data.draw(st.sampled_from(graphs)))


def _change_dataset(data: st.DataObject, f: h5py.File, name: str, how: str) -> None:
    current = np.asarray(f[name][()])
    if how == "element" and current.dtype.kind in "biuf" and current.size:
        changed = current.astype(np.float64)
        changed.flat[data.draw(st.integers(0, current.size - 1))] = data.draw(st.sampled_from(HOSTILE_NUMBERS))
        _replace(f, name, changed)
    elif how in ("element", "value"):
        value = data.draw(
            st.sampled_from([*HOSTILE_NUMBERS, 1 + 1j, "text", np.zeros(0), np.zeros((2, 3)), np.array([7, 7])])
        )
        _replace(f, name, value)
    elif how == "dtype":
        dtype = data.draw(st.sampled_from(["f2", "f8", "i1", "u1", "?", "c8", "S4"]))
        _replace(f, name, current.astype(dtype) if current.dtype.kind in "biuf" else np.zeros(2, dtype))
    else:
        _replace(f, name, np.resize(current, data.draw(st.sampled_from([(1,), (3,), (2, 2), (1, 1, 1, 1)]))))


def _change_edges(data: st.DataObject, f: h5py.File, graph: str) -> None:
    """An edge dropped, added (between any two nodes, or to one that does not exist) or reversed."""
    edges = [tuple(e) for e in np.asarray(f[f"{graph}/edges"][()]).reshape(-1, 2).tolist()]
    names = [n.encode() for n in f[f"{graph}/nodes"]] + [b"missing"]
    change = data.draw(st.sampled_from(["drop", "add", "reverse"]))
    if change == "drop" and edges:
        edges.pop(data.draw(st.integers(0, len(edges) - 1)))
    elif change == "add" or not edges:
        edges.append((data.draw(st.sampled_from(names)), data.draw(st.sampled_from(names))))
    else:
        a, b = edges.pop(data.draw(st.integers(0, len(edges) - 1)))
        edges.append((b, a))
    _replace(f, f"{graph}/edges", np.array(edges, dtype="S") if edges else np.zeros((0, 2), "S1"))


def _read_unchecked(path: Path) -> nir.NIRGraph:
    """The file's graph as `nir.read(type_check=False)` gives it, but with NIR's type checking off in subgraphs too
    (it refuses scalar parameters, NIR issue #176)."""
    from nir.serialization import hdf2dict

    def unchecked(graph: dict[str, Any]) -> dict[str, Any]:
        nodes = {k: unchecked(n) if n.get("type") == "NIRGraph" else n for k, n in graph["nodes"].items()}
        return graph | {"nodes": nodes, "type_check": False}

    with h5py.File(path, "r") as f:
        return nir.dict2NIRNode(unchecked(hdf2dict(f["node"])))


def check_nir(path: Path, dt: float, seed: int, must_import: bool) -> None:
    compiled = compile_in_process(path, ImportOptions(dt=dt, timesteps=TIMESTEPS))
    assert isinstance(compiled, Compiled) or not must_import, f"a valid graph was refused: {compiled}"
    if not isinstance(compiled, Compiled):
        return
    x = input_for(compiled.graph, seed)

    def reference() -> np.ndarray:
        return NIRReference(_read_unchecked(path), dt).run(x)

    check_runs(compiled, x, reference, valid=must_import)


@settings(max_examples=150)
@given(graph=nir_graphs(), seed=st.integers(0, 1000))
def test_random_nir_graphs_compile_and_match_the_reference(graph: tuple[nir.NIRGraph, float], seed: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.nir"
        nir.write(path, graph[0])
        check_nir(path, graph[1], seed, must_import=True)


@settings(max_examples=300)
@given(graph=nir_graphs(), data=st.data())
def test_mutated_nir_files_are_refused_in_one_line_or_compile_correctly(
    graph: tuple[nir.NIRGraph, float], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.nir"
        nir.write(path, graph[0])
        for _ in range(data.draw(st.integers(1, 2))):
            mutate_nir(data, path)
        check_nir(path, graph[1], 0, must_import=False)


# ---------------------------------------------------------------------------------------------------------------
# torch.save archives of Norse models (.pt)
# ---------------------------------------------------------------------------------------------------------------


def check_pt(path: Path, shape: tuple[int, ...], seed: int) -> None:
    compiled = compile_in_process(path, ImportOptions(input_shape=shape, timesteps=TIMESTEPS))
    if isinstance(compiled, Compiled):
        x = input_for(compiled.graph, seed) * 3
        check_runs(compiled, x, lambda: run_norse(load_model(str(path)), x))


@settings(max_examples=250)
@given(data=st.data())
def test_mutated_pt_archives_are_refused_in_one_line_or_compile_correctly(seeds: Seeds, data: st.DataObject) -> None:
    content, shape = data.draw(st.sampled_from(seeds.pt))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.pt"
        if not zipfile.is_zipfile(io.BytesIO(content)) or data.draw(st.integers(0, 4)) == 0:  # the file's bytes
            path.write_bytes(mutated_bytes(data, content))
        else:
            write_zip(path, mutated_members(data, zip_members(content)))
        check_pt(path, shape, data.draw(st.integers(0, 1000)))
    assert not seeds.marker.exists(), "a payload ran"


# ---------------------------------------------------------------------------------------------------------------
# torch.export archives (.pt2)
# ---------------------------------------------------------------------------------------------------------------


JSON_VALUES = (0, -1, 1, 3, 2**31, 2**63, 1.5, -1e300, float("nan"), float("inf"), "", "x", None, [], {}, True)


def mutated_json(data: st.DataObject, content: bytes) -> bytes:
    """A JSON member with one value replaced (any key's, at any depth)."""
    try:
        document = json.loads(content)
    except ValueError:
        return mutated_bytes(data, content)
    places: list[tuple[Any, Any]] = []  # (container, key or index)
    stack = [document]
    while stack:
        current = stack.pop()
        pairs = (
            current.items() if isinstance(current, dict) else enumerate(current) if isinstance(current, list) else ()
        )
        for key, value in pairs:
            places.append((current, key))
            stack.append(value)
    if places:
        container, key = places[data.draw(st.integers(0, len(places) - 1))]
        container[key] = data.draw(st.sampled_from(JSON_VALUES))
    return json.dumps(document).encode()


def _state_shapes(program: torch.export.ExportedProgram) -> list[torch.Size]:
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    return [placeholders[name].meta["val"].shape for name in program.graph_signature.user_inputs[1:]]


def run_exported(path: Path, x: np.ndarray) -> np.ndarray:
    """PyTorch's own run of the archive's program from zero state, step by step."""
    program = load_export(path)
    module = program.module()
    state = [torch.zeros(shape) for shape in _state_shapes(program)]
    outputs = []
    with torch.no_grad():
        for step in x:
            out, *state = module(torch.from_numpy(step)[None], *state)
            outputs.append(out[0].numpy())
    return np.stack(outputs)


@settings(max_examples=200)
@given(data=st.data())
def test_mutated_pt2_archives_are_refused_in_one_line_or_compile_correctly(seeds: Seeds, data: st.DataObject) -> None:
    members = zip_members(data.draw(st.sampled_from(seeds.pt2)))
    documents = [i for i, (name, _) in enumerate(members) if name.endswith(".json")]
    if documents and data.draw(st.booleans()):
        index = data.draw(st.sampled_from(documents))
        members[index] = (members[index][0], mutated_json(data, members[index][1]))
    else:
        members = mutated_members(data, members)
    with tempfile.TemporaryDirectory() as folder:
        path = write_zip(Path(folder) / "mutated.pt2", members)
        compiled = compile_in_process(path, ImportOptions(timesteps=TIMESTEPS))
        if isinstance(compiled, Compiled):
            x = input_for(compiled.graph, 0) * 2
            check_runs(compiled, x, lambda: run_exported(path, x))
    assert not seeds.marker.exists(), "a payload ran"


# ---------------------------------------------------------------------------------------------------------------
# The same through the CLI
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=6)
@given(kind=st.sampled_from(["nir", "pt", "pt2"]), data=st.data())
def test_the_cli_exits_0_or_2_with_one_line(seeds: Seeds, kind: str, data: st.DataObject) -> None:
    """`masic compile --emit plan` on a mutated file: exit 0, or exit 2 with one line naming the file (the same
    verdict as in-process)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"mutated.{kind}"
        if kind == "nir":
            graph, dt = data.draw(nir_graphs())
            nir.write(path, graph)
            mutate_nir(data, path)
            options, args = ImportOptions(dt=dt), ("--dt", str(dt))
        elif kind == "pt":
            content, shape = data.draw(st.sampled_from(seeds.pt))
            write_zip(path, mutated_members(data, zip_members(content)))
            options, args = ImportOptions(input_shape=shape), ("--input-shape", ",".join(map(str, shape)))
        else:
            write_zip(path, mutated_members(data, zip_members(data.draw(st.sampled_from(seeds.pt2)))))
            options, args = ImportOptions(), ()
        result = masic_cli("compile", str(path), "--emit", "plan", *args)
        refused = not isinstance(compile_in_process(path, options), Compiled)
    errors = [line for line in result.stderr.splitlines() if line.startswith("masic: error: ")]
    assert result.returncode == (2 if refused else 0), result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    if refused:
        assert len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1] and str(path) in errors[0]
    assert not seeds.marker.exists(), "a payload ran"


def test_a_hang_is_not_a_refusal() -> None:
    """The time limit fails a test even inside a frontend's `except Exception` (it is a BaseException)."""
    with pytest.raises(Hang), decided_within(1), suppress(Exception):
        signal.pause()
