"""Reading a NIR file (HDF5) as untrusted input: `read_nir` returns its top NIRGraph, or refuses the file in one line.

The file must be HDF5, checked by its signature before any library looks inside (a pickle or ZIP is refused, never
unpickled). Its HDF5 objects are walked before anything is read: links to other files, soft links, datasets stored
in other files or as virtual views, link cycles and sizes beyond `masic.frontends.limits` are refused. Then
`nir.serialization.hdf2dict` reads it into plain arrays, and the structure and every value are checked on the file's
own values before NIR's constructors see them (`nir.dict2NIRNode`, with NIR's type checking off in every subgraph:
it rejects scalar parameters, NIR issue #176): node types masic imports, edges, a Conv's `input_shape`, non-empty
weights, parameters that are real numbers finite in float32. Each refusal names the file and the node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from masic.frontends.errors import FrontendError, first_line, library_warnings_silenced
from masic.frontends.limits import MAX_FILE_ELEMENTS, MAX_HDF5_DEPTH, MAX_HDF5_OBJECTS, MAX_TENSOR_ELEMENTS

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SUPPORTED = (
    "Input",
    "Output",
    "Affine",
    "Linear",
    "Scale",
    "Conv1d",
    "Conv2d",
    "SumPool2d",
    "AvgPool2d",
    "Flatten",
    "Threshold",
    "Delay",
    "I",
    "IF",
    "LI",
    "LIF",
    "CubaLI",
    "CubaLIF",
    "NIRGraph",
)


def _signature_offsets(size: int) -> Iterator[int]:
    """Where an HDF5 superblock may start: 0, 512, 1024, 2048, ... (after a user block)."""
    yield 0
    offset = 512
    while offset + len(HDF5_SIGNATURE) <= size:
        yield offset
        offset *= 2


def _check_hdf5(path: Path) -> None:
    """Refuses anything that is not HDF5 before any library looks inside it."""
    if not path.is_file():
        raise FrontendError(f"NIR file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(8)
        size = path.stat().st_size
        for offset in _signature_offsets(size):
            f.seek(offset)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return
    kind = "a ZIP archive (such as a torch.save pickle)" if head.startswith(b"PK\x03\x04") else "not an HDF5 file"
    raise FrontendError(f"{path} is {kind}; a NIR file is HDF5 (masic never unpickles model files)")


def _check_hdf5_objects(f: Any, path: Path) -> None:
    """Refuses what would make reading the file read other files or unbounded data: external links, soft links,
    datasets stored in external files or as virtual views of other files, link cycles, oversized datasets, groups
    nested deeper than `MAX_HDF5_DEPTH` (reading them recurses)."""
    import h5py

    stack: list[tuple[Any, str, frozenset[Any]]] = [(f, "", frozenset())]
    seen = elements = 0
    while stack:
        group, where, ancestors = stack.pop()
        for key in group:
            name = f"{where}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise FrontendError(f"{path}: {name} is an external link to {link.filename}; masic reads one file")
            if isinstance(link, h5py.SoftLink):
                raise FrontendError(f"{path}: {name} is a soft link; a NIR file holds none")
            item = group[key]
            seen += 1
            if seen > MAX_HDF5_OBJECTS:
                raise FrontendError(f"{path} holds more than {MAX_HDF5_OBJECTS} HDF5 objects")
            if isinstance(item, h5py.Group):
                if item.id in ancestors:
                    raise FrontendError(f"{path}: {name} links back to a group that contains it")
                if len(ancestors) >= MAX_HDF5_DEPTH:
                    raise FrontendError(f"{path}: {name} is nested more than {MAX_HDF5_DEPTH} groups deep")
                stack.append((item, name, ancestors | {group.id}))
            elif isinstance(item, h5py.Dataset):
                if item.is_virtual:
                    raise FrontendError(f"{path}: {name} is a virtual dataset (data from other files)")
                if item.external:
                    raise FrontendError(f"{path}: {name} is stored in an external file ({item.external[0][0]})")
                elements += item.size or 0
                if (item.size or 0) > MAX_TENSOR_ELEMENTS or elements > MAX_FILE_ELEMENTS:
                    raise FrontendError(
                        f"{path}: {name} of shape {item.shape} is larger than masic reads "
                        f"({MAX_TENSOR_ELEMENTS} elements a tensor, {MAX_FILE_ELEMENTS} a file)"
                    )


def _check_structure(data: dict[str, Any], where: str) -> None:
    """The problems NIR's own constructors would report as assertions or missing arguments, named."""
    import nir

    if "nodes" not in data or not isinstance(data["nodes"], dict):
        raise FrontendError(f"{where} has no nodes (a truncated or incomplete export)")
    if "edges" not in data:
        raise FrontendError(f"{where} has no edges (a truncated or incomplete export)")
    for name, node in data["nodes"].items():
        kind = node.get("type") if isinstance(node, dict) else None
        label = f"node '{name}' ({kind}) in {where}"
        if kind not in SUPPORTED:
            raise FrontendError(f"unsupported NIR node '{name}' of type {kind} in {where}")
        if kind == "NIRGraph":
            _check_structure(node, f"subgraph '{name}'")
            node["type_check"] = False
        if kind in ("Conv1d", "Conv2d") and "input_shape" not in node:
            raise FrontendError(f"{label} has no input_shape (the pre-1.0 NIR schema); re-export it with NIR >= 1.0")
        for key in ("weight", "bias", "tau", "tau_mem", "tau_syn", "r", "v_threshold", "scale", "delay"):
            if key in node and np.size(node[key]) == 0:
                raise FrontendError(f"{label} has an empty {key}")
        if kind in ("Affine", "Linear", "Conv1d", "Conv2d") and "weight" not in node:
            raise FrontendError(f"{label} has no weight (a truncated or incomplete export)")
        _check_numbers(node, label)
        if kind != "NIRGraph":  # built alone here so that a failure names the node (a whole graph's would not)
            try:
                with library_warnings_silenced():
                    nir.dict2NIRNode(dict(node))
            except Exception as err:  # NIR's constructors assert, raise TypeError, ValueError, OverflowError...
                raise FrontendError(f"{label} is not a valid NIR node: {first_line(err)}") from None


_TEXT_KEYS = ("type", "padding", "edges")  # a conv's padding may be "same" or "valid"; edges name nodes


def _check_numbers(node: dict[str, Any], label: str) -> None:
    """Every parameter of a node is real numbers, finite in float32 (checked on the file's own values, so that the
    message quotes them: 1e300 is finite in float64 but not in the float32 masic computes in)."""
    for key, value in node.items():
        if isinstance(value, dict) or key in _TEXT_KEYS:
            continue  # input_type, output_type and metadata hold shapes, checked where they are read
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise FrontendError(f"{label} has {key} of {array.dtype} values; masic reads real numbers")
        with np.errstate(over="ignore"):
            bad = array[~np.isfinite(array.astype(np.float32))]
        if bad.size:
            raise FrontendError(
                f"{label} has {key} {bad.flat[0]:g}, which is NaN, infinite or beyond float32's range; masic "
                "compiles finite values only"
            )


def read_nir(path: Path) -> Any:
    """The file's top NIRGraph, read without unpickling anything; every failure is a one-line FrontendError."""
    import h5py
    import nir
    from nir.serialization import hdf2dict

    _check_hdf5(path)
    try:
        with h5py.File(path, "r") as f:
            _check_hdf5_objects(f, path)
            if "node" not in f:
                raise FrontendError(f"{path} is HDF5 but not a NIR graph (no 'node' group)")
            with library_warnings_silenced():
                data = hdf2dict(f["node"])
    except FrontendError:
        raise
    except Exception as err:  # h5py reports corrupt files with many exception types
        raise FrontendError(f"cannot read {path}: {first_line(err)}") from None
    if data.get("type") != "NIRGraph":
        raise FrontendError(f"{path} holds a NIR {data.get('type')}, not a NIRGraph")
    try:
        _check_structure(data, "the graph")
    except FrontendError as err:
        raise FrontendError(f"{path}: {err}") from None
    data["type_check"] = False
    try:
        with library_warnings_silenced():
            return nir.dict2NIRNode(data)
    except Exception as err:  # NIR's constructors assert, raise TypeError, ValueError, KeyError...
        raise FrontendError(f"{path} is not a valid NIR graph: {first_line(err)}") from None
