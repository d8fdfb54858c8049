"""One active webhook per model store and ledger; any further instance waits as a standby.

:class:`Failover` owns the :class:`~webhook.storelock.StoreLock`. ``start()``
tries it once: when free, it calls ``activate`` (open the ledger, start the
updater and the retrain worker) and the instance is active. When another
process holds it, the instance is a standby (or, with mode ``exit``, refuses
to start): a :class:`~exporter.background.BackgroundLoop` tries the lock
again every ``poll_interval`` seconds, never blocking, and activates as soon
as the operating system has released it, that is when the active process has
exited, however it exited. The role is the gauge ``autoretrain_webhook_role{role}``.

Nothing that writes the store or the ledger runs before ``activate``; the
owner stops those writers before :meth:`Failover.close` releases the lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

from autoretrain.exporter.background import BackgroundLoop

from .storelock import StoreLock

__all__ = ["MODES", "Failover", "Role", "StoreLocked"]

log = logging.getLogger(__name__)

#: What an instance does when another one holds the lock: wait as a standby, or exit.
MODES = ("wait", "exit")


class Role(StrEnum):
    """What this instance does: active (holds the lock) or standby (waits for it)."""

    ACTIVE = "active"
    STANDBY = "standby"


class StoreLocked(RuntimeError):
    """Another process holds the store lock and the mode is ``exit``."""


class Failover:
    """Holds the store lock and runs ``activate`` once it does; see the module docstring.

    Parameters
    ----------
    lock
        The locks to hold (the model store's and the ledger's).
    activate
        Starts the writers; called at most once, on the thread that took
        the lock. If it raises, the lock is released again: at ``start()``
        the error propagates, in the standby loop it is logged, counted and
        the loop tries again after a backoff.
    registry
        Receives ``autoretrain_webhook_role`` and ``autoretrain_webhook_takeover_errors_total``.
    mode
        ``wait`` (a standby) or ``exit`` (``start()`` raises :class:`StoreLocked`).
    poll_interval
        Seconds between two tries of a standby.
    """

    def __init__(
        self,
        lock: StoreLock,
        activate: Callable[[], None],
        registry: CollectorRegistry,
        *,
        mode: str = "wait",
        poll_interval: float = 0.5,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self.lock = lock
        self.mode = mode
        self.poll_interval = float(poll_interval)
        self._activate = activate
        self._active = threading.Event()
        self._loop: BackgroundLoop | None = None
        self.last_error: str | None = None
        self.role = Gauge(
            "autoretrain_webhook_role",
            "1 for this instance's role: active (holds the model store and ledger lock, "
            "consumes and retrains) or standby (waits for the lock).",
            ["role"], registry=registry)
        self.errors = Counter(
            "autoretrain_webhook_takeover_errors",
            "Failed attempts of a standby to take the lock or to start as the active one.",
            registry=registry)
        for role in Role:
            self.role.labels(role.value).set(0)

    @property
    def active(self) -> bool:
        """True once this instance holds the lock and ``activate`` returned."""
        return self._active.is_set()

    @property
    def waiting(self) -> bool:
        """True while this instance is a standby polling for the lock."""
        return self._loop is not None and self._loop.running

    def _set_role(self, role: Role) -> None:
        for r in Role:
            self.role.labels(r.value).set(1 if r is role else 0)

    def _take(self) -> bool:
        """Try the lock; activate when it is ours. True when now active."""
        if not self.lock.try_acquire():
            return False
        try:
            self._activate()
        except BaseException:
            self.lock.release()
            raise
        self._active.set()
        self._set_role(Role.ACTIVE)
        return True

    def start(self) -> None:
        """Become active now, or a standby (mode ``wait``), or raise :class:`StoreLocked`."""
        if self.active or self.waiting:
            return
        if self._take():
            log.info("active: holding %s", ", ".join(map(str, self.lock.paths)))
            return
        holder = self.lock.holder()
        if self.mode == "exit":
            raise StoreLocked(f"another webhook is active on this model store and ledger "
                              f"({holder}); standby is 'exit', so this one does not start")
        log.warning("standby: %s; serving /healthz, /readyz (503) and /metrics, and taking "
                    "over when that process exits", holder)
        self._set_role(Role.STANDBY)
        self._loop = BackgroundLoop("webhook-standby", self._step, interval=self.poll_interval,
                                    on_error=self._on_error,
                                    initial_backoff=self.poll_interval,
                                    max_backoff=max(30.0, self.poll_interval))
        self._loop.start()

    def _step(self) -> None:
        assert self._loop is not None
        if self._loop.stopping.is_set() or not self._take():
            return
        self.last_error = None
        log.warning("took over: now active on %s", ", ".join(map(str, self.lock.paths)))
        # The loop's work is done; it ends after this step.
        self._loop.stopping.set()

    def _on_error(self, exc: BaseException, backoff: float) -> None:
        self.errors.inc()
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("standby: taking over failed (retrying in %.1f s): %s", backoff,
                  self.last_error, exc_info=exc)

    def status(self) -> str:
        """Why this instance is not active, for ``/readyz``."""
        if self.active:
            return "active"
        text = self.lock.holder()
        if self.last_error is not None:
            text += f"; the last takeover failed: {self.last_error}"
        return text

    def stop_waiting(self, timeout: float = 30.0) -> bool:
        """Stop the standby loop (an activation in progress completes first)."""
        return self._loop is None or self._loop.stop(timeout)

    def close(self, release: bool = True) -> None:
        """Stop waiting and give the lock up. Call it after the writers stopped;
        ``release=False`` keeps the lock until the process exits (a writer that
        did not stop must not share the store with a successor)."""
        self.stop_waiting()
        self._active.clear()
        for role in Role:
            self.role.labels(role.value).set(0)
        if release:
            self.lock.close()
