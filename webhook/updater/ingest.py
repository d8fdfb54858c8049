"""Raw events in, a batch applied: capacity, then the shared decode and de-duplication.

:func:`~autoretrain.exporter.ingest.decode_batch` decodes, validates and
de-duplicates, as it does for the standalone exporter; :class:`Ingestor`
adds what only the model needs (a bound on the distinct agents and task
types it learns, checked before de-duplication so a rejected id is not
remembered), counts what was skipped, and applies the batch to the
:class:`~.state.ModelState`.

The agent bound evicts: when ``max_agents`` agents are known and a new one
arrives, an *idle* agent is dropped from the serving model to make room. Idle
means no event for longer than ``agent_idle_seconds`` (event time, against
the newest event the model has seen; unknown for a file saved before the
model kept it) and none among the buffered recent events (so a full retrain,
which replays the buffer, cannot bring it back) nor in the batch being read.
The longest idle goes first, then the one with the least evidence. Without
this, names forged once filled the limit for good and, after a restart, a
real new agent was refused as ``capacity:agent_name``. Reaching the limit is
logged and exported (``autoretrain_model_updater_capacity_used_ratio``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from autoretrain.exporter.events import InvalidEvent, OutcomeEvent, loads_value
from autoretrain.exporter.ingest import RecentEventIds, decode_batch
from autoretrain.exporter.timefmt import utc_iso

from .batch import EventBatch
from .metrics import UpdaterMetrics
from .model import AgentSelectionModel
from .outcomes import OutcomeTally
from .settings import UpdaterSettings
from .state import ModelState
from .status import Counters

__all__ = ["Ingestor"]

log = logging.getLogger(__name__)


def model_time(t: float) -> str:
    """An event time for a log line ("unknown" when not finite)."""
    try:
        return utc_iso(t) if math.isfinite(t) else "unknown"
    except (ValueError, OverflowError, OSError):
        return repr(t)


def _agents_named(values: list[Any]) -> set[str]:
    """The agent names in a batch of raw values (dicts or message bytes), valid or
    not: the agents an eviction must spare while that batch is read."""
    names: set[str] = set()
    for raw in values:
        obj = raw
        if raw is None or isinstance(raw, bytes | str):
            try:  # the decode step's own parse, with its size bound
                obj = loads_value(raw)
            except InvalidEvent:
                continue
        if isinstance(obj, dict) and isinstance(name := obj.get("agent_name"), str):
            names.add(name)
    return names


class Ingestor:
    """Validates, de-duplicates and applies raw events to ``state``."""

    def __init__(self, state: ModelState, settings: UpdaterSettings, metrics: UpdaterMetrics,
                 counters: Counters, clock: Callable[[], float]) -> None:
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self.counters = counters
        self.clock = clock
        #: Counts every applied event by event time (what retrain effects are measured on).
        self.outcomes = OutcomeTally()
        self._seen = RecentEventIds(max(100_000, 10 * settings.buffer_capacity))
        self._known_agents: set[str] = set()
        self._known_tasks: set[str] = set()
        self._faults_logged: set[str] = set()
        # The batch being read (its agents are never evicted for it), and the
        # agents it names and those in the retrain buffer, computed once per
        # batch when an eviction needs them (the hot path records nothing).
        self._batch_values: list[Any] = []
        self._batch_agents: set[str] | None = None
        self._buffered_agents: set[str] | None = None
        # No agent was idle for this batch: the answer holds until the batch
        # is applied, so a flood of new names costs one scan per batch.
        self._no_room = False
        self._agents_full = False
        # The per-task run and cost series' children, by task type (labels()
        # once per name, not per batch).
        self._task_counters: dict[str, tuple[Any, Any]] = {}
        # The events series' children, resolved once (labels() per batch is a
        # lock and a validation each).
        self._event_counters = tuple(metrics.events.labels(result)
                                     for result in ("applied", "duplicate", "invalid"))

    def know(self, model: AgentSelectionModel) -> None:
        """Count the names of a loaded model against the capacity (state lock held)."""
        self._known_agents = set(model.agents)
        self._known_tasks = set(model.task_types)

    def _admit(self, event: OutcomeEvent) -> None:
        """Refuse a name beyond ``max_agents`` / ``max_task_types`` known names
        (``capacity:...``); remember a new one."""
        agent, task = event["agent_name"], event["task_type"]
        if agent not in self._known_agents:
            if len(self._known_agents) >= self.settings.max_agents and not self._make_room():
                raise InvalidEvent(
                    "capacity:agent_name",
                    f"more than max_agents={self.settings.max_agents} agents, none idle "
                    f"for {self.settings.agent_idle_seconds:g} s")
            self._known_agents.add(agent)
        if task not in self._known_tasks:
            if len(self._known_tasks) >= self.settings.max_task_types:
                raise InvalidEvent(
                    "capacity:task_type",
                    f"more than max_task_types={self.settings.max_task_types} task types")
            self._known_tasks.add(task)

    def _make_room(self) -> bool:
        """Drop the longest idle agent from the serving model (state lock held);
        False when none is idle."""
        model = self.state.model
        in_model = set(model.agents)
        # Admitted but not applied yet (earlier in this batch): never dropped.
        pending = self._known_agents - in_model
        # A retrain promoted while agents were dropped may have brought one
        # back: count what the model holds. (In place: the batch's admit hook
        # holds this set.)
        self._known_agents.clear()
        self._known_agents.update(in_model | pending)
        limit = self.settings.max_agents
        if len(self._known_agents) < limit:
            self._agents_full = False
            return True
        if not self._agents_full:
            self._agents_full = True
            log.warning("agent limit reached: %d agents known (max_agents=%d); a new agent "
                        "is admitted only in place of one idle for %g s", len(in_model),
                        limit, self.settings.agent_idle_seconds)
        if self._no_room:
            return False
        idle = self._idle_agent(model)
        if idle is None:
            self._no_room = True
            return False
        victim, last_seen = idle
        model.drop_agents([victim])
        self.state.dirty = True
        self._known_agents.discard(victim)
        self.metrics.agents_evicted.inc()
        log.info("dropped idle agent %r from the model (last event at %s) to admit a new one",
                 victim, model_time(last_seen))
        return True

    def _idle_agent(self, model: AgentSelectionModel) -> tuple[str, float] | None:
        """The agent to drop, and its newest event time; None when none is idle."""
        last_seen = model.agent_last_seen()
        known = [t for t in last_seen.values() if math.isfinite(t)]
        cutoff = (max(known) - self.settings.agent_idle_seconds) if known else math.inf
        if self._buffered_agents is None:
            batch, _ = self.state.buffer.contents()
            self._buffered_agents = {batch.agent_names[i] for i in np.unique(batch.agent)}
        if self._batch_agents is None:
            self._batch_agents = _agents_named(self._batch_values)
        busy = self._buffered_agents | self._batch_agents
        evidence = dict(zip(model.agents, model.agent_evidence(), strict=True))
        best: tuple[float, float, str] | None = None
        for name, seen in last_seen.items():
            if name in busy or (math.isfinite(seen) and seen >= cutoff):
                continue
            key = (seen if math.isfinite(seen) else -math.inf, float(evidence[name]), name)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        return best[2], best[0]

    def _invalid(self, exc: InvalidEvent) -> None:
        fault = exc.fault
        c = self.counters
        c.invalid += 1
        c.invalid_by_fault[fault] = c.invalid_by_fault.get(fault, 0) + 1
        if fault not in self._faults_logged:
            self._faults_logged.add(fault)
            log.warning("skipping invalid event (%s): %s (further %r faults are only counted)",
                        fault, exc, fault)

    def _count_runs(self, batch: EventBatch) -> None:
        """Runs and their cost per task type (the dashboard's cost per task type)."""
        run = batch.is_run
        if not len(batch):
            return
        if run.all():  # the usual batch: no masks
            codes, costs = batch.task, batch.cost
        elif run.any():
            codes, costs = batch.task[run], batch.cost[run]
        else:
            return
        n = len(batch.task_names)
        runs = np.bincount(codes, minlength=n).tolist()
        cost = np.bincount(codes, weights=costs, minlength=n).tolist()
        children = self._task_counters
        for name, k, c in zip(batch.task_names, runs, cost, strict=True):
            if k:
                child = children.get(name)
                if child is None:  # at most max_task_types names
                    child = children[name] = (self.metrics.task_runs.labels(name),
                                              self.metrics.task_cost.labels(name))
                child[0].inc(k)
                child[1].inc(c)

    def ingest(self, values: list[Any], offsets: dict[int, int] | None = None) -> int:
        """Apply ``values`` as one batch; ``offsets`` are the source positions after
        them. Returns the number of events applied."""
        state = self.state
        with state.lock:
            self._batch_values, self._batch_agents = values, None
            self._buffered_agents = None
            self._no_room = False
            decoded = decode_batch(values, self._seen, self._admit,
                                   known=(self._known_agents, self._known_tasks), now=self.clock(),
                                   max_skew_seconds=self.settings.max_event_skew_seconds)
            # Evictions happen only while decoding: do not hold the raw values.
            self._batch_values, self._batch_agents = [], None
            for exc in decoded.invalid:
                self._invalid(exc)
            if decoded.rebuilt:
                batch = EventBatch.from_events(decoded.events)
            else:  # runs in normal form only: the usual batch
                batch = EventBatch.from_run_rows(decoded.rows)
            self.outcomes.observe(batch)
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
        self._count_runs(batch)
        applied_events, duplicate_events, invalid_events = self._event_counters
        applied_events.inc(len(batch))
        if duplicates:
            duplicate_events.inc(duplicates)
        if invalid:
            invalid_events.inc(invalid)
        self.metrics.buffer.set(buffered)
        return len(batch)
