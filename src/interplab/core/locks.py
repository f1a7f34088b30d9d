"""One writer per directory, and the cleanup of what dead writers left behind.

``write_lock(directory, what)`` holds an exclusive lock on ``directory/.lock`` (``fcntl.flock``)
for the duration of a block, so a second process writing into the same activation store or
training run is refused at once, with the holder's pid and host in the message, instead of
racing it. The kernel releases a ``flock`` when its holder dies, however it dies, so the lock
of a killed process is taken over by the next writer without any stale-lock check; the file
itself (which only names the holder) is removed on release. Re-entering the lock in the
process that holds it is allowed (the CLI's harvest holds the store while the library's
``harvest`` takes it again).

Temp names end in ``-<pid>@<host>`` (``owner_suffix``), so ``remove_stale_temps`` can delete
the hidden ``.incomplete-*`` directories of processes that died on this machine, and never one
of a live process, nor one of a process on another machine sharing the directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from interplab.core.errors import InterplabError

__all__ = ["LOCK_FILE", "LockedError", "owner_suffix", "pid_alive", "remove_stale_temps", "write_lock"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"

_held: dict[str, list] = {}  # real path of a lock file -> [fd, depth], for this process
_guard = threading.Lock()


class LockedError(InterplabError):
    """Another process is writing into the same directory."""


def owner_suffix() -> str:
    """``<pid>@<host>``: what a temp name ends with, so a later process can tell if its owner lives."""
    return f"{os.getpid()}@{HOST}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str) -> tuple[int, str] | None:
    """(pid, host) from a name ending in ``-<pid>@<host>`` or ``-<pid>`` (this host); None if neither."""
    tail = name.rsplit("-", 1)[-1]
    pid, _, host = tail.partition("@")
    return (int(pid), host or HOST) if pid.isdigit() else None


def remove_stale_temps(root: str | Path, prefix: str = ".incomplete-") -> list[Path]:
    """Delete ``root/<prefix>*`` directories whose owner process died on this machine; return them."""
    root, removed = Path(root), []
    if not root.is_dir():
        return removed
    for path in root.glob(f"{prefix}*"):
        owner = _owner(path.name)
        if owner is None or owner[1] != HOST or owner[0] == os.getpid() or pid_alive(owner[0]):
            continue
        log.info("removing %s, left by process %d, which is no longer running", path, owner[0])
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    pid, _, rest = text.partition("@")
    host, _, since = rest.partition(" ")
    return f"process {pid} on host {host} (since {since})" if pid.isdigit() else "another process"


def _acquire(path: Path, what: str) -> int | None:
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{what} is being written by {_holder(path)}, which holds {path}. Two writers would "
                "race, so this one stops before doing any work: wait for the other to finish (or stop "
                f"it) and run this again. If no such process is running, delete {path}."
            ) from None
        except OSError as err:  # a file system without flock (some network mounts)
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                log.warning("cannot lock %s (%s); not guarding %s against a second writer", path, err, what)
                return None
            raise
        # A holder releasing the lock unlinks the file: make sure ours is still the one at `path`.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{owner_suffix()} {datetime.now(UTC).isoformat(timespec='seconds')}\n".encode())
            return fd
        os.close(fd)
    raise LockedError(f"Could not lock {path}: it keeps being replaced by other processes writing {what}.")


@contextlib.contextmanager
def write_lock(directory: str | Path, what: str) -> Iterator[Path]:
    """Hold ``directory/.lock`` (created, with ``directory``) for the block; ``LockedError`` if
    another process holds it. ``what`` names the directory in the error ("activation store X").
    A directory the lock created is removed again if it is empty when the block ends."""
    directory = Path(directory)
    made = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    key = os.path.realpath(path)
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        fd = _acquire(path, what)
        with _guard:
            entry = _held[key] = [fd, 1]
    try:
        yield path
    finally:
        with _guard:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[key]
        if last and entry[0] is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(entry[0])
        if last and made:  # a block that failed before writing anything leaves no empty directory
            with contextlib.suppress(OSError):
                directory.rmdir()
