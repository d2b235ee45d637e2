"""Values out of range and models beyond masic's limits (`masic.frontends.limits`) from Norse modules, torch.save
files and hand-edited torch.export archives: each refused in one line naming the file or module and the value
(NIR files of the same kinds are in tests/hostile_models.py's `nir-values` category)."""

from __future__ import annotations

import io
import json
import math
import re
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from masic.frontends.dispatch import ImportOptions, import_model
from masic.frontends.errors import FrontendError
from masic.frontends.limits import MAX_ARCHIVE_BYTES, MAX_GRAPH_NODES, MAX_TENSOR_ELEMENTS
from masic.frontends.norse import import_norse, install_pickle_aliases
from norse.torch import IAFCell, IAFParameters, LIBoxCell, LICell, LIFBoxCell, LIFCell, LIFParameters, SequentialState
from norse.torch.functional.leaky_integrator import LIParameters
from norse.torch.functional.lif_box import LIFBoxParameters
from torch import nn

from tests.artifacts import masic_cli


def _conv(**changes: object) -> nn.Conv2d:
    """A conv whose attributes were changed after construction, as a hand-edited pickle can change them."""
    conv = nn.Conv2d(1, 2, 3)
    for key, value in changes.items():
        setattr(conv, key, value)
    return conv


def _linear(weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return linear


def _pool(**changes: object) -> nn.MaxPool2d:
    pool = nn.MaxPool2d(2)
    for key, value in changes.items():
        setattr(pool, key, value)
    return pool


def _batchnorm(var: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(2)
    bn.running_var.fill_(var)
    return bn


def _without_weight() -> nn.Linear:
    linear = nn.Linear(4, 4)
    del linear.weight
    return linear


NAN, INF = float("nan"), float("inf")
IMAGE, FLAT = (1, 6, 6), (4,)
NORSE: dict[str, tuple[Callable[[], list[nn.Module]], tuple[int, ...], str]] = {
    "lif-tau-nan": (lambda: [LIFCell(LIFParameters(tau_mem_inv=torch.tensor(NAN)))], FLAT, "tau_mem_inv nan is not"),
    "lif-tau-syn-negative": (
        lambda: [LIFCell(LIFParameters(tau_syn_inv=torch.tensor(-200.0)))],
        FLAT,
        "model.0 (LIFCell): tau_syn_inv -200 is not positive and finite",
    ),
    "li-tau-inf": (lambda: [LICell(LIParameters(tau_mem_inv=torch.tensor(INF)))], FLAT, "tau_mem_inv inf is not"),
    "li-box-dt-0": (lambda: [LIBoxCell(dt=0.0)], FLAT, "dt 0 is not positive and finite"),
    "lif-box-threshold-nan": (
        lambda: [LIFBoxCell(LIFBoxParameters(v_th=torch.tensor(NAN)))],
        FLAT,
        "v_th holds nan",
    ),
    "iaf-reset-inf": (lambda: [IAFCell(IAFParameters(v_reset=torch.tensor(-INF)))], FLAT, "v_reset holds -inf"),
    "linear-weight-inf": (lambda: [_linear(torch.full((2, 4), INF))], FLAT, "model.0 (Linear): weight holds inf"),
    "linear-weight-1e300": (
        lambda: [_linear(torch.full((2, 4), 1e300, dtype=torch.float64))],
        FLAT,
        "weight holds inf (NaN, infinite, or beyond float32's range)",
    ),
    "linear-complex": (
        lambda: [_linear(torch.ones((2, 4), dtype=torch.complex64))],
        FLAT,
        "parameter 0.weight holds complex64 values, not real numbers",
    ),
    "conv-stride-0": (lambda: [_conv(stride=(0, 0))], IMAGE, "conv2d stride (0, 0) is out of range"),
    "conv-dilation-0": (lambda: [_conv(dilation=(0, 0))], IMAGE, "conv2d dilation (0, 0) is out of range"),
    "conv-padding-a-million": (lambda: [_conv(padding=(10**6, 10**6))], IMAGE, "padding (1000000, 1000000) is out"),
    "conv-groups-0": (lambda: [_conv(groups=0)], IMAGE, "conv2d groups 0 is not positive"),
    "maxpool-kernel-0": (lambda: [_pool(kernel_size=0)], IMAGE, "maxpool2d kernel (0, 0) is out of range"),
    "maxpool-negative-padding": (lambda: [_pool(padding=-1)], IMAGE, "maxpool2d padding (-1, -1) is out of range"),
    "batchnorm-negative-variance": (
        lambda: [nn.Conv2d(1, 2, 3), _batchnorm(-1.0)],
        IMAGE,
        "running_var + eps -0.99999 is not positive",
    ),
    "module-without-weight": (lambda: [_without_weight()], FLAT, "model.0 (Linear) is malformed: AttributeError"),
    "input-of-zero-elements": (
        lambda: [LIFCell()],
        (0,),
        "model input: input declares f32[0]: every dimension must be a positive integer",
    ),
    "input-beyond-the-tensor-limit": (lambda: [LIFCell()], (1 << 15, 1 << 14), "has more than 268435456 elements"),
    "nodes-beyond-the-limit": (
        lambda: [nn.ReLU() for _ in range(MAX_GRAPH_NODES)],
        FLAT,
        f"the model has more than {MAX_GRAPH_NODES} IR nodes a timestep",
    ),
}


@pytest.mark.parametrize("case", NORSE)
def test_norse_values_out_of_range_are_refused(case: str) -> None:
    layers, shape, message = NORSE[case]
    with pytest.raises(FrontendError, match=re.escape(message)) as refusal:
        import_norse(SequentialState(*layers()), shape)
    assert "\n" not in str(refusal.value)


def test_a_saved_norse_model_with_a_nan_time_constant_is_refused_naming_the_file(tmp_path: Path) -> None:
    install_pickle_aliases()
    path = tmp_path / "nan.pt"
    torch.save(SequentialState(nn.Linear(4, 4), LIFCell(LIFParameters(tau_mem_inv=torch.tensor(NAN)))), path)
    result = masic_cli("compile", str(path), "--emit", "ir")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"masic: error: {path}: model.1 (LIFCell): tau_mem_inv nan is not positive and finite"
    )


def _exported_members() -> list[tuple[str, bytes]]:
    from tests.export_models import conv_snn

    module, example = conv_snn()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module, example), buffer)
    archive = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _edited_conv(members: list[tuple[str, bytes]], name: str, value: list[int]) -> list[tuple[str, bytes]]:
    """The archive with the conv2d's argument `name` set to `value` in the program's JSON."""
    edited = []
    for member, content in members:
        if "/models/" in member:
            program = json.loads(content)
            for node in program["graph_module"]["graph"]["nodes"]:
                if node["target"] == "torch.ops.aten.conv2d.default":
                    inputs = [i for i in node["inputs"] if i["name"] != name]
                    inputs.append({"name": name, "arg": {"as_ints": value}, "kind": 1})
                    order = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
                    node["inputs"] = sorted(inputs, key=lambda i: order.index(i["name"]))
            content = json.dumps(program).encode()
        edited.append((member, content))
    return edited


def _nan_weight(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [
        (name, struct.pack("<f", math.nan) * (len(content) // 4) if name.endswith("weights/weight_0") else content)
        for name, content in members
    ]


@pytest.fixture(scope="module")
def exported() -> list[tuple[str, bytes]]:
    return _exported_members()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: _edited_conv(m, "dilation", [0, 0]), "conv2d dilation (0, 0) is out of range"),
        (lambda m: _edited_conv(m, "stride", [0, 0]), "conv2d stride (0, 0) is out of range"),
        (lambda m: _edited_conv(m, "padding", [10**6, 10**6]), "conv2d padding (1000000, 1000000) is out of range"),
        (_nan_weight, "weight holds nan"),
    ],
)
def test_hand_edited_exported_programs_are_refused(
    tmp_path: Path,
    exported: list[tuple[str, bytes]],
    edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]],
    message: str,
) -> None:
    path = _write_zip(tmp_path / "edited.pt2", edit(exported))
    with pytest.raises(FrontendError, match=re.escape(message)) as refusal:
        import_model(str(path), ImportOptions())
    assert str(path) in str(refusal.value) and "\n" not in str(refusal.value)


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as out:
        for name, content in members:
            out.writestr(name, content)
    return path


def _claiming_size(path: Path, members: list[tuple[str, bytes]], claimed: int) -> Path:
    """A ZIP file whose central directory says each member inflates to `claimed` bytes (readers allocate what it
    says: a small file can claim gigabytes)."""
    data = bytearray(_write_zip(path, members).read_bytes())
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        data[position + 24 : position + 28] = struct.pack("<I", claimed)  # the uncompressed size
        position = data.find(b"PK\x01\x02", position + 4)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("suffix", "options"), [(".pt", ImportOptions(input_shape=(4,))), (".pt2", ImportOptions())])
def test_archives_that_inflate_beyond_the_limit_are_refused_before_reading(
    tmp_path: Path, suffix: str, options: ImportOptions
) -> None:
    members = [(f"archive/data/{k}", b"\0" * 16) for k in range(2)]
    path = _claiming_size(tmp_path / f"bomb{suffix}", members, 0xFFFFFFFF)
    started = time.perf_counter()
    with pytest.raises(FrontendError, match=f"masic reads archives of at most {MAX_ARCHIVE_BYTES >> 30} GiB"):
        import_model(str(path), options)
    assert time.perf_counter() - started < 5


def test_the_limits_leave_room_for_the_models_masic_is_built_for() -> None:
    """The zoo's largest models stay far below the limits: vgg19's largest weight within half the tensor limit,
    MobileNetV2's graph (the most nodes) within an eighth of the node limit."""
    from norse.torch.models.mobilenet import MobileNetV2
    from norse.torch.models.vgg import vgg19_bn

    assert max(p.numel() for p in vgg19_bn().parameters()) * 2 < MAX_TENSOR_ELEMENTS
    assert len(import_norse(MobileNetV2(), (3, 224, 224)).nodes) * 8 < MAX_GRAPH_NODES
