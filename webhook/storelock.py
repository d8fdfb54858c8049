"""Exclusive ownership of a model store and a ledger: OS advisory locks (``flock``).

Why ``flock``: the kernel drops the lock when the holder's file descriptor
closes, and a process's descriptors close however it ends (exit, crash,
SIGKILL, the OOM killer). A dead webhook therefore never leaves a stale lock
for an operator to delete, and a standby can take over as soon as the active
process is gone.

What it needs: a filesystem whose locks every host that mounts it honours.
A local disk, or NFSv4 (Linux emulates ``flock`` on NFS with whole-file
byte-range locks held by the server; when a *client host* dies rather than
the process, the server keeps the lock until the client's lease expires,
90 s by default). Filesystems that grant ``flock`` only locally (sshfs, some
FUSE and SMB mounts) would let two hosts "hold" it at once: do not share a
store over them. On NFS the lock follows POSIX rules, under which closing any
descriptor of the file in the holding process drops the lock; so a
:class:`FileLock` opens its file once and reads the holder's note through
that same descriptor.

Do not delete a lock file while a webhook runs: a process that then creates
a new file would lock a different inode. :meth:`FileLock.try_acquire` checks
after locking that the path still names the file it locked, and retries with
the new file if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from autoretrain.exporter.timefmt import utc_iso

__all__ = ["STORE_LOCK_NAME", "FileLock", "StoreLock", "ledger_lock_path", "store_lock_path"]

#: The lock file's name in the model store directory (the store ignores it).
STORE_LOCK_NAME = ".autoretrain-webhook.lock"
_NOTE_LIMIT = 4096


def store_lock_path(store_dir: str | os.PathLike[str]) -> Path:
    """The lock file of the model store in ``store_dir``."""
    return Path(store_dir) / STORE_LOCK_NAME


def ledger_lock_path(ledger_path: str | os.PathLike[str]) -> Path:
    """The lock file of the ledger ``ledger_path``: beside it, like SQLite's -wal and -shm."""
    path = Path(ledger_path)
    return path.with_name(path.name + ".lock")


class FileLock:
    """An exclusive ``flock`` on the file ``path`` (created when missing), never blocking.

    Two instances conflict even within one process (on a local disk: the
    lock belongs to the open file, and each instance opens its own). The
    holder writes a note (pid, host, since when) into the file, which a
    waiting instance reads for its log and ``/readyz``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """True while this instance holds the lock."""
        return self._held

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # No O_TRUNC: the holder's note must survive a waiter's open.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _names_our_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when held. Never waits.

        Raises ``OSError`` when the file cannot be created or the filesystem
        refuses locks (``ENOLCK``): a store whose ownership cannot be checked
        must not be written.
        """
        if self._held:
            return True
        for _ in range(3):  # the file may be replaced between open and lock
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self._names_our_file(fd):
                    return False
                self._reopen()  # a deleted file's waiters would wait forever
                continue
            if not self._names_our_file(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._reopen()
                continue
            self._held = True
            self._write_note(fd)
            return True
        return False

    def _write_note(self, fd: int) -> None:
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": utc_iso(time.time(), "seconds")}).encode()
        # Diagnostics only: a failed or torn note must not cost the lock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, note + b"\n", 0)

    def holder(self) -> str | None:
        """Who holds the lock, from the holder's note ("pid 12 on host h since ..."),
        or None when there is no readable note or this instance never opened the file."""
        if self._fd is None:
            # Not opened here: opening it now would create it (and on NFS, closing a
            # second descriptor of a file would drop this process's lock on it).
            return None
        try:
            raw = os.pread(self._fd, _NOTE_LIMIT, 0)
            note = json.loads(raw)
            return f"pid {int(note['pid'])} on host {str(note['host'])[:100]!r} " \
                   f"since {str(note['since'])[:40]}"
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def release(self) -> None:
        """Drop the lock (the file stays, and so does this instance's descriptor)."""
        if self._held and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._held = False

    def close(self) -> None:
        """Drop the lock and close the file."""
        self.release()
        self._reopen()


class StoreLock:
    """Several :class:`FileLock` taken all or none, always in the same order.

    The webhook locks its model store and its ledger: either alone would let
    a second instance configured with the same store and another ledger (or
    the reverse) write what the first one owns.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        if not paths:
            raise ValueError("StoreLock needs at least one path")
        self.locks = [FileLock(p) for p in paths]
        self._blocked: FileLock | None = None

    @classmethod
    def for_webhook(cls, store_dir: str | os.PathLike[str] | None,
                    ledger_path: str | os.PathLike[str]) -> StoreLock:
        """The locks of a webhook's model store (None: an updater without a store) and ledger."""
        paths = [] if store_dir is None else [store_lock_path(store_dir)]
        return cls([*paths, ledger_lock_path(ledger_path)])

    @property
    def paths(self) -> list[Path]:
        return [lock.path for lock in self.locks]

    @property
    def held(self) -> bool:
        return all(lock.held for lock in self.locks)

    def try_acquire(self) -> bool:
        """Take every lock, or none (those taken are released again); never waits."""
        for i, lock in enumerate(self.locks):
            try:
                acquired = lock.try_acquire()
            except BaseException:
                for taken in self.locks[:i]:
                    taken.release()
                raise
            if not acquired:
                for taken in self.locks[:i]:
                    taken.release()
                self._blocked = lock
                return False
        self._blocked = None
        return True

    def holder(self) -> str:
        """Which lock another process holds and who it is, for logs and ``/readyz``."""
        if self.held:
            return "held by this process"
        lock = self._blocked or self.locks[0]
        return f"{lock.path} is held by {lock.holder() or 'another process'}"

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()

    def close(self) -> None:
        for lock in reversed(self.locks):
            lock.close()
