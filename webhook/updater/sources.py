"""Where the updater's events come from: the embedded bus or Kafka.

A source hands out raw events (dicts from the bus, message bytes from
Kafka) together with the position after them. The updater decides when the
events are applied and when a position is committed: for Kafka only after
the model state that includes those events has been saved.

Kafka client errors leave :class:`KafkaSource` as :class:`SourceError`, so
the updater's loop can tell "the broker is away" (retry with backoff, report
not ready) from a bug (log the traceback).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from autoretrain.exporter.bus import EmbeddedBus

__all__ = ["EmbeddedSource", "EventSource", "KafkaSource", "Poll", "SourceError"]

log = logging.getLogger(__name__)

#: Raw values, and per partition the offset after the last one (Kafka only).
Poll = tuple[list[Any], dict[int, int]]


class SourceError(ConnectionError):
    """The source could not be read or committed to (e.g. Kafka is unreachable)."""


class EventSource(Protocol):
    """What the updater's consumer loop reads from."""

    def poll(self, timeout: float, max_records: int) -> Poll:
        """Wait up to ``timeout`` seconds for events; return what is there."""
        ...

    def commit(self, offsets: dict[int, int]) -> None:
        """Record that everything before ``offsets`` is safely applied and saved."""
        ...

    def lag(self, positions: dict[int, int]) -> int | None:
        """Events behind the head of the stream, when known."""
        ...

    def pace(self, wait: float, stopping: threading.Event) -> float:
        """Called while a partial batch waits to fill: wait here as this source
        needs (up to ``wait`` seconds, less once ``stopping`` is set) and
        return the timeout to give the next :meth:`poll`."""
        ...

    def read_backlog(self) -> bool:
        """True once everything the source held when first asked has been read
        (polled); the consumer still has to apply it."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


class EmbeddedSource:
    """Reads the in-process :class:`~exporter.bus.EmbeddedBus`."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self._drained = 0
        self._backlog_end: int | None = None  # _drained once what was queued is read

    def poll(self, timeout: float, max_records: int) -> Poll:
        if not len(self.bus) and (timeout <= 0 or not self.bus.wait(timeout)):
            return [], {}
        values = self.bus.drain(max_records)
        self._drained += len(values)
        return values, {}

    def read_backlog(self) -> bool:
        # What the bus held when first asked; events published later do not
        # count, so a monitor publishing without pause cannot keep this False.
        if self._backlog_end is None:
            self._backlog_end = self._drained + len(self.bus)
        return self._drained >= self._backlog_end

    def commit(self, offsets: dict[int, int]) -> None:  # an in-process queue has no positions
        return None

    def lag(self, positions: dict[int, int]) -> int | None:
        return len(self.bus)

    def pace(self, wait: float, stopping: threading.Event) -> float:
        # The bus's wakeup stays set while events are queued, so a wait in
        # poll would return at once; sleep in small steps until the batch fills.
        if len(self.bus) == 0:
            stopping.wait(min(wait, 0.02))
        return 0.0

    def close(self) -> None:
        return None


class KafkaSource:
    """A ``KafkaConsumer`` assigned every partition of the topic, with manual
    commits and seeks to the model's offsets.

    The updater is one process per model store (a flock on the store), so it
    needs no group membership to share partitions: it assigns them itself
    (``assign()``), and the group is only where its offsets are committed.
    Subscribing instead made it depend on kafka-python 3.0.12's group join,
    which can stall for good: a rejoin that a metadata change starts is
    dropped when ``poll``'s timeout ends while the JoinGroup is in flight
    (the leader's assignment then makes ``need_rejoin()`` false, so nobody
    completes the join), the stall seen when the consumer starts before its
    topic's metadata is known. Manual assignment also spares a restarted
    process waiting out its predecessor's session (45 s by default).

    Parameters
    ----------
    servers, topic, group
        Bootstrap servers, topic, and the consumer group offsets are
        committed to.
    positions
        Returns the offsets (partition -> next offset) the model state
        includes; a partition is assigned at these offsets, so a restart
        continues exactly after the last applied event.
    on_revoke
        Called before partitions are taken away: apply, save and commit.
        With manual assignment only a partition that left the metadata is
        taken away (the topic was deleted or recreated).
    consumer_factory
        Builds the consumer (tests inject a fake); default ``KafkaConsumer``.
    commit_timeout_seconds
        Bound on a commit (and on ``close``): kafka-python retries a commit
        for ``request_timeout_ms`` (30 s) while the broker is down, and the
        consumer thread must get back to reporting and retrying sooner.
    partition_check_seconds
        How often the topic's metadata is refreshed and new partitions are
        assigned (while none is known yet, at every poll).
    clock
        Monotonic seconds (tests pass a fake one).
    config
        Further ``KafkaConsumer`` settings.

    Raises :class:`SourceError` when the consumer cannot be created (no
    broker answers within ``bootstrap_timeout_ms``).
    """

    def __init__(
        self,
        servers: str | list[str],
        topic: str,
        group: str,
        positions: Callable[[], dict[int, int]],
        on_revoke: Callable[[], None],
        consumer_factory: Callable[..., Any] | None = None,
        commit_timeout_seconds: float = 5.0,
        partition_check_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        **config: Any,
    ) -> None:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        self.topic = topic
        self.servers = servers
        self._TopicPartition = TopicPartition
        self._errors: tuple[type[BaseException], ...] = (KafkaError, OSError)
        self._commit_timeout_ms = int(commit_timeout_seconds * 1000)
        self._backlog_end: dict[int, int] = {}  # partition -> end offset when first seen
        self._read: dict[int, int] = {}  # partition -> offset after the last record handed out
        self._positions = positions
        self._on_revoke = on_revoke
        self._check_every = partition_check_seconds
        self._clock = clock
        self._created = clock()
        self._next_check = self._created
        self._assigned: frozenset[int] = frozenset()
        factory = consumer_factory or KafkaConsumer
        settings: dict[str, Any] = {
            "bootstrap_servers": servers,
            "group_id": group,
            # Offsets are committed by the updater after the state is saved.
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": f"{group}-updater",
            # The constructor waits this long for a broker; the updater's loop
            # retries, so a short wait keeps stop() and readiness responsive.
            "bootstrap_timeout_ms": 5000,
            # After a broker restart: kafka-python backs reconnects off up to
            # 30 s, and a request lost in the restart waits out its timeout
            # (30 s by default) before being retried; both delay recovery.
            "reconnect_backoff_max_ms": 1000,
            "request_timeout_ms": 10000,
        }
        settings.update(config)
        try:
            self.consumer = factory(**settings)
        except self._errors as exc:
            raise self._error("cannot connect", exc) from exc
        # kafka-python's metadata cache: its public partitions_for_topic()
        # blocks without a bound while the topic is unknown, this one never.
        self._cluster = getattr(self.consumer, "_cluster", None)
        if self._cluster is not None:
            self._cluster.add_topic(topic)  # track it (and ask for it) from now on

    def _known_partitions(self) -> set[int]:
        if self._cluster is None:  # a test double
            return set(self.consumer.partitions_for_topic(self.topic) or ())
        return set(self._cluster.partitions_for_topic(self.topic) or ())

    def _refresh_assignment(self) -> None:
        """Assign every partition the metadata knows, seeking new ones to the
        model's offsets; ask for fresher metadata every ``partition_check_seconds``."""
        now = self._clock()
        if self._assigned and now < self._next_check:
            return
        self._next_check = now + self._check_every
        partitions = self._known_partitions()
        if self._cluster is not None and (not partitions or self._assigned):
            self._cluster.request_update()  # picked up by a later check
        if not partitions or partitions == self._assigned:
            return
        if self._assigned - partitions:
            # A partition vanished (topic deleted or recreated): save what
            # was read from it before its position is dropped.
            self._on_revoke()
        added = sorted(partitions - self._assigned)
        self.consumer.assign([self._TopicPartition(self.topic, p) for p in sorted(partitions)])
        self._assigned = frozenset(partitions)
        known = self._positions()
        for p in added:
            tp = self._TopicPartition(self.topic, p)
            offset = known.get(p)
            if offset is not None:
                self.consumer.seek(tp, offset)
            elif known:
                # The model holds positions on this topic but none for this
                # partition: it has applied nothing from it, so start at its
                # beginning, not at a group commit that a newer (now corrupt
                # or rolled back) version made.
                self.consumer.seek_to_beginning(tp)
            # With no positions at all (a new model) the group's committed
            # offset stands, else auto_offset_reset (earliest).
        log.info("assigned %s of %s (added %s), seeking to model offsets %s",
                 sorted(partitions), self.topic, added, known)

    def unassigned_seconds(self) -> float | None:
        """Seconds since the source was created while it holds no partition
        (the topic is unknown to the broker's metadata), else None."""
        if self._assigned:
            return None
        return max(0.0, self._clock() - self._created)

    def _error(self, what: str, exc: BaseException) -> SourceError:
        text = str(exc)
        if not text.startswith(type(exc).__name__):  # kafka-python's errors name themselves
            text = f"{type(exc).__name__}: {text}"
        return SourceError(f"Kafka at {self.servers}: {what}: {text}")

    def poll(self, timeout: float, max_records: int) -> Poll:
        try:
            self._refresh_assignment()
            records = self.consumer.poll(timeout_ms=int(timeout * 1000),
                                         max_records=max_records)
        except self._errors as exc:
            raise self._error("poll failed", exc) from exc
        values: list[Any] = []
        offsets: dict[int, int] = {}
        for tp, messages in records.items():
            for message in messages:
                values.append(message.value)
            if messages:
                offsets[tp.partition] = messages[-1].offset + 1
        self._read.update(offsets)
        return values, offsets

    def commit(self, offsets: dict[int, int]) -> None:
        from kafka import OffsetAndMetadata

        if not offsets:
            return
        try:
            self.consumer.commit({
                self._TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in offsets.items()
            }, timeout_ms=self._commit_timeout_ms)
        except self._errors as exc:
            # The saved model holds these offsets and the consumer seeks to
            # them on assignment, so a lost commit loses nothing.
            raise self._error("commit failed", exc) from exc

    def pace(self, wait: float, stopping: threading.Event) -> float:
        return wait  # poll blocks until records arrive or the wait ends

    def read_backlog(self) -> bool:
        """True once every assigned partition has been read up to its end offset
        as first seen (the high watermark of the first fetch answer after the
        assignment); False before any assignment.

        Only what the consumer already knows is used (records handed out,
        the model's offsets it seeked to, fetch answers' high watermarks):
        no request to the broker on the consumer loop's thread.
        """
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        known = None
        for tp in assigned:
            end = self._backlog_end.get(tp.partition)
            if end is None:
                end = self.consumer.highwater(tp)
                if end is None:
                    return False  # no fetch answer yet
                self._backlog_end[tp.partition] = end
            read = self._read.get(tp.partition)
            if read is None:
                if known is None:
                    known = self._positions()
                # Nothing read yet: the consumer starts where the model's offsets
                # say; with none, at the partition's start (an empty one is read).
                read = known.get(tp.partition, 0)
            if read < end:
                return False
        return True

    def lag(self, positions: dict[int, int]) -> int | None:
        total = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                return None
            total += max(0, high - positions.get(tp.partition, 0))
        return total

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False, timeout_ms=self._commit_timeout_ms)
        except self._errors as exc:
            raise self._error("close failed", exc) from exc
