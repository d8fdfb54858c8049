"""The serving model and what is kept with it: buffer, holdout snapshots, retrain journal.

:class:`ModelState` is the state the other parts of the updater share, with
the lock that guards it (``lock``: held for a batch update, never for I/O
or a whole retrain). Snapshots: copies of the serving model taken before
the newest events were applied, so a retrain can score candidate and
serving model on events neither has seen (see :mod:`.retrain`). The
journal: batches applied while a retrain runs, re-applied to the model it
promotes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from autoretrain.exporter.timefmt import utc_iso

from .batch import EventBatch
from .buffers import EventBuffer
from .metrics import UpdaterMetrics
from .model import AgentSelectionModel
from .settings import UpdaterSettings

__all__ = ["ModelState"]

log = logging.getLogger(__name__)

_PROBATION_LOG = {
    "parked": "set aside (it got worse; retried later)",
    "restored": "restored (retried runs look like its history)",
    "retry_failed": "still broken at its retry (next retry later)",
    "given_up": "no longer retried (its history has faded)",
}


class ModelState:
    """The serving model, its buffer, snapshots, journal, stream position and version."""

    def __init__(self, model: AgentSelectionModel, settings: UpdaterSettings,
                 metrics: UpdaterMetrics, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.lock = threading.RLock()
        self.model = model
        self.buffer = EventBuffer(settings.buffer_capacity)
        self.offsets: dict[int, int] = {}  # partition -> next offset, in the model state
        self.applied_total = 0  # events applied since load (positions snapshots)
        self.snapshots: deque[tuple[int, AgentSelectionModel]] = deque(maxlen=2)
        self.retraining = False
        self.journal: list[EventBatch] = []
        self.version = 0
        self.model_loaded = False
        self.dirty = False
        self.last_retrain: dict[str, Any] | None = None
        self.last_scores: dict[str, Any] | None = None
        # The newest probation events (status), numbered so a reader can tell
        # which it has not seen yet.
        self.probation_log: deque[dict[str, Any]] = deque(maxlen=50)
        self._probation_seq = 0

    def apply(self, batch: EventBatch) -> None:
        """Learn ``batch`` (lock held): model, buffer, retrain journal, snapshots."""
        if not len(batch):
            return
        target = self.settings.holdout_target
        if len(batch) > target:
            # Snapshot just before the batch's last `target` events, so a
            # retrain right after a large batch still has a fair holdout.
            split = len(batch) - target
            self.model.update(batch.take(slice(0, split)))
            self.snapshots.append((self.applied_total + split, self.model.copy()))
            self.model.update(batch.take(slice(split, None)))
        else:
            self.model.update(batch)
        self.buffer.append(batch)
        if self.retraining:
            self.journal.append(batch)
        self.applied_total += len(batch)
        newest = self.snapshots[-1][0] if self.snapshots else -1
        if self.applied_total - newest >= target:
            self.snapshots.append((self.applied_total, self.model.copy()))
        self.report_probation()

    def pick_snapshot(self, buffered: int) -> tuple[int, AgentSelectionModel] | None:
        """The newest snapshot with at least ``min_holdout_events`` applied after it,
        all of them still in the buffer of ``buffered`` events (lock held)."""
        min_holdout = self.settings.retrain.min_holdout_events
        for seq, model in reversed(self.snapshots):
            held_out = self.applied_total - seq
            if min_holdout <= held_out < buffered:
                return seq, model
        return None

    def promote(self, model: AgentSelectionModel, buffer: EventBatch,
                weights: np.ndarray) -> None:
        """Serve ``model`` (lock held); events applied meanwhile are re-applied."""
        journal = EventBatch.concat(self.journal)
        model.update(journal)
        self.model = model
        self.buffer.clear()
        self.buffer.append(buffer, weights)
        self.buffer.append(journal)
        self.snapshots.clear()
        self.snapshots.append((self.applied_total, model.copy()))
        self.dirty = True
        self.report_probation()

    def install(self, model: AgentSelectionModel, version: int,
                metadata: dict[str, Any]) -> None:
        """Serve a loaded model (lock held): its offsets on our topic, a fresh buffer."""
        kafka = metadata.get("kafka") or {}
        offsets: dict[int, int] = {}
        if kafka.get("topic") == self.settings.kafka_topic:
            offsets = {int(p): int(o) for p, o in (kafka.get("offsets") or {}).items()}
        self.model = model
        self.offsets = offsets
        self.version = version
        self.model_loaded = True
        self.buffer.clear()
        self.snapshots.clear()
        self.snapshots.append((self.applied_total, model.copy()))
        self.last_scores = metadata.get("scores")
        self.metrics.version.set(version)
        log.info("loaded model version %d (%d events seen, offsets %s)", version,
                 model.events_seen, offsets)

    def start_empty(self) -> None:
        """No stored model: snapshot the empty one, so the first retrain has a baseline."""
        self.snapshots.append((0, self.model.copy()))

    def report_probation(self) -> None:
        """Log, count and keep what the serving model's probation did (lock held).

        A park is the drop detector's (``cause`` "drop_detector": the fast
        path, between retrains) or a retrain's (``cause`` "retrain")."""
        detected = set(self.model.drop_detections())
        for event, task_type, agent in self.model.probation_events():
            self.metrics.probation.labels(event).inc()
            cause = None
            if event == "parked":
                cause = "drop_detector" if (task_type, agent) in detected else "retrain"
            log.info("model: %s %s on task type %s", _PROBATION_LOG[event], agent, task_type)
            if cause == "drop_detector":
                self.metrics.drops_detected.inc()
                log.warning("model: drop detected: %s on task type %s set aside within a few "
                            "of its runs, before any alert (retried later)", agent, task_type)
            self._probation_seq += 1
            entry = {"seq": self._probation_seq, "event": event, "task_type": task_type,
                     "agent": agent, "timestamp": utc_iso(self.clock())}
            if cause is not None:
                entry["cause"] = cause
            self.probation_log.append(entry)

    def kafka_metadata(self, offsets: dict[int, int]) -> dict[str, Any] | None:
        """The ``kafka`` entry of a saved version (None without Kafka)."""
        if not self.settings.uses_kafka:
            return None
        return {"topic": self.settings.kafka_topic,
                "offsets": {str(p): o for p, o in offsets.items()}}
