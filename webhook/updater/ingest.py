"""Raw events in, a batch applied: validation, capacity, de-duplication.

:func:`decode_new` is the decode / fast-path / de-duplicate loop, kept as
one function so that it can be swapped for the shared one of
:mod:`autoretrain.exporter` in one edit. :class:`Ingestor` owns what it
needs between calls (the recent ids, the names the model may learn, the
invalid-event counts) and applies the batch to the :class:`~.state.ModelState`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from autoretrain.exporter.events import (
    MAX_EVENT_BYTES,
    InvalidEvent,
    decode_event,
    run_fields,
    validate_event,
)

from .batch import BatchBuilder, EventBatch
from .buffers import RecentIds
from .metrics import UpdaterMetrics
from .model import AgentSelectionModel
from .settings import UpdaterSettings
from .state import ModelState
from .status import Counters

__all__ = ["Ingestor", "decode_new"]

log = logging.getLogger(__name__)


def decode_new(
    values: list[Any],
    seen: RecentIds,
    known_agents: set[str],
    known_tasks: set[str],
    max_agents: int,
    max_task_types: int,
    on_invalid: Callable[[InvalidEvent], None],
) -> tuple[EventBatch, int, int]:
    """Decode ``values`` (dicts or message bytes), skip the invalid ones (each
    reported to ``on_invalid``) and those ``seen`` already; return the batch of
    the others, the invalid count and the duplicate count.

    A name beyond ``max_agents`` / ``max_task_types`` known names is invalid
    (``capacity:...``); new names are added to ``known_agents`` / ``known_tasks``.
    """
    builder = BatchBuilder()
    invalid = duplicates = 0
    for raw in values:
        # Fast path: the common run event as the monitor produces it,
        # without building the normalised dict (see run_fields).
        fields = None
        if type(raw) is bytes:
            if len(raw) <= MAX_EVENT_BYTES:
                try:  # noqa: SIM105 - contextlib.suppress costs ~0.2 us per event here
                    fields = run_fields(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    pass  # decode_event below reports it
        elif type(raw) is dict:
            fields = run_fields(raw)
        event = None
        try:
            if fields is None:
                event = validate_event(raw) if isinstance(raw, dict) else decode_event(raw)
                event_id, agent = event["event_id"], event["agent_name"]
                task = event["task_type"]
            else:
                event_id, agent, task = fields[0], fields[2], fields[4]
            if agent not in known_agents:
                if len(known_agents) >= max_agents:
                    raise InvalidEvent("capacity:agent_name",
                                       f"more than max_agents={max_agents} agents")
                known_agents.add(agent)
            if task not in known_tasks:
                if len(known_tasks) >= max_task_types:
                    raise InvalidEvent(
                        "capacity:task_type",
                        f"more than max_task_types={max_task_types} task types")
                known_tasks.add(task)
        except InvalidEvent as exc:
            invalid += 1
            on_invalid(exc)
            continue
        if not seen.add(event_id):
            duplicates += 1
            continue
        if event is None:
            assert fields is not None
            builder.add_row(task, agent, True, 1.0 if fields[5] == "success" else 0.0,
                            fields[1])
        else:
            builder.add(event)
    return builder.build(), invalid, duplicates


class Ingestor:
    """Validates, de-duplicates and applies raw events to ``state``."""

    def __init__(self, state: ModelState, settings: UpdaterSettings, metrics: UpdaterMetrics,
                 counters: Counters, clock: Callable[[], float]) -> None:
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self.counters = counters
        self.clock = clock
        self._seen = RecentIds(max(100_000, 10 * settings.buffer_capacity))
        self._known_agents: set[str] = set()
        self._known_tasks: set[str] = set()
        self._faults_logged: set[str] = set()

    def know(self, model: AgentSelectionModel) -> None:
        """Count the names of a loaded model against the capacity (state lock held)."""
        self._known_agents = set(model.agents)
        self._known_tasks = set(model.task_types)

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
            batch, invalid, duplicates = decode_new(
                values, self._seen, self._known_agents, self._known_tasks,
                self.settings.max_agents, self.settings.max_task_types, self._invalid)
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
