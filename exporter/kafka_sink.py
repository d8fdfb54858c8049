"""Publishing outcome events to Kafka without ever blocking the orchestrator.

``publish`` only appends to a bounded in-memory queue; a background thread
owns the kafka-python producer, sends in batches (key: the agent's name),
and puts back what was not acknowledged. While the broker is down, events
wait in the queue; what overflows it is counted as dropped. Delivery is
at-least-once: a batch whose acknowledgement timed out is sent again, and
consumers de-duplicate by ``event_id``. After a failed batch the producer is
discarded and a new one built: a kafka-python producer whose broker was
killed mid-request can stay wedged after the broker returns (every flush
times out), so it is never trusted again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .events import OutcomeEvent, encode_event
from .kafka_security import KafkaSecurity

__all__ = ["BrokerProbe", "KafkaSink"]

log = logging.getLogger(__name__)

_BATCH = 500


class BrokerProbe:
    """Does a Kafka bootstrap server accept connections? A cached TCP connect.

    Only TCP: it works the same on SSL and SASL listeners and needs no
    credentials; a failed handshake shows in the client, not here.

    kafka-python's consumer keeps polling quietly (empty results) while the
    broker is down, so "the last poll did not raise" says nothing about
    reachability; readiness checks ask this probe instead. The answer is
    cached for ``interval_seconds`` so that frequent ``/readyz`` scrapes
    cost one connect per interval; a caller arriving while another thread
    probes gets the previous answer instead of waiting.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]`` or a list of ``host:port``.
    interval_seconds
        How long an answer is reused.
    timeout_seconds
        Connect timeout per server.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        interval_seconds: float = 1.0,
        timeout_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        servers = (
            bootstrap_servers.split(",")
            if isinstance(bootstrap_servers, str)
            else list(bootstrap_servers)
        )
        self.addresses = [_address(s.strip()) for s in servers if s.strip()]
        if not self.addresses:
            raise ValueError(f"bootstrap_servers names no server: {bootstrap_servers!r}")
        self.interval_seconds = interval_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._error: str | None = "not checked yet"

    def check(self) -> str | None:
        """None when some bootstrap server accepts a TCP connection, else why not."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self.interval_seconds:
            return self._error
        if not self._lock.acquire(blocking=False):
            return self._error  # another thread is probing: its answer comes soon
        try:
            self._error = self._connect()
            self._checked_at = self._clock()
            return self._error
        finally:
            self._lock.release()

    def _connect(self) -> str | None:
        errors = []
        for host, port in self.addresses:
            try:
                socket.create_connection((host, port), timeout=self.timeout_seconds).close()
                return None
            except OSError as exc:
                errors.append(f"{host}:{port}: {exc.strerror or type(exc).__name__}")
        return "; ".join(errors)


def _address(server: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or a bare host on 9092) as a connect address."""
    host, sep, port = server.rpartition(":")
    if not sep or "]" in port:  # no port given
        host, port = server, "9092"
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ValueError(f"bad Kafka server address {server!r}: port must be a number") from None


def _default_producer(bootstrap_servers: str, **config: Any) -> Any:
    from kafka import KafkaProducer  # imported here: the embedded default needs no Kafka

    return KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), **config)


class KafkaSink:
    """An :class:`~exporter.bus.EventSink` that produces to a Kafka topic.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]``.
    topic
        Destination topic (``agent-outcomes``).
    max_pending
        Events held while Kafka is slow or down; beyond it they are dropped.
    producer_config
        Extra keyword arguments for ``kafka.KafkaProducer``.
    kafka_security
        How the producer authenticates and encrypts
        (:class:`~.kafka_security.KafkaSecurity`; default PLAINTEXT).
    producer_factory
        ``f(bootstrap_servers, **config) -> producer``; tests inject a fake.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "agent-outcomes",
        max_pending: int = 100_000,
        producer_config: dict[str, Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
        retry_backoff_seconds: float = 1.0,
        kafka_security: KafkaSecurity | None = None,
    ) -> None:
        if not bootstrap_servers or not isinstance(bootstrap_servers, str):
            raise ValueError(
                f"bootstrap_servers must be 'host:port[,...]', got {bootstrap_servers!r}"
            )
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.max_pending = max_pending
        self.retry_backoff_seconds = retry_backoff_seconds
        #: How the producer connects (None: PLAINTEXT).
        self.kafka_security = kafka_security
        self._config: dict[str, Any] = {
            "acks": "all",
            "linger_ms": 5,
            # Bounded waits: the sender thread must notice a dead broker and
            # keep the events rather than hang in the client.
            "max_block_ms": 5000,
            "request_timeout_ms": 5000,
            "delivery_timeout_ms": 15000,
            "bootstrap_timeout_ms": 5000,
            # Reconnect within a second of a broker restart (default backoff: up to 30 s).
            "reconnect_backoff_max_ms": 1000,
            **(kafka_security.client_config() if kafka_security is not None else {}),
            **(producer_config or {}),
        }
        self._factory = producer_factory or _default_producer
        self._pending: deque[OutcomeEvent] = deque()
        self._wakeup = threading.Event()
        self._closing = threading.Event()
        self._drop_lock = threading.Lock()
        self._published = 0
        self._delivered = 0
        self._dropped = 0
        self._send_errors = 0
        self._producer: Any = None
        self.connected = False
        self.last_error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name="autoretrain-kafka-sink", daemon=True
        )
        self._thread.start()

    def publish(self, event: OutcomeEvent) -> bool:
        if len(self._pending) >= self.max_pending or self._closing.is_set():
            with self._drop_lock:
                self._dropped += 1
            return False
        self._pending.append(event)
        self._published += 1
        if not self._wakeup.is_set():
            self._wakeup.set()
        return True

    def stats(self) -> dict[str, int]:
        return {
            "published": self._published,
            "delivered": self._delivered,
            "dropped": self._dropped,
            "pending": len(self._pending),
            "send_errors": self._send_errors,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within ``timeout`` seconds, then close the producer."""
        self._closing.set()
        self._wakeup.set()
        self._thread.join(timeout)
        left = len(self._pending)
        if left:
            log.warning("Kafka sink closed with %d events not delivered", left)
        self._discard_producer(timeout=1)

    def _discard_producer(self, timeout: float = 0) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout)
        except Exception:  # closing a broken client must not fail the sender or shutdown
            log.debug("producer close failed", exc_info=True)

    # -- sender thread -------------------------------------------------

    def _failed(self, message: str) -> None:
        self._send_errors += 1
        if self.connected or self.last_error != message:
            log.warning("Kafka unreachable (%s); events wait in the queue", message)
        self.connected = False
        self.last_error = message

    def _send_batch(self, batch: list[OutcomeEvent]) -> list[OutcomeEvent]:
        """Send and wait for acks; return the events that were not acknowledged."""
        futures = []
        for i, event in enumerate(batch):
            try:
                futures.append(
                    self._producer.send(
                        self.topic, key=event["agent_name"].encode(), value=encode_event(event)
                    )
                )
            except Exception as exc:  # KafkaTimeoutError on metadata, or a closed client
                self._failed(f"{type(exc).__name__}: {exc}")
                # Those already handed to the client may still be delivered:
                # resending them is safe, consumers de-duplicate by event_id.
                sent = [e for e, f in zip(batch, futures, strict=False) if not f.succeeded()]
                return sent + batch[i:]
        try:
            self._producer.flush(timeout=self._config["delivery_timeout_ms"] / 1000 + 5)
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
        unacked = [
            e for e, f in zip(batch, futures, strict=True) if not (f.is_done and f.succeeded())
        ]
        if unacked and all(f.is_done for f in futures):
            failed = next(f for f in futures if f.is_done and not f.succeeded())
            self._failed(f"delivery failed: {failed.exception!r}")
        return unacked

    def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing.is_set():
                    return
                self._wakeup.wait(0.5)
                self._wakeup.clear()
                continue
            try:
                if self._producer is None:
                    self._producer = self._factory(self.bootstrap_servers, **self._config)
                n = min(_BATCH, len(self._pending))
                batch = [self._pending.popleft() for _ in range(n)]
                unacked = self._send_batch(batch)
                self._delivered += len(batch) - len(unacked)
                if unacked:
                    self._pending.extendleft(reversed(unacked))
                    self._discard_producer()
                else:
                    if not self.connected:
                        log.info("Kafka reachable at %s", self.bootstrap_servers)
                    self.connected = True
                    self.last_error = None
                    continue
            except Exception as exc:  # the outermost loop: log, count, keep running
                self._failed(f"{type(exc).__name__}: {exc}")
                log.debug("Kafka sink error", exc_info=True)
                self._discard_producer()
            if self._closing.wait(self.retry_backoff_seconds):
                # Closing while Kafka is down: one last try happened above.
                return
