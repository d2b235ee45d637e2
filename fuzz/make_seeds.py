"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): small valid and nearly valid inputs from
which libFuzzer's mutations start. Run it again after changing a target's input format; the files are committed.

    python fuzz/make_seeds.py
"""

from __future__ import annotations

import io
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from masic.codegen.exit_section import BLOCK, MAGIC, VERSION  # noqa: E402

CORPUS = HERE / "corpus"


def npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    f = io.BytesIO()
    if version is None:
        np.save(f, array)
    else:
        np.lib.format.write_array(f, array, version=version)
    return f.getvalue()


def raw_npy(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    text = header.encode("utf-8" if version[0] == 3 else "latin-1")
    size = struct.pack("<H", len(text)) if version[0] == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + size + text + data


def npy_seeds() -> dict[str, bytes]:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    return {
        "f4_2x3": npy(x),
        "f4_seq": npy(np.zeros((3, 2, 3), np.float32)),
        "f4_v2": npy(x, (2, 0)),
        "f4_v3": npy(x, (3, 0)),
        "i8_labels": npy(np.arange(4, dtype=np.int64)),
        "i4_labels": npy(np.arange(4, dtype=np.int32)),
        "fortran": npy(np.asfortranarray(np.zeros((3, 2), np.float32))),
        "scalar": npy(np.float32(1.5)),
        "python2": raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }\n", bytes(24)),
        "literals": raw_npy(
            "{u'descr' : '<' 'f4', # the dtype\n 'fortran_order': (False), \"shape\": (0x2, +3,),\n"
            " 'descr': r'''<f4''', }\\\n  \n",
            bytes(24),
        ),
        "nested": raw_npy(
            "{'descr': [('a', '<f4'), {1: (2j, -1.5e3, None, ..., set(), b'x')}], "
            "'descr': '\\x3cf4', 'fortran_order': False, 'shape': ((2, 3))}",
            bytes(24),
        ),
        "garbage_after": raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", bytes(24)),
        "version_1_9": raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", bytes(24), (1, 9)),
    }


def exit_block(rule: int, threshold: float, minimum: int, set_: int = 1) -> bytes:
    return BLOCK.pack(MAGIC, VERSION, set_, rule, minimum, threshold)


def weights_seed(
    arena: int,
    block: int,
    shape: tuple[int, ...],
    resident: list[tuple[int, int, int]],
    loads: list[tuple[int, int, int, int, int, int]],
    payload: bytes,
    timesteps: int = 5,
) -> bytes:
    """A model description as fuzz_weights.c reads it (flags 0: small numbers), then weights.bin."""
    out = bytearray([0])  # flags
    out += struct.pack("<H", arena) + bytes([6])  # arena_bytes, alignment 2^6
    out += bytes([block - 1])
    out += bytes([len(shape) + 1]) + bytes(shape)  # input: ndim (byte % 10 - 1) and dims
    out += bytes([1 + 1]) + bytes([4])  # output (4,)
    for t in range(block):
        out += struct.pack("<HH", 32 * t, 128 + 16 * t)  # input and output slots
    out += bytes([timesteps])
    out += bytes([2, 1]) + struct.pack("<d", 1.5)  # exit rule: margin 1.5 from step 1
    out += bytes([len(resident)]) + b"".join(struct.pack("<HHH", *s) for s in resident)
    out += bytes([0])  # no state segments
    out += bytes([len(loads)]) + b"".join(struct.pack("<HHHBBI", *load) for load in loads)
    out += bytes([3])  # positions
    out += bytes([0])  # CRC and size right
    return bytes(out) + payload


def seeds() -> dict[str, dict[str, bytes]]:
    x = npy_seeds()
    payload = np.arange(16, dtype=np.float32).tobytes()
    return {
        "npy": x,
        "input": {
            "one": bytes([2, 1, 2]) + x["f4_2x3"],
            "sequence": bytes([2, 1, 2]) + x["f4_seq"],
            "labelled": bytes([0x82, 1, 2]) + x["f4_seq"],
            "python2": bytes([2, 1, 2]) + x["python2"],
            "fortran": bytes([2, 2, 1]) + x["fortran"],
        },
        "labels": {
            "i8": struct.pack("<HB", 4, 3) + x["i8_labels"],
            "i4": struct.pack("<HB", 4, 9) + x["i4_labels"],
            "wrong_count": struct.pack("<HB", 3, 9) + x["i8_labels"],
        },
        "exit_section": {
            "unset": bytes([1]) + exit_block(0, 0.0, 1, set_=0),
            "confidence": bytes([1]) + exit_block(1, 0.9, 2) + struct.pack("<3d", 1.0, 2.0, -1.0),
            "margin": bytes([3]) + exit_block(2, 2.5, 1) + struct.pack("<2d", float("inf"), 0.0),
            "stable": bytes([5]) + exit_block(3, 3.0, 4) + struct.pack("<2d", float("nan"), 1.0),
            "damaged": bytes([0]) + exit_block(1, 0.9, 2)[:-12],
        },
        "args": {
            "single": b"--input\0x.npy\0--timesteps\0008\0--exit-confidence\0000.9",
            "batch": b"--input=x.npy\0--labels\0y.npy\0--predictions\0p.npy\0--output\0o.npy\0--no-exit",
            "rules": b"--input\0x\0--exit-stable\0003\0--min-timesteps\0002147483647\0--threads\0004",
            "margin": b"--exit-margin=1e-3\0--input\0x\0--weights\0w.bin",
            "help": b"--help",
            "stream": b"--stream\0--timesteps\00016\0--no-exit",
        },
        "weights": {
            "resident": weights_seed(256, 1, (2, 3), [(0, 192, 16)], [], payload),
            "streamed": weights_seed(
                256, 2, (2, 3), [(0, 64, 16)], [(16, 160, 8, 0, 0, 0), (24, 160, 8, 2, 0, 0)], payload
            ),
            "state_loads": weights_seed(
                256, 1, (2, 3), [], [(0, 64, 16, 0, 1, 0), (0, 80, 16, 1, 2, 0x3F800000)], payload, timesteps=1
            ),
        },
    }


def main() -> None:
    for target, files in seeds().items():
        folder = CORPUS / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / f"{name}-{zlib.crc32(data):08x}").write_bytes(data)
        print(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main()
