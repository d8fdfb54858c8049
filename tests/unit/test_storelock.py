"""The store lock: flock held by one open file at a time, released on close and on process death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from servers.common import wait_until

from autoretrain.webhook.storelock import (
    STORE_LOCK_NAME,
    FileLock,
    StoreLock,
    ledger_lock_path,
    store_lock_path,
)

# A child that takes the lock, says so, and then waits to be killed.
_HOLDER = textwrap.dedent("""
    import sys, time
    from autoretrain.webhook.storelock import FileLock
    lock = FileLock(sys.argv[1])
    assert lock.try_acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_two_holders_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    first, second = FileLock(path), FileLock(path)
    try:
        assert first.try_acquire() and first.held
        assert first.try_acquire()  # re-entrant for its holder
        assert not second.try_acquire() and not second.held
        assert second.holder() is not None
        assert second.holder().startswith(f"pid {os.getpid()} on host ")  # type: ignore[union-attr]
        first.release()
        assert not first.held
        assert second.try_acquire()
        assert not first.try_acquire()
    finally:
        first.close()
        second.close()


def test_close_releases_and_the_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire()
    first.close()
    assert path.exists() and not first.held
    assert second.try_acquire()
    second.close()


def test_the_holders_note_survives_a_waiters_open(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder, waiter = FileLock(path), FileLock(path)
    assert holder.try_acquire()
    assert not waiter.try_acquire()
    assert not waiter.try_acquire()
    assert f'"pid": {os.getpid()}' in path.read_text()
    holder.close()
    waiter.close()


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], env=env,
                             stdout=subprocess.PIPE)
    lock = FileLock(path)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"held\n"
        assert not lock.try_acquire()
        assert lock.holder() is not None and f"pid {child.pid} " in lock.holder()  # type: ignore[operator]
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        # The kernel released it when the process died: no stale lock.
        assert wait_until(lock.try_acquire, timeout=30, interval=0.05)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        lock.close()


def test_a_lock_on_a_deleted_file_is_not_taken_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    old_holder, waiter = FileLock(path), FileLock(path)
    assert old_holder.try_acquire()
    assert not waiter.try_acquire()  # the waiter has the old file open
    path.unlink()
    new_holder = FileLock(path)
    assert new_holder.try_acquire()  # a new file: the deletion broke the exclusion
    old_holder.close()
    # The old file is free now, but it is no longer the lock: the waiter
    # switches to the file at the path, which is held.
    assert not waiter.try_acquire()
    new_holder.close()
    assert waiter.try_acquire()
    waiter.close()


def test_store_lock_takes_all_or_none(tmp_path: Path) -> None:
    store, ledger = tmp_path / "models", tmp_path / "db" / "ledger.sqlite3"
    other = FileLock(ledger_lock_path(ledger))
    assert other.try_acquire()
    lock = StoreLock.for_webhook(store, ledger)
    assert lock.paths == [store / STORE_LOCK_NAME, tmp_path / "db" / "ledger.sqlite3.lock"]
    assert not lock.try_acquire() and not lock.held
    # The store's lock was given back when the ledger's was refused.
    probe = FileLock(store_lock_path(store))
    assert probe.try_acquire()
    probe.release()
    assert lock.holder().startswith(f"{ledger_lock_path(ledger)} is held by pid {os.getpid()}")
    other.close()
    assert lock.try_acquire() and lock.held
    assert lock.holder() == "held by this process"
    assert not probe.try_acquire()
    lock.close()
    assert probe.try_acquire()
    probe.close()


def test_store_lock_without_a_store_locks_the_ledger(tmp_path: Path) -> None:
    lock = StoreLock.for_webhook(None, tmp_path / "l.sqlite3")
    assert lock.paths == [tmp_path / "l.sqlite3.lock"]
    with pytest.raises(ValueError, match="at least one path"):
        StoreLock([])
    lock.close()


def test_a_lock_file_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    # A regular file where the store directory should be: refused for root too
    # (a permission test would not be, and CI runs as root).
    (tmp_path / "store").write_text("not a directory")
    with pytest.raises(OSError):
        FileLock(tmp_path / "store" / "x.lock").try_acquire()
