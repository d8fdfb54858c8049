"""One background thread that repeats a step, with backoff on errors.

The monitor's checker, the standalone exporter's consumer, the updater's
consumer and the webhook's retrain worker each run "call ``step`` until
stopped; on an error log it, count it and wait a little longer each time".
:class:`BackgroundLoop` is that loop once; the owner passes the step, what
to do with an error, and the wait between steps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["BackgroundLoop"]

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Run ``step()`` on a daemon thread until :meth:`stop`.

    Parameters
    ----------
    name
        The thread's name (shown in logs and thread dumps).
    step
        Called repeatedly. It returns normally when it did its work; it may
        block (a Kafka poll) as long as it returns within a fraction of a
        second of :attr:`stopping` being set.
    interval
        Seconds to wait after a step that returned normally (0: none).
    on_error
        Called with the exception of a step that raised, before the wait;
        its job is to log and count (the loop itself logs nothing then).
        The outermost loop of a server is the one place for a broad except.
    initial_backoff, max_backoff
        After an error the loop waits ``initial_backoff`` seconds, doubling
        after each further error up to ``max_backoff``; a step that returns
        normally resets it.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        *,
        interval: float = 0.0,
        on_error: Callable[[BaseException, float], None] | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        if interval < 0 or initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError(
                f"interval must be >= 0 and 0 < initial_backoff <= max_backoff, got "
                f"{interval}, {initial_backoff}, {max_backoff}"
            )
        self.name = name
        self._step = step
        self._interval = interval
        self._on_error = on_error
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> threading.Event:
        """Set by :meth:`stop`; a long step may wait on it instead of sleeping."""
        return self._stopping

    def start(self) -> None:
        """Start the thread (no-op if it runs)."""
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the loop to stop and wait for it; False if it is still running after ``timeout``."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        if thread.is_alive():
            log.error("%s did not stop within %.1f s", self.name, timeout)
            return False
        self._thread = None
        return True

    def _run(self) -> None:
        backoff = self._initial_backoff
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except Exception as exc:  # the outermost loop: report, wait, go on
                    if self._on_error is not None:
                        self._on_error(exc, backoff)
                    else:
                        log.exception("%s failed; retrying in %.1f s", self.name, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                backoff = self._initial_backoff
                if self._interval:
                    self._stopping.wait(self._interval)
        finally:
            if not self._stopping.is_set():
                log.error("%s exited unexpectedly", self.name)
