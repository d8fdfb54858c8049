"""Where the updater's events come from: the embedded bus or Kafka.

A source hands out raw events (dicts from the bus, message bytes from
Kafka) together with the position after them. The updater decides when the
events are applied and when a position is committed: for Kafka only after
the model state that includes those events has been saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from exporter.bus import EmbeddedBus

__all__ = ["EmbeddedSource", "EventSource", "KafkaSource", "Poll"]

log = logging.getLogger(__name__)

#: Raw values, and per partition the offset after the last one (Kafka only).
Poll = tuple[list[Any], dict[int, int]]


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

    def close(self) -> None:
        """Release resources."""
        ...


class EmbeddedSource:
    """Reads the in-process :class:`~exporter.bus.EmbeddedBus`."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus

    def poll(self, timeout: float, max_records: int) -> Poll:
        if not len(self.bus) and (timeout <= 0 or not self.bus.wait(timeout)):
            return [], {}
        return self.bus.drain(max_records), {}

    def commit(self, offsets: dict[int, int]) -> None:  # an in-process queue has no positions
        return None

    def lag(self, positions: dict[int, int]) -> int | None:
        return len(self.bus)

    def close(self) -> None:
        return None


class KafkaSource:
    """A ``KafkaConsumer`` with manual commits and seeks to the model's offsets.

    Parameters
    ----------
    servers, topic, group
        Bootstrap servers, topic and consumer group.
    positions
        Returns the offsets (partition -> next offset) the model state
        includes; on assignment the consumer seeks there, so a restart or a
        rebalance continues exactly after the last applied event.
    on_revoke
        Called before partitions are taken away: apply, save and commit.
    consumer_factory
        Builds the consumer (tests inject a fake); default ``KafkaConsumer``.
    """

    def __init__(
        self,
        servers: str | list[str],
        topic: str,
        group: str,
        positions: Callable[[], dict[int, int]],
        on_revoke: Callable[[], None],
        consumer_factory: Callable[..., Any] | None = None,
        **config: Any,
    ) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

        self.topic = topic
        self._TopicPartition = TopicPartition
        factory = consumer_factory or KafkaConsumer
        settings: dict[str, Any] = {
            "bootstrap_servers": servers,
            "group_id": group,
            # Offsets are committed by the updater after the state is saved.
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": f"{group}-updater",
        }
        settings.update(config)
        self.consumer = factory(**settings)
        source = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                if revoked:
                    on_revoke()

            def on_partitions_assigned(self, assigned: Any) -> None:
                known = positions()
                for tp in assigned:
                    offset = known.get(tp.partition)
                    if offset is not None:
                        source.consumer.seek(tp, offset)
                log.info("assigned %s, seeking to model offsets %s",
                         sorted(tp.partition for tp in assigned), known)

        self.consumer.subscribe([topic], listener=_Listener())

    def poll(self, timeout: float, max_records: int) -> Poll:
        records = self.consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        values: list[Any] = []
        offsets: dict[int, int] = {}
        for tp, messages in records.items():
            for message in messages:
                values.append(message.value)
            if messages:
                offsets[tp.partition] = messages[-1].offset + 1
        return values, offsets

    def commit(self, offsets: dict[int, int]) -> None:
        from kafka import OffsetAndMetadata

        if offsets:
            self.consumer.commit({
                self._TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in offsets.items()
            })

    def lag(self, positions: dict[int, int]) -> int | None:
        total = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                return None
            total += max(0, high - positions.get(tp.partition, 0))
        return total

    def close(self) -> None:
        self.consumer.close(autocommit=False)
