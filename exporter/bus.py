"""Where the monitor's outcome events go: the embedded bus, or Kafka.

The embedded bus is the default when no Kafka is configured: a bounded
in-process queue that a :class:`~webhook.RealTimeModelUpdater` in the same
process drains. Publishing is one ``deque.append``: it never blocks and never
raises into the orchestrator; what does not fit is counted as dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

from .events import OutcomeEvent

__all__ = ["EmbeddedBus", "EventSink"]


class EventSink(Protocol):
    """Anything the monitor can publish outcome events to."""

    def publish(self, event: OutcomeEvent) -> bool:
        """Queue one event; return False when it was dropped. Never blocks."""
        ...

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within ``timeout``) and release resources."""
        ...

    def stats(self) -> dict[str, int]:
        """Counts: ``published``, ``dropped``, ``pending``."""
        ...


class EmbeddedBus:
    """A bounded single-consumer in-process event queue.

    Parameters
    ----------
    maxsize
        Events held before new ones are dropped (and counted).
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._queue: deque[OutcomeEvent] = deque()
        self._wakeup = threading.Event()
        self._published = 0
        self._dropped = 0

    def publish(self, event: OutcomeEvent) -> bool:
        if len(self._queue) >= self.maxsize:
            self._dropped += 1
            return False
        self._queue.append(event)
        self._published += 1
        if not self._wakeup.is_set():  # set() takes a lock; skip it when already set
            self._wakeup.set()
        return True

    def drain(self, max_events: int | None = None) -> list[OutcomeEvent]:
        """Take up to ``max_events`` queued events (all when None), oldest first."""
        queue = self._queue
        n = len(queue) if max_events is None else min(max_events, len(queue))
        out = [queue.popleft() for _ in range(n)]
        if not queue:
            self._wakeup.clear()
            # An event published between the emptiness check and clear() must
            # not be left waiting for the next timeout.
            if queue:
                self._wakeup.set()
        return out

    def wait(self, timeout: float) -> bool:
        """Block until an event is queued or ``timeout`` seconds pass."""
        return self._wakeup.wait(timeout)

    def __len__(self) -> int:
        return len(self._queue)

    def close(self, timeout: float = 5.0) -> None:  # nothing to flush: the consumer drains
        self._wakeup.set()

    def stats(self) -> dict[str, int]:
        return {
            "published": self._published,
            "dropped": self._dropped,
            "pending": len(self._queue),
        }
