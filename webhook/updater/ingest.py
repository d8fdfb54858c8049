"""Raw events in, a batch applied: capacity, then the shared decode and de-duplication.

:func:`~autoretrain.exporter.ingest.decode_batch` decodes, validates and
de-duplicates, as it does for the standalone exporter; :class:`Ingestor`
adds what only the model needs (a bound on the distinct agents and task
types it learns, checked before de-duplication so a rejected id is not
remembered), counts what was skipped, and applies the batch to the
:class:`~.state.ModelState`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from autoretrain.exporter.events import InvalidEvent, OutcomeEvent
from autoretrain.exporter.ingest import RecentEventIds, decode_batch

from .batch import BatchBuilder
from .metrics import UpdaterMetrics
from .model import AgentSelectionModel
from .settings import UpdaterSettings
from .state import ModelState
from .status import Counters

__all__ = ["Ingestor"]

log = logging.getLogger(__name__)


class Ingestor:
    """Validates, de-duplicates and applies raw events to ``state``."""

    def __init__(self, state: ModelState, settings: UpdaterSettings, metrics: UpdaterMetrics,
                 counters: Counters, clock: Callable[[], float]) -> None:
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self.counters = counters
        self.clock = clock
        self._seen = RecentEventIds(max(100_000, 10 * settings.buffer_capacity))
        self._known_agents: set[str] = set()
        self._known_tasks: set[str] = set()
        self._faults_logged: set[str] = set()

    def know(self, model: AgentSelectionModel) -> None:
        """Count the names of a loaded model against the capacity (state lock held)."""
        self._known_agents = set(model.agents)
        self._known_tasks = set(model.task_types)

    def _admit(self, event: OutcomeEvent) -> None:
        """Refuse a name beyond ``max_agents`` / ``max_task_types`` known names
        (``capacity:...``); remember a new one."""
        agent, task = event["agent_name"], event["task_type"]
        if agent not in self._known_agents:
            if len(self._known_agents) >= self.settings.max_agents:
                raise InvalidEvent("capacity:agent_name",
                                   f"more than max_agents={self.settings.max_agents} agents")
            self._known_agents.add(agent)
        if task not in self._known_tasks:
            if len(self._known_tasks) >= self.settings.max_task_types:
                raise InvalidEvent(
                    "capacity:task_type",
                    f"more than max_task_types={self.settings.max_task_types} task types")
            self._known_tasks.add(task)

    def _invalid(self, exc: InvalidEvent) -> None:
        fault = exc.fault
        c = self.counters
        c.invalid += 1
        c.invalid_by_fault[fault] = c.invalid_by_fault.get(fault, 0) + 1
        if fault not in self._faults_logged:
            self._faults_logged.add(fault)
            log.warning("skipping invalid event (%s): %s (further %r faults are only counted)",
                        fault, exc, fault)

    def ingest(self, values: list[Any], offsets: dict[int, int] | None = None) -> int:
        """Apply ``values`` as one batch; ``offsets`` are the source positions after
        them. Returns the number of events applied."""
        state = self.state
        with state.lock:
            decoded = decode_batch(values, self._seen, self._admit, now=self.clock(),
                                   max_skew_seconds=self.settings.max_event_skew_seconds)
            for exc in decoded.invalid:
                self._invalid(exc)
            builder = BatchBuilder()
            for event in decoded.events:
                builder.add(event)
            batch = builder.build()
            invalid, duplicates = len(decoded.invalid), decoded.duplicates
            started = time.perf_counter()
            state.apply(batch)
            elapsed = time.perf_counter() - started
            if offsets:
                state.offsets.update(offsets)
            c = self.counters
            c.consumed += len(values)
            c.applied += len(batch)
            c.duplicates += duplicates
            if len(batch):
                c.batches += 1
                c.update_seconds_total += elapsed
                c.last_update_seconds = elapsed
                c.last_update_timestamp = self.clock()
            if len(batch) or offsets:
                state.dirty = True
            buffered = len(state.buffer)
        self.metrics.events.labels("applied").inc(len(batch))
        self.metrics.events.labels("duplicate").inc(duplicates)
        self.metrics.events.labels("invalid").inc(invalid)
        self.metrics.buffer.set(buffered)
        return len(batch)
