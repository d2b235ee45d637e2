"""masic's CRC-32C in numpy (masic/codegen/crc32c.py) against the published check values and a byte-at-a-time
reference; the loader's C agrees with it (tests/runtime/test_weight_checks.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.codegen import crc32c as crc_module
from masic.codegen.crc32c import POLY, crc32c


def reference(data: bytes) -> int:
    register = 0xFFFFFFFF
    for byte in data:
        register ^= byte
        for _ in range(8):
            register = (register >> 1) ^ POLY if register & 1 else register >> 1
    return register ^ 0xFFFFFFFF


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),  # the CRC catalogue's check value
        (bytes(32), 0x8A9136AA),  # RFC 3720, B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_published_values(data: bytes, crc: int) -> None:
    assert crc32c(data) == crc


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_matches_the_bitwise_reference(data: bytes) -> None:
    assert crc32c(data) == reference(data)


@pytest.mark.parametrize("size", [1023, 1024, 1025, 1026, 1027, 1028, 2049, 5000])
def test_data_longer_than_a_block(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Around whole blocks, and with a head of fewer than 4 bytes before them."""
    monkeypatch.setattr(crc_module, "BLOCK_BYTES", 1024)
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc32c(data) == reference(data)


def test_an_array_is_checksummed_in_memory_order() -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert crc32c(array) == crc32c(array.tobytes())
    assert crc32c(array.transpose(2, 0, 1)) == crc32c(np.ascontiguousarray(array.transpose(2, 0, 1)).tobytes())
