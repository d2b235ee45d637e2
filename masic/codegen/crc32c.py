"""CRC-32C (Castagnoli), the checksum of every piece of weights.bin, as the loader computes it (runtime/crc32c.c).

Weights run to hundreds of megabytes, so the register is not advanced byte by byte in Python. The CRC without its
pre- and post-inversion ("raw", starting from a zero register) is linear over GF(2): the raw CRC of A followed by B
is the raw CRC of A advanced through |B| zero bytes, XOR the raw CRC of B; and zero bytes in front of a message
leave a zero register at zero. So the data, padded in front with zeros to a whole number of equal chunks, has each
chunk's raw CRC computed at once with numpy (one 32-bit word of every chunk per step), and the chunks are then
combined pairwise, level by level, with "advance through n zero bytes" as four byte-indexed tables. The initial
register (all ones) is the same as XOR-ing 0xFFFFFFFF into the first four bytes of the message.
"""

from __future__ import annotations

from functools import cache

import numpy as np

POLY = 0x82F63B78  # reflected Castagnoli polynomial
CHUNK_WORDS = 64  # 32-bit words of one chunk whose raw CRC numpy computes alongside the others
BLOCK_BYTES = 1 << 24  # data beyond this is taken a block at a time, so memory stays bounded

Shift = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # advance through n zero bytes, by the register's bytes


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLY), table >> 1).astype(np.uint32)
    return table


TABLE = _byte_table()


def _advance(shift: Shift, registers: np.ndarray) -> np.ndarray:
    """Registers advanced through the zero bytes `shift` stands for."""
    return (
        shift[0][registers & 0xFF]
        ^ shift[1][(registers >> 8) & 0xFF]
        ^ shift[2][(registers >> 16) & 0xFF]
        ^ shift[3][registers >> 24]
    )


@cache
def _shift(nbytes: int) -> Shift:
    """Advance through `nbytes` zero bytes (a multiple of 4, powers of two times 4 computed by doubling)."""
    if nbytes == 4:
        # byte j of the register meets 3 - j more zero bytes after its own table step
        tables = [TABLE]
        for _ in range(3):
            tables.append((tables[-1] >> 8) ^ TABLE[tables[-1] & 0xFF])
        return (tables[3], tables[2], tables[1], tables[0])
    if nbytes % 8:
        raise ValueError(f"no zero-byte shift of {nbytes} bytes")
    half = _shift(nbytes // 2)
    return tuple(_advance(half, table) for table in half)  # type: ignore[return-value]


def _raw_of_chunks(words: np.ndarray) -> np.ndarray:
    """Raw CRCs of the rows of a (chunks, CHUNK_WORDS) array of little-endian words."""
    step = _shift(4)
    registers = np.zeros(words.shape[0], dtype=np.uint32)
    for column in np.ascontiguousarray(words.T):
        registers = _advance(step, registers ^ column)
    return registers


def _raw(data: np.ndarray) -> int:
    """Raw CRC of bytes whose length is CHUNK_WORDS * 4 times a power of two, from a zero register."""
    chunk_bytes = CHUNK_WORDS * 4
    registers = _raw_of_chunks(data.view("<u4").reshape(-1, CHUNK_WORDS).astype(np.uint32))
    while registers.size > 1:
        registers = _advance(_shift(chunk_bytes), registers[0::2]) ^ registers[1::2]
        chunk_bytes *= 2
    return int(registers[0])


def _padded_size(nbytes: int) -> int:
    """Bytes after padding in front: a power-of-two number of chunks."""
    size = CHUNK_WORDS * 4
    while size < nbytes:
        size *= 2
    return size


def crc32c(data: bytes | np.ndarray) -> int:
    """The CRC-32C of `data` (bytes, or an array's bytes in memory order): crc32c(b"123456789") == 0xE3069283."""
    message = (
        np.frombuffer(data, np.uint8)
        if isinstance(data, bytes)
        else np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    )
    if message.size < 4:  # too short to hold the initial register: advanced byte by byte
        register = 0xFFFFFFFF
        for byte in message.tolist():
            register = int(TABLE[(register ^ byte) & 0xFF]) ^ (register >> 8)
        return register ^ 0xFFFFFFFF
    # The head (at least 4 bytes, holding the initial register) is padded; whole blocks follow.
    head = message.size % BLOCK_BYTES or BLOCK_BYTES
    head += BLOCK_BYTES if head < 4 and message.size > head else 0
    first = np.zeros(_padded_size(head), dtype=np.uint8)
    first[first.size - head :] = message[:head]
    first[first.size - head : first.size - head + 4] ^= 0xFF
    register = _raw(first)
    for offset in range(head, message.size, BLOCK_BYTES):
        advanced = _advance(_shift(BLOCK_BYTES), np.array([register], dtype=np.uint32))
        register = int(advanced[0]) ^ _raw(message[offset : offset + BLOCK_BYTES])
    return register ^ 0xFFFFFFFF
