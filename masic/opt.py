"""`masic opt`: run named passes on a graph in textual IR, as the compiler's pass manager runs them.

    masic opt model.ir -p infer-shapes,spike-dtype [--weights W.npz] [--budget 64KB] [--target aarch64] [-o out.ir]

The file is parsed (`masic.ir.text`: `//` lines are comments; parameters get their values from W.npz by name, else
deterministic random ones) and verified, then exactly the named passes run in the order given, each followed by the
verifier; the result is printed as textual IR. A pass that refuses the graph, or leaves it invalid, stops the run
with its error, which names the pass and the node. Without `-p` the input is only verified and printed.

This is the in-process API the command and the tests share: `read_graph` and `run_passes`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from masic.errors import MasicError
from masic.ir.graph import Graph
from masic.ir.text import ParseError, parse
from masic.ir.verify import VerifyError, verify
from masic.passes import REGISTRY, PassOptions
from masic.passes.manager import PassManager


class OptError(MasicError, ValueError):
    """An input `masic opt` cannot use: an unknown pass name, or weights that do not fit the graph."""


def pass_list(text: str) -> tuple[str, ...]:
    """Pass names separated by commas (`-p infer-shapes,spike-dtype`), each one the registry knows."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise OptError(f"unknown pass {unknown[0]!r}; known passes: {', '.join(REGISTRY)}")
    return names


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, by key, as float32; refuses pickled or non-numeric arrays."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile) as err:
        raise OptError(f"{path}: not an .npz file of arrays ({err})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise OptError(f"{path}: not an .npz file (one array named by each parameter, e.g. from numpy.savez)")
    with data:
        try:
            arrays = {name: data[name] for name in data.files}
        except ValueError as err:  # an object array, which only pickle could load
            raise OptError(f"{path}: {err}") from None
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise OptError(f"{path}: array {name!r} holds {array.dtype}, not numbers")
    return {name: array.astype(np.float32) for name, array in arrays.items()}


def read_graph(path: Path, weights: Path | None = None) -> Graph:
    """The verified graph of an .ir file, with its parameters' values from an .npz file (keys: parameter names) or,
    for the parameters it does not hold, random ones (`masic.ir.text.random_weight`)."""
    given = load_weights(weights) if weights is not None else {}
    try:
        graph = parse(path.read_text(), given)
    except (ParseError, UnicodeDecodeError) as err:  # malformed text, or no text at all
        raise OptError(f"{path}: {err}") from None
    declared = {p.name: p.type for p in graph.params}
    for name, array in given.items():
        if name not in declared:
            raise OptError(f"{weights}: {name!r} is not a parameter of the graph (it declares {', '.join(declared)})")
        if array.shape != declared[name].shape:
            raise OptError(f"{weights}: {name!r} has shape {array.shape}, but the graph declares {declared[name]}")
    try:
        verify(graph)
    except VerifyError as err:
        raise VerifyError(f"{path}: {err.message}", err.node) from None
    return graph


def run_passes(graph: Graph, names: Sequence[str], options: PassOptions | None = None) -> Graph:
    """The graph after exactly the named passes, in that order, each verified after it runs (`PassManager`)."""
    return PassManager(names, options or PassOptions()).run(graph)
