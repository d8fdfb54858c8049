"""The standalone exporter: outcome events from Kafka to Prometheus metrics.

For platforms not written in Python: they produce the outcome events of
DESIGN.md to ``agent-outcomes`` and this process exports the same metrics
as an embedded :class:`~exporter.PerformanceMonitor`. Several instances in
one consumer group split the partitions; summing their series gives the
totals (the recording rules do so).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from .events import InvalidEvent, decode_event
from .metrics import AgentMetrics

__all__ = ["EventDeduplicator", "StandaloneExporter"]

log = logging.getLogger(__name__)


class EventDeduplicator:
    """Remembers the last ``size`` event ids: bounded memory, O(1) per event."""

    def __init__(self, size: int = 100_000) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.size = size
        self._order: deque[str] = deque()
        self._seen: set[str] = set()

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen before; otherwise remember it."""
        if event_id in self._seen:
            return True
        self._seen.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        return False


def _default_consumer(servers: str, topic: str, group_id: str) -> Any:
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic,
        bootstrap_servers=servers.split(","),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        bootstrap_timeout_ms=5000,
        request_timeout_ms=30000,
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
    ) -> None:
        self.kafka_servers = kafka_servers
        self.topic = topic
        self.group_id = group_id
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = AgentMetrics(self.registry, max_agents=max_agents)
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
        self._applied = self._events.labels("applied")
        self._duplicate = self._events.labels("duplicate")
        self._dedup = EventDeduplicator(dedup_size)
        self._faults_logged: set[str] = set()
        self._factory = consumer_factory or _default_consumer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self.last_error: str | None = "not started"
        self.partitions: list[int] = []  # assigned to this instance, as of the last poll

    def handle(self, value: bytes | None) -> str:
        """Apply one message value; returns ``applied``, ``duplicate`` or ``invalid``."""
        try:
            event = decode_event(value)
        except InvalidEvent as exc:
            self._events.labels("invalid").inc()
            self._invalid.labels(exc.fault).inc()
            if exc.fault not in self._faults_logged:  # once per kind of fault
                self._faults_logged.add(exc.fault)
                log.warning("skipping invalid event (%s): %s", exc.fault, exc)
            return "invalid"
        if self._dedup.seen(event["event_id"]):
            self._duplicate.inc()
            return "duplicate"
        if event["kind"] == "run":
            self.metrics.record_run(
                event["agent_name"],
                event["agent_type"],
                event["status"],
                event["duration_ms"] / 1000.0,
                event["tokens_used"],
                event["cost"],
            )
        else:
            self.metrics.record_accuracy(
                event["agent_name"], event["feedback_source"], event["accuracy"]
            )
        self._applied.inc()
        return "applied"

    @property
    def connected(self) -> bool:
        return self._consumer is not None and self.last_error is None

    def ready(self) -> tuple[bool, str]:
        """For ``/readyz``: consuming from Kafka, or why not."""
        if self.connected:
            return True, f"consuming {self.topic} from {self.kafka_servers}"
        return False, f"Kafka not reachable: {self.last_error}"

    def run(self) -> None:
        """Consume until :meth:`stop`; reconnects with backoff when Kafka is down."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self._consumer = self._factory(self.kafka_servers, self.topic, self.group_id)
                    log.info(
                        "consuming %s from %s as group %s",
                        self.topic,
                        self.kafka_servers,
                        self.group_id,
                    )
                batches = self._consumer.poll(timeout_ms=500, max_records=2000)
                self.partitions = sorted(tp.partition for tp in self._consumer.assignment())
                self.last_error = None
                self._connected.set(1)
                backoff = 0.5
                for records in batches.values():
                    for record in records:
                        self.handle(record.value)
            except Exception as exc:  # outermost loop: log, report, retry
                if self.last_error is None or self.last_error == "not started":
                    log.warning("Kafka consumer failed (%s: %s); retrying", type(exc).__name__, exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._connected.set(0)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:
                log.debug("consumer close failed", exc_info=True)
            self._consumer = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="autoretrain-exporter", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
