"""The updater's bounded memory of recent events kept for retraining, with the
weight each carries (recent event ids are :class:`~autoretrain.exporter.ingest.RecentEventIds`)."""

from __future__ import annotations

from collections import deque

import numpy as np

from .batch import EventBatch

__all__ = ["EventBuffer"]


class EventBuffer:
    """The newest ``capacity`` applied events, with the weight each carries in
    the serving model (1 when streamed; recency weights after an incremental
    retrain)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[tuple[EventBatch, np.ndarray]] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, batch: EventBatch, weight: np.ndarray | None = None) -> None:
        """Add ``batch`` (newest), dropping the oldest events beyond capacity."""
        if not len(batch):
            return
        self._chunks.append((batch, np.ones(len(batch)) if weight is None else weight))
        self._size += len(batch)
        excess = self._size - self.capacity
        while excess > 0:
            oldest, w = self._chunks[0]
            if len(oldest) <= excess:
                self._chunks.popleft()
                self._size -= len(oldest)
                excess -= len(oldest)
            else:
                self._chunks[0] = (oldest.take(slice(excess, None)), w[excess:])
                self._size -= excess
                excess = 0

    def contents(self) -> tuple[EventBatch, np.ndarray]:
        """All buffered events as one batch, and their weights."""
        if not self._chunks:
            return EventBatch.empty(), np.zeros(0)
        batch = EventBatch.concat([c for c, _ in self._chunks])
        weight = np.concatenate([w for _, w in self._chunks])
        # Keep the concatenation: the next call (or retrain) reuses it.
        self._chunks = deque([(batch, weight)])
        return batch, weight

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0
