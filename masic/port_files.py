"""`.npz` files of named inputs and outputs for `masic run`, for artifacts whose input or output packs several
(`masic.ir.graph.Port`): the executable reads and writes one packed `.npy` a run; these convert at that boundary."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from masic.errors import MasicError
from masic.ir.graph import Port
from masic.ir.ports import pack, split


class PortFileError(MasicError, ValueError):
    """An .npz that does not fit the artifact's ports."""


def packed_input(ports: tuple[Port, ...], path: Path, folder: Path) -> Path:
    """`path` itself for a .npy; for a .npz of one array per input port (by name), the packed input written to
    `folder`."""
    if path.suffix != ".npz":
        return path
    if not ports:
        raise PortFileError(f"{path}: an .npz names the inputs of a model with several; this one takes one .npy")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            packed = pack(ports, {name: arrays[name] for name in arrays.files})
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise PortFileError(f"{path}: {err}") from None
    np.save(folder / "input.npy", packed)
    return folder / "input.npy"


def check_output(ports: tuple[Port, ...], path: Path) -> None:
    """Refuses an .npz output for a model whose output is one tensor (before anything runs)."""
    if path.suffix == ".npz" and not ports:
        raise PortFileError(f"{path}: an .npz names the outputs of a model with several; this one writes one .npy")


def split_output(ports: tuple[Port, ...], packed: Path, path: Path) -> None:
    """Writes the packed output `packed` (.npy) to `path` as an .npz of one array per output port."""
    np.savez(path, **split(ports, np.load(packed, allow_pickle=False)))
