"""A child process spoken to in lines: commands on stdin, one event per stdout line.

For the model topic tests and benchmark (``tests/servers/model_trainer.py``
and ``model_follower.py``): a reader thread queues stdout lines, stderr goes
to a log file, and :meth:`LineProcess.expect` waits for a line with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .common import _die_with_parent_hook, log_tail, stop_process

__all__ = ["LineProcess"]

REPO = Path(__file__).resolve().parents[2]


class LineProcess:
    """``python SCRIPT ARGS`` with this repository on ``PYTHONPATH``."""

    def __init__(self, script: Path, args: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, env=env,
                                     preexec_fn=_die_with_parent_hook())
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().rstrip("\n"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        """The next line that satisfies ``predicate`` (lines before it are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(
                    f"{what}: not seen within {timeout:.0f} s (exit code {self.proc.poll()}); "
                    f"lines so far: {self.seen[-10:]}\nlog:\n{log_tail(self.log_path, 30)}"
                ) from None
            self.seen.append(line)
            if line.startswith("error"):
                raise AssertionError(f"{what}: the process reported {line}")
            if predicate(line):
                return line

    def stop(self) -> int:
        if self.proc.stdin is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("quit")
        try:
            code = stop_process(self.proc, timeout=20)
        finally:
            self._log.close()
        return code
