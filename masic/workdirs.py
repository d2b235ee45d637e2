"""Temporary folders that a killed run cannot leave behind for long, and replacing a folder in one step.

Readers of an output folder (a device sync, `masic run`, a second compile) must see the previous complete artifact
or the new complete one, never a mixture and never nothing. `replacing(folder)` hands out an empty sibling to
fill, then swaps the two with one `renameat2(RENAME_EXCHANGE)` call (Linux >= 3.15, glibc >= 2.28, through
ctypes): at every instant the folder's name leads to one complete folder, and a reader that opened the folder
keeps reading that generation. The previous content, now under the sibling's name, is deleted after. Two runs
replacing one folder at once each swap in a complete folder, so the last swap's folder stays.

Where the kernel, libc or file system has no exchange, the old folder is renamed aside and the new one renamed in,
with SIGINT and SIGTERM deferred between: for the instant between the two renames the name is missing (never
half-filled), and a run that loses a race with another run's rename reports an error and keeps the other's folder.
A symlink pointing at generations would be atomic everywhere, but would turn `out/` into a link with hidden
siblings, which `scp -r`, `rsync` and `rm -r` treat unlike a folder; the exchange keeps `out/` a plain folder.

Every temporary folder is named `<prefix>p<pid>-<random>` and holds an flock on itself while its owner lives. A run
killed with SIGKILL cannot clean up, so each run first sweeps the folders of its prefix whose lock is free and
whose pid is gone (the lock speaks for owners in other pid namespaces, such as containers sharing /tmp; the pid for
the instant between creating a folder and locking it). Only the current user's folders named so are swept: the
random names of other programs and of earlier masic versions (no `p<pid>-`) are never taken for abandoned.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

from masic.interrupts import deferred

BUILD_PREFIX = "masic-build-"  # compile scratch (model.c, kernels.o) in the system's temporary folder
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_SWAP_ATTEMPTS = 100  # each failed attempt means another run created or removed the folder in between


def partial_prefix(folder: Path) -> str:
    """The name prefix of the folders built beside `folder` to replace it."""
    return f".{folder.name}.partial-"


@contextmanager
def owned_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A new empty folder `parent/<prefix>p<pid>-<random>`, locked while the block runs and deleted after it (with
    whatever its name then leads to); abandoned folders of the same prefix are swept first."""
    sweep(parent, prefix)
    with deferred():  # an interruption between creating and locking would leave an unlocked folder behind
        path = Path(tempfile.mkdtemp(prefix=f"{prefix}p{os.getpid()}-", dir=parent))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        with suppress(OSError):  # a file system without locks: the pid in the name still protects the folder
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield path
    finally:
        with deferred():  # a second Ctrl-C must not cut the cleanup short
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)


def scratch(prefix: str) -> AbstractContextManager[Path]:
    """`owned_dir` in the system's temporary folder, for files that are not part of any output."""
    return owned_dir(Path(tempfile.gettempdir()), prefix)


def sweep(parent: Path, prefix: str) -> None:
    """Deletes the folders `parent/<prefix>*` that runs killed before cleaning up left behind."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    owned = re.compile(rf"{re.escape(prefix)}p([0-9]{{1,7}})-")  # pids stay below 2^22 on Linux
    for name in names:
        if (match := owned.match(name)) and _abandoned(parent / name, int(match[1])):
            shutil.rmtree(parent / name, ignore_errors=True)


def _abandoned(path: Path, pid: int) -> bool:
    """Whether the folder's owner is gone: the user's own folder, its pid not running, its lock free."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or _running(pid):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # locked: its owner runs, in another pid namespace
    except OSError:
        pass  # no locks on this file system: the pid has decided
    finally:
        os.close(fd)
    return True


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextmanager
def replacing(folder: Path) -> Iterator[Path]:
    """Yields an empty folder beside `folder` to fill. When the block completes, the filled folder takes
    `folder`'s place in one step and the previous content is deleted; when it raises (or is interrupted), the
    filled folder is deleted and `folder` is untouched. A symlink `folder` names the folder it points to."""
    folder = Path(os.path.realpath(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with owned_dir(folder.parent, partial_prefix(folder)) as staging:
        yield staging
        _swap_in(staging, folder)


def _swap_in(new: Path, folder: Path) -> None:
    """Puts folder `new` at `folder`; what was at `folder` is left at `new`, to be deleted."""
    for _ in range(_SWAP_ATTEMPTS):
        try:
            _rename2(new, folder, _RENAME_EXCHANGE)
            return
        except _NoExchange:
            _rename_aside(new, folder)
            return
        except FileNotFoundError:  # nothing at `folder` yet (or `new` is gone, which the next call reports)
            try:
                _rename2(new, folder, _RENAME_NOREPLACE)
                return
            except FileExistsError:
                continue  # another run created `folder` in between: exchange with it
    raise OSError(errno.EBUSY, "another process keeps replacing it", str(folder))


class _NoExchange(Exception):
    """renameat2's exchange is missing from libc, the kernel or the file system."""


@functools.cache
def _libc_renameat2() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def _rename2(source: Path, target: Path, flags: int) -> None:
    """renameat2(2); raises the OSError of its errno, or _NoExchange where it or its flags are unsupported."""
    function = _libc_renameat2()
    if function is None:
        raise _NoExchange
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):  # no such system call; flags the file system does not support
        raise _NoExchange
    raise OSError(code, os.strerror(code), str(source), None, str(target))


def _rename_aside(new: Path, folder: Path) -> None:
    """_swap_in without an exchange: the previous folder is renamed aside, `new` renamed in, and the previous
    folder renamed to `new`'s name, with signals deferred so that an interruption cannot leave `folder` missing."""
    aside = new.with_name(f"{new.name}.old")  # in the sweep's prefix too, should the process be killed here
    with deferred():
        try:
            os.rename(folder, aside)
        except FileNotFoundError:
            os.rename(new, folder)
            return
        try:
            os.rename(new, folder)
        except OSError:
            os.rename(aside, folder)  # put the previous folder back (fails only if another run's took the place)
            raise
        os.rename(aside, new)
