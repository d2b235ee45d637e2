"""A process that keeps reading an artifact folder while compiles replace it, as a device sync or `masic run` would.

    python -m tests.e2e.snapshot_reader OUT REFERENCES.json      (stops when its stdin closes; prints a JSON summary)

REFERENCES maps each generation's name to the SHA-256 of each of its files. Each snapshot opens OUT once and reads
every file through that open folder. If OUT named the same folder before and after the reads, the snapshot is of
one folder at rest and must equal one generation exactly: anything else (a missing, extra, half-written or foreign
file) is a failure. If OUT named another folder by the end, a replacement happened while reading: the snapshot is
counted as superseded and proves nothing. OUT missing at any moment is a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

PAUSE = 0.002  # seconds between snapshots: dense enough to catch a window, light on a shared machine


def _digest(name: str, folder_fd: int) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=folder_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def _digests(folder_fd: int, prefix: str = "") -> dict[str, str | None]:
    """SHA-256 of every file under the open folder (an artifact has lib/ and include/), by its relative path."""
    files: dict[str, str | None] = {}
    for name in os.listdir(folder_fd):
        try:
            is_folder = stat.S_ISDIR(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            files[prefix + name] = None
            continue
        if not is_folder:
            files[prefix + name] = _digest(name, folder_fd)
            continue
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder_fd)
        try:
            files |= _digests(sub, f"{prefix}{name}/")
        finally:
            os.close(sub)
    return files


def snapshot(out: Path, references: dict[str, dict[str, str]]) -> str:
    """The generation OUT holds, "superseded", or a failure starting with "FAIL"."""
    try:
        before = os.stat(out)
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return f"FAIL: {out} is missing"
    try:
        if os.fstat(fd).st_ino != before.st_ino:
            return "superseded"
        files = _digests(fd)
        try:
            after = os.stat(out)
        except FileNotFoundError:
            return f"FAIL: {out} went missing"
        if after.st_ino != before.st_ino:
            return "superseded"
        for generation, reference in references.items():
            if files == reference:
                return generation
        return f"FAIL: a folder at rest that is no generation: {sorted(files)}"
    finally:
        os.close(fd)


def main(out: Path, references: dict[str, dict[str, str]]) -> dict[str, object]:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    counts: dict[str, int] = {}
    failures: list[str] = []
    while not stop.is_set():
        seen = snapshot(out, references)
        if seen.startswith("FAIL"):
            failures.append(seen)
        else:
            counts[seen] = counts.get(seen, 0) + 1
        time.sleep(PAUSE)
    return {"counts": counts, "failures": failures[:20], "failed": len(failures)}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))))
