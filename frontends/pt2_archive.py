"""Reading a torch.export archive (`.pt2`) without running code chosen by its author.

`torch.export.load` runs code from the archive in several ways: weights, constants and objects flagged
`use_pickle` are read with full pickle (`torch.load(weights_only=False)`, `pickle.loads`); sample inputs that fail
the weights-only reader are retried with full pickle; symbolic shape expressions in the graph are parsed by
`sympy.sympify`, which calls `eval`; guard code becomes Python source; AOTInductor folders hold shared libraries.
And PyTorch's ZIP reader (miniz) and Python's `zipfile` may disagree about which bytes a member name means (two
members of one name: miniz takes the first, zipfile the last), so checking with one and loading with the other
checks nothing.

So masic reads the whole file once with `zipfile`, accepts only the members a plain `torch.export.save` writes (a
fixed list of paths under one root folder, each name once), checks their contents, and hands `torch.export.load` a
new archive built from exactly the bytes it checked. Nothing the check did not see reaches PyTorch.

Accepted contents: tensors stored as raw bytes (never pickled), sample inputs that PyTorch's weights-only reader
accepts (plain tensors), and a graph with static shapes (no symbolic expressions, range constraints or guards) whose
operators are aten ops.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from masic.frontends.errors import FrontendError, first_line, library_warnings_silenced
from masic.frontends.limits import MAX_ARCHIVE_BYTES, check_archive_size
from masic.frontends.safe_pickle import unpickler_reason

_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/(?P<model>[\w.-]+)\.json"
    r"|data/weights/[\w.-]+_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/[\w.-]+_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/[\w.-]+\.pt"
)
_CONFIG = re.compile(r"data/(weights|constants)/[\w.-]+_(weights|constants)_config\.json")
_OPERATOR = re.compile(r"torch\.ops\.aten\.\w+\.\w+|_operator\.getitem")


def checked_archive(path: Path) -> io.BytesIO:
    """The archive rebuilt from its checked members, for `torch.export.load`; refuses anything else in one line."""
    if not path.is_file():
        raise FrontendError(f"model file {path} does not exist")
    if path.stat().st_size > MAX_ARCHIVE_BYTES:
        raise FrontendError(f"{path} is larger than masic reads ({MAX_ARCHIVE_BYTES >> 30} GiB)")
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        check_archive_size(path, archive)  # masic holds the whole file in memory twice: as read and as rebuilt
        members = _members(archive, path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, ValueError) as err:
        if isinstance(err, FrontendError):
            raise
        raise FrontendError(
            f"{path} is not a torch.export archive (expected a .pt2 written by torch.export.save): {first_line(err)}"
        ) from None
    if members.get("archive_format", b"").strip() != b"pt2":
        raise FrontendError(f"{path} is not a torch.export archive of this PyTorch version (re-export it)")
    for name, content in members.items():
        _check_member(path, name, content)
    rebuilt = io.BytesIO()
    root = archive.infolist()[0].filename.split("/", 1)[0]
    with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_STORED) as out:
        for name, content in members.items():
            out.writestr(f"{root}/{name}", content)
    rebuilt.seek(0)
    return rebuilt


def _members(archive: zipfile.ZipFile, path: Path) -> dict[str, bytes]:
    """Every member's bytes by its path under the root folder; refuses unknown, repeated or encrypted members."""
    infos = archive.infolist()
    if not infos:
        raise FrontendError(f"{path} is an empty ZIP archive, not a torch.export archive")
    root = infos[0].filename.split("/", 1)[0]
    if not re.fullmatch(r"[\w-][\w.-]*", root):
        raise FrontendError(f"{path}: {infos[0].filename!r} is not inside a root folder of the archive")
    members: dict[str, bytes] = {}
    for info in infos:
        head, _, name = info.filename.partition("/")
        if head != root or not _MEMBERS.fullmatch(name):
            raise FrontendError(
                f"{path} holds {info.filename!r}, which a torch.export archive of one program does not contain "
                "(masic reads only its graph, raw tensors and sample inputs)"
            )
        if name in members:
            raise FrontendError(f"{path} holds two members named {info.filename!r}; refusing an ambiguous archive")
        if info.flag_bits & 0x1:
            raise FrontendError(f"{path}: member {info.filename!r} is encrypted")
        members[name] = archive.read(info)  # checks the member's CRC
    return members


def _check_member(path: Path, name: str, content: bytes) -> None:
    if _CONFIG.fullmatch(name):
        config = _json(path, name, content).get("config", {})
        if not isinstance(config, dict) or not all(isinstance(entry, dict) for entry in config.values()):
            raise FrontendError(f"{path}: {name} is not a configuration of tensors")
        for key, entry in config.items():
            prefix = "weight_" if name.startswith("data/weights/") else "tensor_"
            if entry.get("use_pickle") is not False or not str(entry.get("path_name", "")).startswith(prefix):
                raise FrontendError(f"{path} stores {key} as a pickled object; masic does not unpickle it")
    elif name.startswith("models/"):
        _check_program(path, name, _json(path, name, content))
    elif name.startswith("data/sample_inputs/"):
        try:  # torch retries a failing sample-input file with full pickle; make sure it cannot fail
            with library_warnings_silenced():
                torch.load(io.BytesIO(content), weights_only=True)
        except Exception as err:
            raise FrontendError(f"{path}: {name} is not plain tensors ({unpickler_reason(err)})") from None


def _json(path: Path, name: str, content: bytes) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except (ValueError, RecursionError) as err:
        raise FrontendError(f"{path}: {name} is not valid JSON ({first_line(err)})") from None
    if not isinstance(value, dict):
        raise FrontendError(f"{path}: {name} is not a JSON object")
    return value


def _check_program(path: Path, name: str, program: dict[str, Any]) -> None:
    """Static shapes only (torch parses symbolic expressions with sympy's eval), aten operators only."""
    if program.get("range_constraints") or program.get("guards_code"):
        raise FrontendError(f"{path}: the program has dynamic shapes; export it with static shapes (batch of one)")
    for key, value in _items(program):
        if key == "expr_str":
            raise FrontendError(f"{path}: the program holds a symbolic shape expression; export it with static shapes")
        if key == "target" and isinstance(value, str) and not _OPERATOR.fullmatch(value):
            raise FrontendError(f"{path}: the program calls {value[:80]!r}; masic reads aten operators only")


def _items(value: Any) -> list[tuple[str, Any]]:
    """Every (key, value) pair of nested JSON objects, iteratively (a deep file must not exhaust the stack)."""
    found: list[tuple[str, Any]] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            found.extend(current.items())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found
