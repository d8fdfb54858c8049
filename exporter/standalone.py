"""The standalone exporter: outcome events from Kafka to Prometheus metrics.

For platforms not written in Python: they produce the outcome events of
docs/DESIGN.md to ``agent-outcomes`` and this process exports the same metrics
as an embedded :class:`~exporter.PerformanceMonitor`. Several instances in
one consumer group split the partitions; summing their series gives the
totals (the recording rules do so).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from .background import BackgroundLoop
from .build_info import register_build_info
from .events import MAX_EVENT_SKEW_SECONDS
from .ingest import RecentEventIds, decode_batch
from .kafka_codecs import missing_codecs, undecodable
from .kafka_security import KafkaSecurity
from .kafka_sink import BrokerProbe
from .metrics import DURATION_BUCKETS_SECONDS, AgentMetrics

__all__ = ["StandaloneExporter"]

log = logging.getLogger(__name__)


def _default_consumer(servers: str, topic: str, group_id: str, **security: Any) -> Any:
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic,
        bootstrap_servers=servers.split(","),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        bootstrap_timeout_ms=5000,
        # Recover within seconds of a broker restart: kafka-python backs
        # reconnects off up to 30 s, and a request lost in the restart waits
        # out its timeout before it is retried.
        request_timeout_ms=10000,
        reconnect_backoff_max_ms=1000,
        **security,
    )



class StandaloneExporter:
    """Consume outcome events and export them as metrics.

    Parameters
    ----------
    kafka_servers, topic, group_id
        Where to consume from.
    registry
        Registry of the exported metrics (a new one by default).
    max_agents
        Distinct ``agent`` label values before new ones collapse into "other".
    consumer_factory
        ``f(servers, topic, group_id) -> consumer`` with kafka-python's
        ``poll``/``close``; tests inject a fake.
    dedup_size
        Event ids held for de-duplication: at most this many, at least the
        newest half of them (:class:`~exporter.ingest.RecentEventIds`).
    max_event_skew_seconds
        Events timestamped more than this after ``clock()`` are invalid
        (``field:timestamp``), as in the updater (one setting, one default).
    clock
        Unix seconds (tests pass a fake one).
    kafka_security
        How the default consumer authenticates and encrypts (default PLAINTEXT).
    broker_check
        ``f() -> None | reason``: is the broker reachable? kafka-python polls
        quietly return nothing while the broker is down, so readiness needs
        this separate check; default a :class:`~.kafka_sink.BrokerProbe`.
    join_stall_seconds
        A consumer whose group membership is not stable this long rejoins
        (unsubscribe, subscribe) and says so on ``/readyz``. kafka-python
        3.0.12 can drop a rejoin for good: when a poll's timeout ends while
        the JoinGroup is in flight and this member, as leader, then assigns,
        nobody completes the join (no partitions, nothing consumed), as seen
        when the consumer starts before its topic's metadata is known.
    """

    def __init__(
        self,
        kafka_servers: str,
        topic: str = "agent-outcomes",
        group_id: str = "autoretrain-exporter",
        registry: CollectorRegistry | None = None,
        max_agents: int = 500,
        consumer_factory: Callable[[str, str, str], Any] | None = None,
        dedup_size: int = 100_000,
        broker_check: Callable[[], str | None] | None = None,
        max_event_skew_seconds: float = MAX_EVENT_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
        kafka_security: KafkaSecurity | None = None,
        duration_buckets: Sequence[float] = DURATION_BUCKETS_SECONDS,
        join_stall_seconds: float = 60.0,
    ) -> None:
        if (isinstance(max_event_skew_seconds, bool)
                or not isinstance(max_event_skew_seconds, int | float)
                or not 0 <= max_event_skew_seconds < math.inf):
            raise ValueError("max_event_skew_seconds must be a finite number >= 0, got "
                             f"{max_event_skew_seconds!r}")
        self.max_event_skew_seconds = float(max_event_skew_seconds)
        self.clock = clock
        self.kafka_servers = kafka_servers
        self.topic = topic
        self.group_id = group_id
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = AgentMetrics(
            self.registry, max_agents=max_agents, duration_buckets=duration_buckets
        )
        self._events = Counter(
            "autoretrain_exporter_events",
            "Outcome events consumed, by result (applied, duplicate, invalid).",
            ["result"],
            registry=self.registry,
        )
        self._invalid = Counter(
            "autoretrain_exporter_invalid_events",
            "Invalid outcome events skipped, by fault.",
            ["fault"],
            registry=self.registry,
        )
        self._connected = Gauge(
            "autoretrain_exporter_kafka_connected",
            "1 while the consumer reaches Kafka.",
            registry=self.registry,
        )
        self._undecodable = Gauge(
            "autoretrain_exporter_consumer_undecodable",
            "1 while the consumer cannot decode the records it reads (a compression "
            "codec is missing); it does not advance until it can.",
            registry=self.registry,
        )
        register_build_info(self.registry)
        self._applied = self._events.labels("applied")
        self._duplicate = self._events.labels("duplicate")
        self._invalid_total = self._events.labels("invalid")
        self._recent = RecentEventIds(dedup_size)
        self._faults_logged: set[str] = set()
        self.kafka_security = kafka_security or KafkaSecurity()
        security = self.kafka_security.client_config()
        self._factory = consumer_factory or (
            lambda servers, topic, group: _default_consumer(servers, topic, group, **security))
        self._broker_check = broker_check or BrokerProbe(kafka_servers).check
        self._loop = BackgroundLoop(
            "autoretrain-exporter",
            self._poll_once,
            on_error=self._poll_failed,
            initial_backoff=0.5,
            max_backoff=10.0,
        )
        self._consumer: Any = None
        self.last_error: str | None = "not started"
        #: Why the records read cannot be decoded (None when they can).
        self.decode_error: str | None = None
        self.partitions: list[int] = []  # assigned to this instance, as of the last poll
        self.join_stall_seconds = join_stall_seconds
        self._unstable_since: float | None = None  # monotonic, while not a stable member
        #: Why the consumer is not a stable group member (None while it is).
        self.membership_error: str | None = None

    def handle(self, value: bytes | None) -> str:
        """Apply one message value; returns ``applied``, ``duplicate`` or ``invalid``."""
        counts = self.handle_batch([value])
        return next(result for result, n in counts.items() if n)

    def handle_batch(self, values: list[bytes | None]) -> dict[str, int]:
        """Apply message values in order; returns how many were applied, duplicate, invalid.

        Decoding, validation and de-duplication are
        :func:`~exporter.ingest.decode_batch`'s; the metrics take the
        batch's events under one lock hold, and the counters move once per
        batch, not per event.
        """
        batch = decode_batch(values, self._recent, now=self.clock(),
                             max_skew_seconds=self.max_event_skew_seconds)
        self.metrics.record_events(batch.events)
        for exc in batch.invalid:
            self._invalid.labels(exc.fault).inc()
            if exc.fault not in self._faults_logged:  # once per kind of fault
                self._faults_logged.add(exc.fault)
                log.warning("skipping invalid event (%s): %s", exc.fault, exc)
        applied, invalid = len(batch.events), len(batch.invalid)
        self._applied.inc(applied)
        self._duplicate.inc(batch.duplicates)
        self._invalid_total.inc(invalid)
        return {"applied": applied, "duplicate": batch.duplicates, "invalid": invalid}

    @property
    def connected(self) -> bool:
        return self._consumer is not None and self.last_error is None

    def ready(self) -> tuple[bool, str]:
        """For ``/readyz``: consuming from Kafka, or why not."""
        if self.decode_error is not None:
            return False, f"cannot decode the records of {self.topic}: {self.decode_error}"
        if self.membership_error is not None:
            return False, self.membership_error
        if self.connected:
            # The consumer exists and its last poll did not raise; polls also
            # "succeed" while the broker is down, hence the separate check.
            unreachable = self._broker_check()
            if unreachable is None:
                return True, f"consuming {self.topic} from {self.kafka_servers}"
            return False, f"Kafka not reachable: {unreachable}"
        if self.kafka_security.security_protocol != "PLAINTEXT" and self._broker_check() is None:
            return False, (f"Kafka not reachable: {self.last_error}; "
                           f"{self.kafka_security.handshake_hint()}")
        return False, f"Kafka not reachable: {self.last_error}"

    def _poll_once(self) -> None:
        """One step of the consumer loop: connect if needed, poll, apply."""
        if self._consumer is None:
            self._consumer = self._factory(self.kafka_servers, self.topic, self.group_id)
            log.info("consuming %s from %s as group %s over %s", self.topic, self.kafka_servers,
                     self.group_id, self.kafka_security.describe())
        batches = self._consumer.poll(timeout_ms=500, max_records=2000)
        self.partitions = sorted(tp.partition for tp in self._consumer.assignment())
        self._check_membership()
        self.last_error = None
        if self.decode_error is not None:
            log.info("decoding the records of %s again", self.topic)
            self.decode_error = None
            self._undecodable.set(0)
        self._connected.set(1 if self._broker_check() is None else 0)
        for records in batches.values():
            self.handle_batch([record.value for record in records])

    def _check_membership(self) -> None:
        """Rejoin when the group membership has not been stable for
        ``join_stall_seconds`` (see the class docstring); a stable member with
        no partition (more members than partitions) is fine."""
        from kafka.structs import MemberState

        group_metadata = getattr(self._consumer, "group_metadata", None)
        state = group_metadata().state if group_metadata is not None else None
        now = time.monotonic()
        if state is None or state == MemberState.STABLE:
            if self.membership_error is not None:
                log.info("consumer group %s joined again", self.group_id)
            self._unstable_since, self.membership_error = None, None
            return
        if self._unstable_since is None:
            self._unstable_since = now
            return
        waited = now - self._unstable_since
        if waited < self.join_stall_seconds:
            return
        self.membership_error = (f"consumer not a stable member of group {self.group_id} "
                                 f"after {waited:.0f} s (state {state}); rejoining")
        log.warning("%s", self.membership_error)
        # Leaving resets the member's generation, so the next poll joins anew
        # instead of waiting on the dropped join.
        self._consumer.unsubscribe()
        self._consumer.subscribe([self.topic])
        self._unstable_since = now

    def _poll_failed(self, exc: BaseException, retry_in: float) -> None:
        reason = undecodable(exc)
        if reason is not None:
            # Not a connection problem: retrying reads the same batch again.
            if reason != self.decode_error:
                log.error("cannot decode the records of %s: %s; retrying every %.1f s",
                          self.topic, reason, retry_in)
            self.decode_error = reason
            self._undecodable.set(1)
        if self.last_error is None or self.last_error == "not started":
            log.warning(
                "Kafka consumer failed (%s: %s); retrying in %.1f s",
                type(exc).__name__,
                exc,
                retry_in,
            )
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._connected.set(0)

    def start(self) -> None:
        """Consume on a background thread until :meth:`stop`; reconnects with backoff."""
        missing = missing_codecs()
        if missing:
            log.warning("kafka-python cannot decode %s here: records compressed so cannot "
                        "be consumed", ", ".join(missing))
        self._loop.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming and close the consumer."""
        if self._loop.stop(timeout) and self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # closing a broken client must not fail shutdown
                log.debug("consumer close failed", exc_info=True)
            self._consumer = None
