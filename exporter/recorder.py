"""The monitor's hot path: record runs and accuracy records, publish them as outcome events.

:class:`Recorder` owns what a recorded run touches: the Prometheus metrics
(:class:`~exporter.metrics.AgentMetrics`), the sliding window behind the
checker's statistics, and the event sink. Checking the window is the
:class:`~exporter.checker.Checker`'s job; the public front is
:class:`~exporter.PerformanceMonitor`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from prometheus_client import CollectorRegistry

from . import events as ev
from .bus import EventSink
from .effect import Outcomes
from .metrics import AgentMetrics
from .window import SlidingWindow, WindowStats

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

_STATUS_INDEX = {s: i for i, s in enumerate(ev.RUN_STATUSES)}
_MAX_KNOWN_AGENTS = 100_000  # agent -> agent_type memory for accuracy events
_MAX_NAME = ev.MAX_NAME_LENGTH
_APPLY_EVERY = 256  # queued runs applied in one batch at the latest


def _status(value: Any) -> str:
    if isinstance(value, Enum):  # the original API passed a status enum
        value = value.value
    return ev.check_status(value)


def _context(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # A copy: the caller may change its dict while the event waits in a queue.
    ctx = ev.check_context(value)
    return dict(ctx) if ctx is not None else None


class Recorder:
    """Records runs and accuracy records into metrics, window and event sink.

    Parameters
    ----------
    registry
        Where the :class:`~exporter.metrics.AgentMetrics` collector registers.
    window_seconds, max_window_records
        The sliding window (see :class:`~exporter.window.SlidingWindow`).
    max_agents
        Distinct ``agent`` label values before new ones collapse into "other".
    sink
        Where outcome events go; ``None`` publishes nothing.
    clock
        Returns Unix seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        window_seconds: float,
        max_window_records: int,
        max_agents: int,
        sink: EventSink | None,
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending_runs: deque[tuple[float, str, str, int, float, int, float, str]] = deque()
        self.metrics = AgentMetrics(
            registry, max_agents=max_agents, lock=self._lock, before_collect=self.apply_pending
        )
        self._window = SlidingWindow(window_seconds, max_records=max_window_records)
        self._agent_types: dict[str, str] = {}
        ids = ev.EventIdFactory()
        self._next_id = ids
        self._id_prefix, self._id_counter = ids.prefix, ids.counter
        self.runs_recorded = 0
        self.accuracy_recorded = 0
        self.publish_errors = 0
        self.sink = sink
        self._publish_event = sink.publish if sink is not None else None

    def record_run(
        self,
        run_id: str,
        agent_name: str,
        agent_type: str,
        status: Any,
        duration_ms: float,
        tokens_used: int = 0,
        cost: float = 0.0,
        *,
        task_type: str = "default",
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one finished agent run: ``PerformanceMonitor.record_agent_run``.

        ``status`` is one of success, failure, error, timeout (or an enum
        whose value is); ``duration_ms`` and ``cost`` finite numbers >= 0,
        ``tokens_used`` an integer >= 0, ``context`` a small dict of scalars.
        Raises ``ValueError`` naming the bad field; nothing is recorded then.
        Never blocks on, and never raises because of, the event sink.
        """
        # Fast path first: the checks below are the orchestrator's cost per run.
        if not (
            type(run_id) is str
            and type(agent_name) is str
            and type(agent_type) is str
            and type(task_type) is str
            and 0 < len(run_id) <= _MAX_NAME
            and 0 < len(agent_name) <= _MAX_NAME
            and 0 < len(agent_type) <= _MAX_NAME
            and 0 < len(task_type) <= _MAX_NAME
        ):
            ev.check_name("run_id", run_id)
            ev.check_name("agent_name", agent_name)
            ev.check_name("agent_type", agent_type)
            ev.check_name("task_type", task_type)
        status_index = _STATUS_INDEX.get(status) if type(status) is str else None
        if status_index is None:
            status = _status(status)
            status_index = _STATUS_INDEX[status]
        if type(duration_ms) is not float or not 0.0 <= duration_ms < math.inf:
            duration_ms = ev.check_number("duration_ms", duration_ms)
        if type(tokens_used) is not int or tokens_used < 0:
            tokens_used = ev.check_tokens(tokens_used)
        if type(cost) is not float or not 0.0 <= cost < math.inf:
            cost = ev.check_number("cost", cost)
        ctx = _context(context) if context is not None else None
        now = self._clock()
        # Queued, not applied: one atomic append here, and the metrics and the
        # window take queued runs in a batch under the lock, before any read
        # (scrape, check, stats) or every _APPLY_EVERY runs. The caller's
        # cost is the validation and this append (bench/recording.py).
        pending = self._pending_runs
        pending.append(
            (now, agent_name, agent_type, status_index, duration_ms, tokens_used, cost, task_type)
        )
        if len(pending) >= _APPLY_EVERY:
            self.apply_pending()
        if self._publish_event is not None:
            try:
                self._publish_event(
                    ev.run_event(
                        # EventIdFactory's expression, inlined: one call less per run.
                        self._id_prefix + str(next(self._id_counter)),
                        now,
                        agent_name,
                        agent_type,
                        status,
                        duration_ms,
                        tokens_used,
                        cost,
                        task_type,
                        ctx,
                    )
                )
            except Exception:  # a sink must never break the orchestrator's call
                self._publish_failed()

    def apply_pending(self) -> None:
        """Apply queued runs to the metrics and the window, in order."""
        pending = self._pending_runs
        if not pending:
            return
        record_run, add_run = self.metrics.record_run_locked, self._window.add_run
        agent_types = self._agent_types
        with self._lock:
            n = 0
            while pending:
                now, agent, agent_type, status, duration_ms, tokens, cost, task_type = (
                    pending.popleft()
                )
                record_run(agent, agent_type, status, duration_ms / 1000.0, tokens, cost)
                add_run(now, agent, status, duration_ms, tokens, cost, task_type)
                if agent not in agent_types and len(agent_types) < _MAX_KNOWN_AGENTS:
                    agent_types[agent] = agent_type
                n += 1
            self.runs_recorded += n

    def record_accuracy(
        self,
        agent_name: str,
        task_id: str,
        accuracy: float,
        feedback_source: str,
        task_type: str,
        context: Mapping[str, Any] | None,
        agent_type: str | None,
    ) -> float:
        """Record one accuracy record; ``agent_type`` None: the type of the agent's runs."""
        ev.check_name("agent_name", agent_name)
        ev.check_task_id(task_id)
        ev.check_name("feedback_source", feedback_source)
        ev.check_name("task_type", task_type)
        if agent_type is not None:
            ev.check_name("agent_type", agent_type)
        accuracy = ev.check_number("accuracy", accuracy, 1.0)
        ctx = _context(context)
        now = self._clock()
        if agent_type is None:
            self.apply_pending()  # the agent's type may sit in a queued run
        with self._lock:
            if agent_type is None:
                agent_type = self._agent_types.get(agent_name, "unknown")
            self.metrics.record_accuracy_locked(agent_name, feedback_source, accuracy)
            self._window.add_accuracy(now, agent_name, accuracy, task_type)
            self.accuracy_recorded += 1
        if self.sink is not None:
            event = ev.accuracy_event(
                self._next_id(),
                now,
                agent_name,
                agent_type,
                task_id,
                accuracy,
                feedback_source,
                task_type,
                ctx,
            )
            try:
                self.sink.publish(event)
            except Exception:  # a sink must never break the orchestrator's call
                self._publish_failed()
        return accuracy

    def _publish_failed(self) -> None:
        self.publish_errors += 1
        if self.publish_errors == 1:
            log.exception("event sink raised; events are counted as dropped")

    # -- reading ----------------------------------------------------------

    def window_stats(self, since: float | None = None) -> WindowStats:
        """Statistics over the window (or since ``since``), with ``agents`` per agent."""
        self.apply_pending()
        with self._lock:
            return self._window.stats(self._clock(), since)

    def outcomes(self, start: float, end: float) -> Outcomes:
        """The window's outcome figures timed in ``[start, end)`` (retrain effects)."""
        self.apply_pending()
        with self._lock:
            return self._window.outcomes(start, end)

    def event_stats(self) -> dict[str, int]:
        """Outcome events ``published``, ``dropped`` (full or raising sink), ``pending``."""
        stats = self.sink.stats() if self.sink is not None else {}
        return {
            "published": stats.get("published", 0),
            "dropped": stats.get("dropped", 0) + self.publish_errors,
            "pending": stats.get("pending", 0),
        }

    def counts(self) -> dict[str, int]:
        """Records so far, window size, agents seen and label collapses (for ``get_stats``)."""
        self.apply_pending()
        with self._lock:
            return {
                "window_records": len(self._window),
                "runs_recorded": self.runs_recorded,
                "accuracy_records": self.accuracy_recorded,
                "agents_seen": len(self._agent_types),
                "agent_series_collapsed": self.metrics.collapsed,
            }
