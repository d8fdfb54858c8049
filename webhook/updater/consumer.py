"""The consumer: a background loop reading the event source into batches.

:class:`Consumer` owns the source (the embedded bus, or a Kafka consumer
created by the loop and retried with backoff: Kafka may be away at start or
at any time later), the events read but not yet applied, and the commits.
``KafkaConsumer`` is not thread-safe, so commits requested from another
thread are handed to the loop. ``ingest_lock`` serialises reading the
source and applying batches.

:attr:`Consumer.caught_up` is set once the backlog the source held at start
is applied (Kafka: every assigned partition read to its end offset as first
seen; the embedded bus: what was queued). After a restart the retrain buffer
is empty until then, so an alert's retrain waits for it (see
:mod:`autoretrain.webhook.controller`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from autoretrain.exporter.background import BackgroundLoop
from autoretrain.exporter.bus import EmbeddedBus
from autoretrain.exporter.kafka_codecs import missing_codecs, undecodable

from .checkpoint import Checkpointer
from .metrics import UpdaterMetrics
from .settings import UpdaterSettings
from .sources import EmbeddedSource, EventSource, KafkaSource, SourceError
from .state import ModelState
from .status import Counters

__all__ = ["Consumer"]

log = logging.getLogger(__name__)

#: Longest wait for events in one step of the loop.
_POLL_SECONDS = 0.2
#: Values read from the source at once, and applied in one slice, at least.
_SLICE = 10_000
# A consumer holding no partition this long after it was created says so on
# /readyz: its topic is not in the broker's metadata (missing, or this client
# may not describe it); shorter waits are a topic still being created.
_UNASSIGNED_GRACE_SECONDS = 30.0


class Consumer:
    """Reads ``source`` (or builds a Kafka one) and applies batches through ``ingest``.

    Parameters
    ----------
    settings, state, checkpointer, metrics, counters
        The updater's settings and the collaborators it shares.
    ingest
        ``ingest(values, offsets) -> applied``.
    event_bus
        The embedded bus to read (None with Kafka).
    consumer_factory, kafka_check
        Build the ``KafkaConsumer`` (tests); probe the broker
        (``f() -> None | reason``).
    """

    def __init__(
        self,
        settings: UpdaterSettings,
        state: ModelState,
        checkpointer: Checkpointer,
        metrics: UpdaterMetrics,
        counters: Counters,
        ingest: Callable[[list[Any], dict[int, int] | None], int],
        event_bus: EmbeddedBus | None,
        consumer_factory: Callable[..., Any] | None = None,
        kafka_check: Callable[[], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.checkpointer = checkpointer
        self.metrics = metrics
        self.counters = counters
        self._ingest = ingest
        self._consumer_factory = consumer_factory
        self._kafka_check = kafka_check
        self.source: EventSource | None = (
            EmbeddedSource(event_bus) if event_bus is not None else None)
        #: Why no consumer exists yet (None once one does, or without Kafka).
        self.source_error: str | None = (
            "consumer not created yet" if settings.uses_kafka else None)
        self.ingest_lock = threading.Lock()
        self.lag: int | None = None
        #: Why the records read cannot be decoded (None when they can).
        self.decode_error: str | None = None
        self._pending: list[Any] = []
        self._pending_offsets: dict[int, int] = {}
        self._pending_since: float | None = None
        self._commit_request: dict[int, int] | None = None
        self._loop_ident: int | None = None  # the loop thread's id, once it ran a step
        #: Set once the backlog the source held at start is applied (module docstring).
        self.caught_up = threading.Event()
        self._backlog_read = False  # the source's backlog is read; set caught_up at a flush
        self._loop = BackgroundLoop("model-updater", self._step, on_error=self._on_error,
                                    initial_backoff=0.1, max_backoff=5.0)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop.running

    @property
    def pending(self) -> int:
        """Events read from the source and not applied yet."""
        return len(self._pending)

    def start(self) -> None:
        # With Kafka the consumer is created by the loop (_ensure_source):
        # a broker that is down at start must not fail or block start().
        self.caught_up.clear()
        self._backlog_read = False
        self._loop.start()

    def stop(self, timeout: float) -> bool:
        """Stop the loop; False when it is still running after ``timeout``."""
        return self._loop.stop(timeout)

    def finish(self) -> None:
        """After the loop stopped: apply what is queued, save, commit, close."""
        if self.source is None:
            # Kafka never answered: nothing was consumed; save what a retrain changed.
            if self.state.dirty:
                self.checkpointer.save(force=False)
            return
        try:
            with self.ingest_lock:
                self._drain(timeout=0.0)
                self._flush()
            self.checkpointer.save(force=False)
        except SourceError as exc:
            # The model (with its offsets) is saved or unchanged; only the
            # Kafka side failed, and the next start seeks to the saved offsets.
            log.warning("final poll or commit failed: %s", exc)
            if self.state.dirty:
                self.checkpointer.save(force=False, commit=False)
        if self.settings.uses_kafka:
            try:
                self.source.close()
            except SourceError as exc:
                log.warning("closing the Kafka consumer failed: %s", exc)
            self.source = None

    # -- the loop ------------------------------------------------------------------
    def _on_error(self, exc: BaseException, backoff: float) -> None:
        reason = undecodable(exc)
        if reason is not None:
            # Not Kafka being away: the same batch fails again until the
            # codec is installed, so say so loudly and on /readyz.
            if reason != self.decode_error:
                log.error("cannot decode the records of %s: %s; retrying every %.1f s",
                          self.settings.kafka_topic, reason, backoff)
            self.decode_error = reason
            self.metrics.undecodable.set(1)
        elif isinstance(exc, SourceError):
            # Expected while Kafka is away: no traceback, same counter.
            log.warning("%s; retrying in %.1f s", exc, backoff)
        else:
            log.exception("model updater loop failed; retrying in %.1f s", backoff,
                          exc_info=exc)
        with self.state.lock:
            self.counters.errors += 1
            self.counters.last_error = f"{type(exc).__name__}: {exc}"
        self.metrics.errors.inc()

    def _ensure_source(self) -> None:
        """Create the Kafka consumer if there is none (ingest lock held)."""
        s = self.settings
        if self.source is not None or s.kafka_servers is None:
            return
        try:
            self.source = KafkaSource(
                s.kafka_servers, s.kafka_topic, s.consumer_group,
                positions=self._positions, on_revoke=self._on_revoke,
                consumer_factory=self._consumer_factory,
                max_poll_records=max(500, s.batch_size),
                **(s.kafka_security.client_config() if s.kafka_security else {}),
                **s.consumer_config)
        except SourceError as exc:
            self.source_error = str(exc)
            raise
        self.source_error = None
        log.info("consuming %s from %s as group %s", s.kafka_topic, s.kafka_servers,
                 s.consumer_group)
        missing = missing_codecs()
        if missing:
            log.warning("kafka-python cannot decode %s here: records compressed so cannot "
                        "be consumed", ", ".join(missing))

    def _step(self) -> None:
        self._loop_ident = threading.get_ident()
        timeout = self.settings.batch_timeout_seconds
        with self.ingest_lock:
            self._ensure_source()
            assert self.source is not None
            wait = _POLL_SECONDS
            if self._pending_since is not None:
                left = self._pending_since + timeout - time.monotonic()
                wait = max(0.0, min(wait, left))
            if self._pending:
                wait = self.source.pace(wait, self._loop.stopping)
            self._drain(timeout=wait, once=True)
            due = self._pending_since is not None and (
                time.monotonic() - self._pending_since >= timeout)
            if len(self._pending) >= self.settings.batch_size or due:
                self._flush()
            if self._commit_request is not None:
                offsets, self._commit_request = self._commit_request, None
                self.source.commit(offsets)
            self._report_lag()
            self._check_caught_up()
        if self.checkpointer.save_due():
            self.checkpointer.save(force=False)

    def _drain(self, timeout: float, once: bool = False) -> None:
        """Move what the source has into the pending list (ingest lock held)."""
        assert self.source is not None
        limit = max(self.settings.batch_size, _SLICE)
        while True:
            values, offsets = self.source.poll(timeout, limit)
            if self.decode_error is not None:
                log.info("decoding the records of %s again", self.settings.kafka_topic)
                self.decode_error = None
                self.metrics.undecodable.set(0)
            if values or offsets:
                if self._pending_since is None:
                    self._pending_since = time.monotonic()
                self._pending.extend(values)
                self._pending_offsets.update(offsets)
            if once or (not values and not offsets):
                return
            timeout = 0.0

    def _flush(self) -> int:
        """Apply the pending values (ingest lock held); return events applied."""
        values, offsets = self._pending, self._pending_offsets
        self._pending, self._pending_offsets, self._pending_since = [], {}, None
        if not values and not offsets:
            return 0
        applied = 0
        # Apply in slices so one huge backlog does not hold the state lock long.
        step = max(self.settings.batch_size, _SLICE)
        for start in range(0, max(len(values), 1), step):
            last = start + step >= len(values)
            applied += self._ingest(values[start : start + step], offsets if last else None)
        if self._backlog_read and not self.caught_up.is_set():
            self._set_caught_up()  # what was read up to the backlog's end is applied now
        return applied

    def _on_revoke(self) -> None:
        # Called inside consumer.poll on the consumer thread (ingest lock held).
        self._flush()
        self.checkpointer.save(force=False, commit_now=True)

    def _positions(self) -> dict[int, int]:
        with self.state.lock:
            return dict(self.state.offsets)

    # -- used by the owner -----------------------------------------------------------
    def process_pending(self, timeout: float) -> int:
        """Read what the source has now and apply it; return events applied."""
        with self.ingest_lock:
            self._ensure_source()
            self._drain(timeout)
            applied = self._flush()
            self._report_lag()  # as the loop does: a synchronous caller sees the lag too
            self._check_caught_up()
            return applied

    def _check_caught_up(self) -> None:
        """Set :attr:`caught_up` once the source's backlog is read and applied
        (ingest lock held; on the loop thread: KafkaConsumer is not thread-safe).

        Read: the source says so. Applied: at once when nothing read waits to
        be applied, else at the next flush, which applies all of it (under a
        steady stream something is pending at almost every step).
        """
        assert self.source is not None
        if self.caught_up.is_set() or self._backlog_read or not self.source.read_backlog():
            return
        self._backlog_read = True
        if not self._pending:
            self._set_caught_up()

    def _set_caught_up(self) -> None:
        self.caught_up.set()
        with self.state.lock:
            applied, buffered = self.counters.applied, len(self.state.buffer)
        log.info("caught up with the source: %d event(s) applied so far, %d buffered "
                 "for retraining", applied, buffered)

    def _report_lag(self) -> None:
        assert self.source is not None
        positions = {**self.state.offsets, **self._pending_offsets}
        self.lag = self.source.lag(positions)
        self.metrics.lag.set(float("nan") if self.lag is None else self.lag)

    def commit(self, offsets: dict[int, int], now: bool) -> None:
        """Commit ``offsets`` (a saved model includes the events before them)."""
        if self.source is None:
            return
        if now or not self.running or threading.get_ident() == self._loop_ident:
            self.source.commit(offsets)
        else:
            # KafkaConsumer is not thread-safe: the consumer thread commits.
            self._commit_request = offsets

    def kafka_status(self) -> str | None:
        """None when Kafka is reachable and the consumer exists, else why not
        (always None without Kafka)."""
        if not self.settings.uses_kafka:
            return None
        if self.decode_error is not None:
            return f"Kafka consumer cannot decode the records it reads: {self.decode_error}"
        unreachable = self._kafka_check() if self._kafka_check is not None else None
        if unreachable is not None:
            return f"Kafka unreachable: {unreachable}"
        if self.source_error is not None:
            security = self.settings.kafka_security
            hint = (f"; {security.handshake_hint()}"
                    if security is not None and security.security_protocol != "PLAINTEXT"
                    else "")
            return f"Kafka consumer not connected: {self.source_error}{hint}"
        source = self.source
        if isinstance(source, KafkaSource):
            unassigned = source.unassigned_seconds()
            if unassigned is not None and unassigned >= _UNASSIGNED_GRACE_SECONDS:
                return (f"Kafka consumer holds no partition of {source.topic} after "
                        f"{unassigned:.0f} s: the topic is not in the broker's metadata "
                        "(does it exist, and may this client describe it?)")
        return None
