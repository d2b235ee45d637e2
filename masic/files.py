"""Reading a text file a user named: a regular file only, of bounded size, UTF-8.

`Path.read_text` blocks forever on a FIFO, reads a device or a huge file whole, and raises UnicodeDecodeError (a
traceback, not an OSError) on other encodings; this reader refuses each in one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from masic.errors import MasicError


class InputFileError(MasicError, ValueError):
    """A named file that cannot be read as text: missing, not a regular file, too large, not UTF-8."""


def read_text(path: Path, limit: int | None = None) -> str:
    """The UTF-8 text of the regular file `path`, of at most `limit` bytes; raises InputFileError saying why not."""
    try:
        # O_NONBLOCK: opening a FIFO for reading returns at once (and is refused below) instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise InputFileError(f"cannot read {path}: {err.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
            raise InputFileError(f"cannot read {path}: it is {kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read() if limit is None else file.read(limit + 1)
    except OSError as err:
        raise InputFileError(f"cannot read {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    if limit is not None and len(data) > limit:
        raise InputFileError(f"cannot read {path}: it is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputFileError(
            f"cannot read {path}: it is not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x})"
        ) from None
