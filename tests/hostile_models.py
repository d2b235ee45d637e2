"""A corpus of hostile model files: pickles (.pt), torch.export archives (.pt2) and HDF5 (.nir) built to run code,
read other files or confuse masic's checks, and NIR graphs whose values are out of range (NaN, infinities, strides of
0, delays of a million seconds, ...) or beyond masic's limits (`masic.frontends.limits`). Every payload that runs
creates its marker file, the proof that code ran. Used by tests/security and bench/hostile.py.

Each builder writes one file into a folder and returns a `Case`; `build_all(folder, marker)` builds every case."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Case:
    category: str  # pickles | archives | hdf5 | nir-values
    name: str
    path: Path
    args: tuple[str, ...] = ()  # extra `masic compile` arguments


# ---------------------------------------------------------------------------------------------------------------
# Pickles (torch.save files of Norse models)
# ---------------------------------------------------------------------------------------------------------------


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _memo(i: int) -> bytes:
    return b"q" + bytes([i])


def _get(i: int) -> bytes:
    return b"h" + bytes([i])


def _touch(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _saved_model() -> bytes:
    from masic.frontends.norse import install_pickle_aliases
    from norse.torch import LIFCell, SequentialState

    install_pickle_aliases()
    buffer = io.BytesIO()
    torch.save(SequentialState(nn.Linear(2, 2), LIFCell()), buffer)
    return buffer.getvalue()


def _with_prefix(path: Path, prefix: bytes) -> Path:
    """A real saved model whose pickle runs `prefix` (protocol 2 opcodes, ending with an empty stack) first."""
    original = zipfile.ZipFile(io.BytesIO(_saved_model()))
    (pkl,) = [n for n in original.namelist() if n.endswith("data.pkl")]
    data = original.read(pkl)
    assert data[:2] == b"\x80\x02"
    with zipfile.ZipFile(path, "w") as out:
        for item in original.infolist():
            out.writestr(item, b"\x80\x02" + prefix + data[2:] if item.filename == pkl else original.read(item))
    return path


_REBUILD = _global("torch._tensor", "_rebuild_from_type_v2")


def _getattr_chain_to_eval(marker: Path) -> bytes:
    """The chain found in the campaign: getattr reaches a Norse function's __builtins__, then its get, then eval,
    which torch's own allowlisted _rebuild_from_type_v2 calls."""
    p = _global("__builtin__", "getattr") + _memo(0)
    p += _get(0) + _global("norse.torch.functional.lif", "lif_feed_forward_step") + _text("__builtins__")
    p += b"\x86R" + _memo(1)
    p += _get(0) + _get(1) + _text("get") + b"\x86R" + _memo(2)
    p += _get(0) + _get(0) + _text("__class__") + b"\x86R" + _memo(3)
    p += _REBUILD + _memo(4)
    p += _get(4) + b"(" + _get(2) + _get(3) + _text("eval") + b"\x85}tR" + _memo(5)
    p += _get(4) + b"(" + _get(5) + _get(3) + _text(_touch(marker)) + b"\x85}tR0"
    return p


def _getattr_through_rebuild(marker: Path) -> bytes:
    """getattr called through _rebuild_from_type_v2 instead of REDUCE, on a function's __globals__."""
    p = _REBUILD + b"(" + _global("__builtin__", "getattr") + _global("__builtin__", "set")
    p += b"(" + _global("norse.torch.functional.lif", "lif_feed_forward_step") + _text("__globals__") + b"t}tR0"
    return p + _getattr_chain_to_eval(marker)


def _getattr_dunder_of_cell(marker: Path) -> bytes:
    """An allowed class and a method-looking name that is not a method the class defines for pickle."""
    p = _global("__builtin__", "getattr") + _global("norse.torch.module.lif", "LIFCell") + b")\x81"
    p += _text("__init__") + b"\x86R0"
    return p + _getattr_chain_to_eval(marker)


def _getattr_initial_state_of_function(marker: Path) -> bytes:
    """The allowed method name on an object that is not an allowed module."""
    p = _global("__builtin__", "getattr") + _global("norse.torch.functional.lif", "lif_feed_forward_step")
    p += _text("initial_state") + b"\x86R0"
    return p + _getattr_chain_to_eval(marker)


def _reduce(module: str, name: str, marker: Path) -> Callable[[Path], bytes]:
    def payload(_: Path) -> bytes:
        return _global(module, name) + _text(_touch(marker)) + b"\x85R0"

    return payload


def _stack_global_exec(marker: Path) -> bytes:
    """STACK_GLOBAL (protocol 4's way of naming a global) of builtins.exec."""
    return _text("builtins") + _text("exec") + b"\x93" + _text(_touch(marker)) + b"\x85R0"


def _newobj_path(marker: Path) -> bytes:
    """NEWOBJ of a class outside the allowlist (pathlib.Path), then its touch method through getattr."""
    p = _global("pathlib", "Path") + _text(str(marker)) + b"\x85\x81" + _memo(0)
    return p + _global("__builtin__", "getattr") + _get(0) + _text("touch") + b"\x86R)R0"


def _pickle_cases(folder: Path, marker: Path) -> list[Case]:
    builders: dict[str, Callable[[Path], bytes]] = {
        "getattr-chain-to-eval": _getattr_chain_to_eval,
        "getattr-through-rebuild": _getattr_through_rebuild,
        "getattr-dunder-of-cell": _getattr_dunder_of_cell,
        "getattr-initial-state-of-function": _getattr_initial_state_of_function,
        "reduce-os-system": _reduce("os", "system", marker),
        "reduce-builtins-eval": _reduce("__builtin__", "eval", marker),
        "reduce-subprocess-getoutput": _reduce("subprocess", "getoutput", marker),
        "stack-global-exec": _stack_global_exec,
        "newobj-pathlib": _newobj_path,
    }
    cases = [
        Case("pickles", name, _with_prefix(folder / f"{name}.pt", build(marker)), ("--input-shape", "2"))
        for name, build in builders.items()
    ]
    plain = folder / "plain-pickle.pt"
    plain.write_bytes(pickle.dumps(_Touch(marker)))
    cases.append(Case("pickles", "plain-pickle-not-zip", plain, ("--input-shape", "2")))
    return cases


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


# ---------------------------------------------------------------------------------------------------------------
# torch.export archives
# ---------------------------------------------------------------------------------------------------------------


def _exported() -> dict[str, bytes]:
    from tests.export_models import neurons

    module, example = neurons()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module, example), buffer)
    archive = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    return {item.filename: archive.read(item) for item in archive.infolist()}


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members:
            out.writestr(name, data)
    return path


def _config_name(members: dict[str, bytes], kind: str) -> str:
    return next(n for n in members if n.endswith(f"_{kind}_config.json"))


def _pickled_weight(members: dict[str, bytes], marker: Path) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A weights config whose first entry is read with full pickle from an added member holding the payload."""
    config_name = _config_name(members, "weights")
    config = json.loads(members[config_name])
    first = next(iter(config["config"].values()))
    first.update(use_pickle=True, path_name="weight_99")
    folder = config_name.rsplit("/", 1)[0]
    return json.dumps(config).encode(), [(f"{folder}/weight_99", pickle.dumps(_Touch(marker)))]


def _archive_cases(folder: Path, marker: Path) -> list[Case]:
    members = _exported()
    weights_config = _config_name(members, "weights")
    model_json = next(n for n in members if "/models/" in n)
    root = weights_config.split("/", 1)[0]
    cases: list[Case] = []

    def add(name: str, entries: list[tuple[str, bytes]]) -> None:
        cases.append(Case("archives", name, _write_zip(folder / f"{name}.pt2", entries)))

    evil_config, payload = _pickled_weight(members, marker)
    # The campaign's archive: two members of one name; PyTorch's reader takes the first, zipfile the last.
    add("duplicate-weights-config", [(weights_config, evil_config), *payload, *members.items()])
    add("pickled-weight", [(n, evil_config if n == weights_config else d) for n, d in members.items()] + payload)
    add(
        "pickled-sample-inputs",
        [(n, pickle.dumps(_Touch(marker)) if "/sample_inputs/" in n else d) for n, d in members.items()],
    )
    program = json.loads(members[model_json])
    program["guards_code"] = [_touch(marker)]
    add("guards-code", [(n, json.dumps(program).encode() if n == model_json else d) for n, d in members.items()])
    program = json.loads(members[model_json])
    text = json.dumps(program).replace('"as_int": 64', '"as_expr": {"expr_str": "' + _touch(marker) + '"}', 1)
    text = text.replace("'", "\\u0027")
    add("sympy-expression", [(n, text.encode() if n == model_json else d) for n, d in members.items()])
    text = json.dumps(json.loads(members[model_json])).replace(
        '"torch.ops.aten.relu.default"', '"torch.serialization.os.system"'
    )
    add("non-aten-target", [(n, text.encode() if n == model_json else d) for n, d in members.items()])
    add("member-outside-root", [*members.items(), ("other/payload", b"x")])
    add("path-traversal", [*members.items(), (f"{root}/../evil", b"x")])
    add("aotinductor-library", [*members.items(), (f"{root}/data/aotinductor/model/model.so", b"\x7fELF")])
    add("legacy-pickled-weights", [*members.items(), (f"{root}/data/weights/model.pt", pickle.dumps(_Touch(marker)))])
    constants = json.dumps(
        {"config": {"c": {"path_name": "custom_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}
    ).encode()
    add(
        "custom-object-constant",
        [(n, constants if n.endswith("_constants_config.json") else d) for n, d in members.items()]
        + [(f"{root}/data/constants/custom_obj_0", pickle.dumps(_Touch(marker)))],
    )
    add("empty-zip", [])
    return cases


# ---------------------------------------------------------------------------------------------------------------
# HDF5 (NIR)
# ---------------------------------------------------------------------------------------------------------------


def _nir_graph(path: Path) -> Path:
    import nir

    weight = np.eye(2, dtype=np.float32)
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type=np.array([2])),
            "fc": nir.Linear(weight=weight),
            "out": nir.Output(output_type=np.array([2])),
        },
        edges=[("in", "fc"), ("fc", "out")],
    )
    nir.write(path, graph)
    return path


def _hdf5_cases(folder: Path) -> list[Case]:
    import h5py

    secret = folder / "secret.npy"
    np.save(secret, np.full((2, 2), 7.0, np.float32))
    raw = folder / "secret.raw"
    raw.write_bytes(np.full(4, 7.0, np.float32).tobytes())
    cases: list[Case] = []

    def add(name: str, change: Callable[[h5py.File], None]) -> None:
        path = _nir_graph(folder / f"{name}.nir")
        with h5py.File(path, "a") as f:
            change(f)
        cases.append(Case("hdf5", name, path, ("--dt", "1e-4")))

    def external_link(f: h5py.File) -> None:
        del f["node/nodes/fc/weight"]
        other = _nir_graph(folder / "other.nir")
        f["node/nodes/fc/weight"] = h5py.ExternalLink(str(other), "/node/nodes/fc/weight")

    def external_storage(f: h5py.File) -> None:
        del f["node/nodes/fc/weight"]
        f.create_dataset("node/nodes/fc/weight", shape=(2, 2), dtype="f4", external=[(str(raw), 0, 16)])

    def virtual_dataset(f: h5py.File) -> None:
        other = _nir_graph(folder / "source.nir")
        layout = h5py.VirtualLayout(shape=(2, 2), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "/node/nodes/fc/weight", shape=(2, 2))
        del f["node/nodes/fc/weight"]
        f.create_virtual_dataset("node/nodes/fc/weight", layout)

    def soft_link_loop(f: h5py.File) -> None:
        f["node/nodes/fc/loop"] = h5py.SoftLink("/node/nodes/fc/loop")

    def hard_link_cycle(f: h5py.File) -> None:
        f["node/nodes/fc/again"] = f["node/nodes/fc"]

    def huge_unwritten_dataset(f: h5py.File) -> None:
        del f["node/nodes/fc/weight"]
        f.create_dataset("node/nodes/fc/weight", shape=(1 << 17, 1 << 17), dtype="f4", chunks=(64, 64))

    for name, change in {
        "external-link": external_link,
        "external-storage": external_storage,
        "virtual-dataset": virtual_dataset,
        "soft-link-loop": soft_link_loop,
        "hard-link-cycle": hard_link_cycle,
        "huge-unwritten-dataset": huge_unwritten_dataset,
    }.items():
        add(name, change)
    pickled = folder / "pickle.nir"
    pickled.write_bytes(pickle.dumps(_Touch(folder / "never")))
    cases.append(Case("hdf5", "pickle-named-nir", pickled, ("--dt", "1e-4")))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# NIR values (each file: input -> node 'm' -> output, with one value changed in the HDF5 file where NIR's own
# constructors would refuse to write it)
# ---------------------------------------------------------------------------------------------------------------


def _nir_chain(path: Path, node: object, shape: tuple[int, ...], changes: dict[str, object]) -> Path:
    import h5py
    import nir

    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array(shape)), "m": node, "out": nir.Output(np.array(shape))},
        edges=[("in", "m"), ("m", "out")],
        type_check=False,
    )
    nir.write(path, graph)
    with h5py.File(path, "r+") as f:
        for key, value in changes.items():
            if key in f:
                del f[key]
            f[key] = value
    return path


def _nir_value_cases(folder: Path) -> list[Case]:
    import nir

    one = np.ones(1, np.float32)
    lif = {"tau": one * 1e-2, "r": one, "v_leak": one * 0, "v_threshold": one, "v_reset": one * 0}
    image, flat = (1, 4, 4), (3,)
    conv = nir.Conv2d((4, 4), np.ones((1, 1, 3, 3), np.float32), 1, 1, 1, 1, np.zeros(1, np.float32))
    pool = nir.SumPool2d(np.array([2, 2]), np.array([1, 1]), np.array([0, 0]))
    deep = "/".join(["g"] * 70)
    m = "node/nodes/m"
    cases: dict[str, tuple[object, tuple[int, ...], dict[str, object]]] = {
        "delay-nan": (nir.Delay(one * 1e-3), flat, {f"{m}/delay": [np.nan]}),
        "delay-negative": (nir.Delay(one * 1e-3), flat, {f"{m}/delay": [-1e-3]}),
        # the campaign's file: 1e6 s at dt 1e-4 grew past 3.9 GB in 90 s
        "delay-a-million-seconds": (nir.Delay(one * 1e6), flat, {}),
        "delay-state-beyond-the-tensor-limit": (nir.Delay(one * 1e-2), (1 << 12, 1 << 12), {}),
        "sumpool-stride-0": (pool, image, {f"{m}/stride": [0, 0]}),
        "sumpool-kernel-0": (pool, image, {f"{m}/kernel_size": [0, 0]}),
        "pool-negative-padding": (pool, image, {f"{m}/padding": [-1, -1]}),
        "conv-padding-a-million": (conv, image, {f"{m}/padding": [10**6, 10**6]}),
        "conv-padded-input-beyond-the-tensor-limit": (
            conv,
            image,
            {f"{m}/padding": [60000, 60000], f"{m}/stride": [60000, 60000]},  # a 3x3 output of a 120004^2 input
        ),
        "conv-dilation-0": (conv, image, {f"{m}/dilation": [0, 0]}),
        "conv-stride-0": (conv, image, {f"{m}/stride": [0, 0]}),
        "conv-fractional-stride": (conv, image, {f"{m}/stride": [1.5, 1.5]}),
        "conv-groups-0": (conv, image, {f"{m}/groups": 0}),
        "lif-threshold-nan": (nir.LIF(**lif), flat, {f"{m}/v_threshold": [np.nan]}),
        "lif-tau-inf": (nir.LIF(**lif), flat, {f"{m}/tau": [np.inf]}),
        "lif-tau-zero": (nir.LIF(**lif), flat, {f"{m}/tau": [0.0]}),
        "lif-tau-negative": (nir.LIF(**lif), flat, {f"{m}/tau": [-1e-2]}),
        "lif-tau-subnormal": (nir.LIF(**lif), flat, {f"{m}/tau": np.array([1e-45], np.float32)}),
        "linear-complex-weights": (nir.Linear(np.eye(3, dtype=np.complex64) * (1 + 1j)), flat, {}),
        "linear-weight-1e300": (nir.Linear(np.eye(3)), flat, {f"{m}/weight": np.eye(3) * 1e300}),
        "affine-bias-inf": (nir.Affine(np.eye(3), np.zeros(3)), flat, {f"{m}/bias": [np.inf, 0, 0]}),
        "scale-nan": (nir.Scale(np.ones(3)), flat, {f"{m}/scale": [1, np.nan, 1]}),
        "input-of-zero-elements": (nir.Scale(one), flat, {"node/nodes/in/shape": [0]}),
        "input-of-negative-size": (nir.Scale(one), flat, {"node/nodes/in/shape": [-3]}),
        "input-beyond-the-tensor-limit": (nir.Scale(one), flat, {"node/nodes/in/shape": [1 << 15, 1 << 14]}),
        "flatten-dimension-out-of-range": (nir.Flatten({"input": np.array(flat)}, 0, 0), flat, {f"{m}/start_dim": 5}),
        "groups-nested-too-deep": (nir.Scale(one), flat, {f"{m}/{deep}/x": 0}),
        "edges-beyond-the-limit": (nir.Scale(one), flat, {"node/edges": np.array([[b"in", b"m"]] * 16_385)}),
    }
    return [
        Case("nir-values", name, _nir_chain(folder / f"{name}.nir", node, shape, changes), ("--dt", "1e-4"))
        for name, (node, shape, changes) in cases.items()
    ]


def build_all(folder: Path, marker: Path) -> list[Case]:
    """Every hostile model file, written under `folder`; a payload that runs creates `marker`."""
    folder.mkdir(parents=True, exist_ok=True)
    return (
        _pickle_cases(folder, marker) + _archive_cases(folder, marker) + _hdf5_cases(folder) + _nir_value_cases(folder)
    )
