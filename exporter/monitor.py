"""``PerformanceMonitor``: the library an orchestrator embeds.

It records every agent run and accuracy record as Prometheus metrics and
in a sliding window, publishes them as outcome events (embedded bus or
Kafka), and with a background checker compares the window with the
thresholds, logs alerts and, when enabled, asks the connected model updater
to retrain.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import events as ev
from .accuracy import score_accuracy
from .alerts import Alert, RetrainPolicy, Violation, find_violations
from .bus import EventSink
from .http import metrics_app, serve
from .kafka_sink import KafkaSink
from .metrics import AgentMetrics
from .report import health_score, recommendations
from .thresholds import MonitorSettings, Thresholds, ThresholdsConfig, load_thresholds
from .timefmt import utc_iso
from .window import SlidingWindow, SystemMetrics

__all__ = ["PerformanceMonitor"]

log = logging.getLogger(__name__)

_STATUS_INDEX = {s: i for i, s in enumerate(ev.RUN_STATUSES)}
_MAX_KNOWN_AGENTS = 100_000  # agent -> agent_type memory for accuracy events
_MAX_NAME = ev.MAX_NAME_LENGTH
_APPLY_EVERY = 256  # queued runs applied in one batch at the latest


def _name(field: str, value: Any) -> str:
    if type(value) is not str or not value or len(value) > ev.MAX_NAME_LENGTH:
        raise ValueError(
            f"{field} must be a non-empty string of at most {ev.MAX_NAME_LENGTH} characters, "
            f"got {value!r:.80}"
        )
    return value


def _non_negative(field: str, value: Any) -> float:
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{field} must be a number >= 0, got {value!r:.80}")
        value = float(value)
    if not (0.0 <= value < math.inf):
        raise ValueError(f"{field} must be a finite number >= 0, got {value!r}")
    return value


def _status(value: Any) -> str:
    if isinstance(value, Enum):  # the original API passed a status enum
        value = value.value
    if value not in _STATUS_INDEX:
        raise ValueError(f"status must be one of {', '.join(ev.RUN_STATUSES)}, got {value!r:.80}")
    return str(value)


def _context(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        ev._context(value)
    except ev.InvalidEvent as exc:
        raise ValueError(str(exc)) from None
    return dict(value)


class _MonitorCollector(Collector):
    """The monitor's own health: events published or dropped, checker errors."""

    def __init__(self, monitor: PerformanceMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        m = self._monitor
        events = CounterMetricFamily(
            "autoretrain_monitor_events",
            "Outcome events handed to the event sink, by result.",
            labels=("result",),
        )
        stats = m._sink.stats() if m._sink is not None else {"published": 0, "dropped": 0}
        events.add_metric(("published",), stats.get("published", 0))
        events.add_metric(("dropped",), stats.get("dropped", 0) + m._publish_errors)
        yield events
        errors = CounterMetricFamily(
            "autoretrain_monitor_checker_errors", "Exceptions caught in the checker thread."
        )
        errors.add_metric((), m._checker_errors)
        yield errors
        retrains = CounterMetricFamily(
            "autoretrain_monitor_retrains_triggered",
            "Retrains requested by the monitor, by type and trigger.",
            labels=("retrain_type", "trigger"),
        )
        for (rtype, trigger), n in sorted(m._retrains.items()):
            retrains.add_metric((rtype, trigger), n)
        yield retrains
        pending = GaugeMetricFamily(
            "autoretrain_monitor_events_pending", "Outcome events waiting in the event sink."
        )
        pending.add_metric((), stats.get("pending", 0))
        yield pending


class PerformanceMonitor:
    """Per-agent performance monitoring with automatic retraining.

    Parameters
    ----------
    window_size_minutes
        Length of the sliding window behind ``get_system_metrics``.
    enable_auto_retraining
        Let the checker call ``model_updater.trigger_retraining``.
    model_updater
        Any object with ``trigger_retraining(reason=..., force_full_retrain=...)``
        returning a dict. When it has an ``event_bus`` (a
        :class:`~webhook.RealTimeModelUpdater` on the embedded bus), the
        monitor publishes its events there.
    alert_thresholds
        Overrides merged over the defaults (``accuracy_min`` 0.70,
        ``success_rate_min`` 0.80, ``error_rate_max`` 0.15,
        ``latency_p95_max_ms`` 5000, ``accuracy_critical`` 0.50).
    registry
        Prometheus registry for the metrics; a new one per monitor by default.
    thresholds_file
        A thresholds YAML file (``prometheus/thresholds.yml``); its thresholds
        become the defaults and its ``monitor`` section the checker settings.
    kafka_servers, kafka_topic
        Publish events to Kafka instead of the embedded bus.
    event_sink
        An explicit :class:`~exporter.bus.EventSink` (wins over the others).
    max_agents
        Distinct ``agent`` label values before new ones collapse into "other".
    check_interval_seconds, min_runs, cooldown_seconds, full_retrain_grace_seconds
        Checker settings (override the thresholds file's ``monitor`` section).
    clock
        Returns Unix seconds; tests and simulations inject their own.
    """

    def __init__(
        self,
        window_size_minutes: float = 60,
        enable_auto_retraining: bool = True,
        model_updater: Any = None,
        alert_thresholds: Mapping[str, float] | None = None,
        *,
        registry: CollectorRegistry | None = None,
        thresholds_file: str | Path | None = None,
        kafka_servers: str | None = None,
        kafka_topic: str = "agent-outcomes",
        event_sink: EventSink | None = None,
        max_agents: int = 500,
        check_interval_seconds: float | None = None,
        min_runs: int | None = None,
        cooldown_seconds: float | None = None,
        full_retrain_grace_seconds: float | None = None,
        max_window_records: int = 100_000,
        max_alerts: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(window_size_minutes, int | float) and window_size_minutes > 0):
            raise ValueError(f"window_size_minutes must be > 0, got {window_size_minutes!r}")
        if model_updater is not None and not callable(
            getattr(model_updater, "trigger_retraining", None)
        ):
            raise ValueError(
                "model_updater must have a trigger_retraining(reason, force_full_retrain) method"
            )
        file_config = load_thresholds(thresholds_file) if thresholds_file else ThresholdsConfig()
        merged = {**file_config.thresholds.as_dict(), **dict(alert_thresholds or {})}
        Thresholds.from_mapping(merged, "alert_thresholds")  # validate now, not at the first check
        self.alert_thresholds: dict[str, float] = merged
        overrides = {
            k: v
            for k, v in {
                "check_interval_seconds": check_interval_seconds,
                "min_runs": min_runs,
                "cooldown_seconds": cooldown_seconds,
                "full_retrain_grace_seconds": full_retrain_grace_seconds,
            }.items()
            if v is not None
        }
        self.settings = MonitorSettings(**{**asdict(file_config.monitor), **overrides})
        self.window_size_minutes = window_size_minutes
        self.enable_auto_retraining = enable_auto_retraining
        self.model_updater = model_updater
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._lock = threading.Lock()
        self._pending_runs: deque[tuple[float, str, str, int, float, int, float, str]] = deque()
        self._metrics = AgentMetrics(
            self.registry,
            max_agents=max_agents,
            lock=self._lock,
            before_collect=self._apply_pending,
        )
        self._window = SlidingWindow(window_size_minutes * 60.0, max_records=max_window_records)
        self._alerts: deque[Alert] = deque(maxlen=max_alerts)
        self._active: dict[tuple[str, str | None], Violation] = {}
        self._policy = RetrainPolicy(self.settings)
        self._agent_types: dict[str, str] = {}
        ids = ev.EventIdFactory()
        self._next_id = ids
        self._id_prefix, self._id_counter = ids.prefix, ids.counter
        self._runs_recorded = 0
        self._accuracy_recorded = 0
        self._publish_errors = 0
        self._checker_errors = 0
        self._checks = 0
        self._retrains: dict[tuple[str, str], int] = {}
        self._last_retrain: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self._owns_sink = event_sink is None and kafka_servers is not None
        if event_sink is not None:
            self._sink: EventSink | None = event_sink
            self.event_sink_kind = type(event_sink).__name__
        elif kafka_servers:
            self._sink = KafkaSink(kafka_servers, topic=kafka_topic)
            self.event_sink_kind = "kafka"
        elif getattr(model_updater, "event_bus", None) is not None:
            self._sink = model_updater.event_bus
            self.event_sink_kind = "embedded"
        else:
            # Nobody in this process would read the events: publishing them
            # would only fill a queue. Metrics and the checker still work.
            self._sink = None
            self.event_sink_kind = "none"
        self._publish_event = self._sink.publish if self._sink is not None else None
        self._collector = _MonitorCollector(self)
        self.registry.register(self._collector)

    # -- recording (the hot path) -----------------------------------------

    def record_agent_run(
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
        """Record one finished agent run.

        ``status`` is one of success, failure, error, timeout (or an enum
        whose value is). Raises ``ValueError`` naming the bad field; nothing
        is recorded then.
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
            _name("run_id", run_id)
            _name("agent_name", agent_name)
            _name("agent_type", agent_type)
            _name("task_type", task_type)
        status_index = _STATUS_INDEX.get(status) if type(status) is str else None
        if status_index is None:
            status = _status(status)
            status_index = _STATUS_INDEX[status]
        if type(duration_ms) is not float or not 0.0 <= duration_ms < math.inf:
            duration_ms = _non_negative("duration_ms", duration_ms)
        if type(tokens_used) is not int or tokens_used < 0:
            raise ValueError(f"tokens_used must be an integer >= 0, got {tokens_used!r:.80}")
        if type(cost) is not float or not 0.0 <= cost < math.inf:
            cost = _non_negative("cost", cost)
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
            self._apply_pending()
        if self._publish_event is not None:
            # events.run_event inlined: the call and its ten arguments were a
            # tenth of the cost of a recorded run (bench/recording.py).
            event = {
                "schema": ev.SCHEMA_VERSION,
                "event_id": self._id_prefix + str(next(self._id_counter)),
                "kind": "run",
                "timestamp": now,
                "agent_name": agent_name,
                "agent_type": agent_type,
                "task_type": task_type,
                "status": status,
                "duration_ms": duration_ms,
                "tokens_used": tokens_used,
                "cost": cost,
            }
            if ctx:
                event["context"] = ctx
            try:
                self._publish_event(event)
            except Exception:  # a sink must never break the orchestrator's call
                self._publish_failed()

    def _apply_pending(self) -> None:
        """Apply queued runs to the metrics and the window, in order."""
        pending = self._pending_runs
        if not pending:
            return
        record_run, add_run = self._metrics.record_run_locked, self._window.add_run
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
            self._runs_recorded += n

    def record_accuracy(
        self,
        agent_name: str,
        task_id: str,
        predicted_outcome: Mapping[str, Any] | None = None,
        actual_outcome: Mapping[str, Any] | None = None,
        feedback_source: str = "ground_truth",
        *,
        accuracy: float | None = None,
        task_type: str = "default",
        context: Mapping[str, Any] | None = None,
        agent_type: str | None = None,
    ) -> float:
        """Record how accurate an agent's output was against the real outcome.

        Pass ``accuracy`` (0..1) or both outcomes, scored as DESIGN.md defines
        (:func:`exporter.accuracy.score_accuracy`). Returns the accuracy.
        """
        _name("agent_name", agent_name)
        if type(task_id) is not str or len(task_id) > ev.MAX_NAME_LENGTH:
            raise ValueError(f"task_id must be a string, got {task_id!r:.80}")
        _name("feedback_source", feedback_source)
        _name("task_type", task_type)
        if accuracy is None:
            if predicted_outcome is None or actual_outcome is None:
                raise ValueError("pass accuracy=, or both predicted_outcome and actual_outcome")
            accuracy = score_accuracy(predicted_outcome, actual_outcome)
        elif (
            isinstance(accuracy, bool)
            or not isinstance(accuracy, int | float)
            or not 0 <= accuracy <= 1
        ):
            raise ValueError(f"accuracy must be a number in [0, 1], got {accuracy!r:.80}")
        accuracy = float(accuracy)
        ctx = _context(context)
        now = self._clock()
        if agent_type is None:
            self._apply_pending()  # the agent's type may sit in a queued run
        with self._lock:
            if agent_type is None:
                agent_type = self._agent_types.get(agent_name, "unknown")
            else:
                _name("agent_type", agent_type)
            self._metrics.record_accuracy_locked(agent_name, feedback_source, accuracy)
            self._window.add_accuracy(now, agent_name, accuracy, task_type)
            self._accuracy_recorded += 1
        if self._sink is not None:
            self._publish(
                ev.accuracy_event(
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
            )
        return accuracy

    def _publish(self, event: dict[str, Any]) -> None:
        try:
            self._sink.publish(event)  # type: ignore[union-attr]
        except Exception:  # a sink must never break the orchestrator's call
            self._publish_failed()

    def _publish_failed(self) -> None:
        self._publish_errors += 1
        if self._publish_errors == 1:
            log.exception("event sink raised; events are counted as dropped")

    # -- reading ----------------------------------------------------------

    def get_system_metrics(self, since: float | None = None) -> SystemMetrics:
        """Figures over the window (or since ``since``), with ``agents`` per agent."""
        self._apply_pending()
        with self._lock:
            return self._window.metrics(self._clock(), since)

    def get_agent_metrics(self, agent_name: str) -> Any:
        """One agent's figures over the window, ``None`` if it has none."""
        return self.get_system_metrics().agents.get(agent_name)

    def get_alerts(self, limit: int = 10) -> list[Alert]:
        """The newest ``limit`` alerts, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
        with self._lock:
            alerts = list(self._alerts)
        return alerts[::-1][:limit]

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds.from_mapping(self.alert_thresholds, "alert_thresholds")

    def get_stats(self) -> dict[str, Any]:
        self._apply_pending()
        sink = self._sink.stats() if self._sink is not None else {}
        with self._lock:
            return {
                "running": self._thread is not None and self._thread.is_alive(),
                "auto_retraining_enabled": self.enable_auto_retraining,
                "model_updater_connected": self.model_updater is not None,
                "window_size_minutes": self.window_size_minutes,
                "window_records": len(self._window),
                "runs_recorded": self._runs_recorded,
                "accuracy_records": self._accuracy_recorded,
                "agents_seen": len(self._agent_types),
                "agent_series_collapsed": self._metrics.collapsed,
                "alerts_total": len(self._alerts),
                "active_violations": len(self._active),
                "checks": self._checks,
                "checker_errors": self._checker_errors,
                "retrains_triggered": sum(self._retrains.values()),
                "last_retrain": self._last_retrain,
                "event_sink": self.event_sink_kind,
                "events_published": sink.get("published", 0),
                "events_dropped": sink.get("dropped", 0) + self._publish_errors,
                "events_pending": sink.get("pending", 0),
                "alert_thresholds": dict(self.alert_thresholds),
            }

    def generate_report(self, include_agents: bool = True) -> dict[str, Any]:
        """A health report of the window: score, violations, recommendations.

        ``health_score`` is documented in :func:`exporter.report.health_score`
        (``None`` when the window holds no data); ``status`` is ``no_data``,
        ``healthy``, ``degraded`` or ``critical``.
        """
        thresholds = self.thresholds
        metrics = self.get_system_metrics()
        violations = find_violations(metrics, thresholds, self.settings.min_runs, metrics.agents)
        system_violations = [v for v in violations or [] if v.agent is None]
        if violations is None:
            status = "no_data"
        elif any(v.level == "critical" for v in system_violations):
            status = "critical"
        else:
            status = "degraded" if system_violations else "healthy"
        system = asdict(metrics)
        system.pop("agents")
        report: dict[str, Any] = {
            "generated_at": utc_iso(self._clock()),
            "window_size_minutes": self.window_size_minutes,
            "status": status,
            "health_score": health_score(metrics, thresholds, system_violations),
            "system": system,
            "thresholds": thresholds.as_dict(),
            "violations": [asdict(v) for v in violations or []],
            "recommendations": recommendations(
                metrics, metrics.agents, violations, self.settings.min_runs
            ),
            "recent_alerts": [asdict(a) for a in self.get_alerts(10)],
            "stats": self.get_stats(),
        }
        if include_agents:
            report["agents"] = {
                name: {
                    **asdict(a),
                    "health_score": health_score(
                        a, thresholds, [v for v in violations or [] if v.agent == name]
                    ),
                }
                for name, a in metrics.agents.items()
            }
        return report

    # -- checking and retraining -------------------------------------------

    def check(self) -> list[Alert]:
        """One checker pass: compare the window with the thresholds, alert, retrain.

        The background thread calls this every ``check_interval_seconds``;
        simulations call it directly. Returns the alerts raised by this pass.
        """
        now = self._clock()
        thresholds = self.thresholds
        since = self._policy.judge_since()
        metrics = self.get_system_metrics(since)
        violations = find_violations(metrics, thresholds, self.settings.min_runs, metrics.agents)
        raised: list[Alert] = []
        with self._lock:
            self._checks += 1
            if violations is not None:
                current = {v.key: v for v in violations}
                for key, v in current.items():
                    if key not in self._active:
                        raised.append(self._alert(now, v.level, v.describe(), asdict(v)))
                        log.warning("%s", v.describe())
                for key, v in list(self._active.items()):
                    if key not in current:
                        who = "System" if v.agent is None else f"Agent {v.agent}"
                        msg = f"{who} {v.metric.replace('_', ' ')} back within its threshold"
                        raised.append(
                            self._alert(now, "info", msg, {"metric": v.metric, "agent": v.agent})
                        )
                        log.info("%s", msg)
                self._active = current
        decision = self._policy.decide(now, violations)
        if decision is not None and self.enable_auto_retraining and self.model_updater is not None:
            raised.append(
                self._retrain(now, decision.reason, decision.force_full_retrain, "monitor")
            )
        return raised

    def _alert(self, now: float, level: str, message: str, details: dict[str, Any]) -> Alert:
        alert = Alert(level=level, message=message, details=details, timestamp=utc_iso(now))
        self._alerts.append(alert)
        return alert

    def _retrain(self, now: float, reason: str, full: bool, trigger: str) -> Alert:
        retrain_type = "full" if full else "incremental"
        self._policy.record(now, retrain_type)
        key = (retrain_type, trigger)
        self._retrains[key] = self._retrains.get(key, 0) + 1
        log.warning("Retraining triggered (%s, by %s): %s", retrain_type, trigger, reason)
        result = self._call_updater(reason, full)
        self._last_retrain = result
        with self._lock:
            if result.get("success"):
                log.info(
                    "Retraining completed: %s events processed in %s ms, promoted=%s",
                    result.get("events_processed"),
                    result.get("duration_ms"),
                    result.get("promoted"),
                )
                return self._alert(
                    now,
                    "info",
                    f"Retraining ({retrain_type}) completed",
                    {"reason": reason, "result": result},
                )
            log.error("Retraining failed: %s", result.get("error"))
            return self._alert(
                now,
                "error",
                f"Retraining ({retrain_type}) failed",
                {"reason": reason, "result": result},
            )

    def _call_updater(self, reason: str, full: bool) -> dict[str, Any]:
        base = {
            "success": False,
            "model_type": "agent_selection",
            "retrain_type": "full" if full else "incremental",
            "events_processed": 0,
            "duration_ms": 0.0,
            "reason": reason,
            "timestamp": utc_iso(self._clock()),
        }
        if self.model_updater is None:
            return {**base, "error": "no model updater connected to this monitor"}
        try:
            result = self.model_updater.trigger_retraining(reason=reason, force_full_retrain=full)
        except Exception as exc:  # the caller gets a result, never the updater's exception
            log.exception("model updater raised during retraining")
            return {**base, "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(result, Mapping):
            return {**base, "error": f"model updater returned {type(result).__name__}, not a dict"}
        return dict(result)

    def trigger_retraining(
        self, reason: str = "manual", force_full_retrain: bool = False
    ) -> dict[str, Any]:
        """Ask the connected updater to retrain now; returns its result dict.

        Without an updater the result has ``success: False`` and an ``error``.
        Never raises. The retrain starts the checker's cooldown.
        """
        if self.model_updater is None:
            return self._call_updater(reason, force_full_retrain)
        self._retrain(self._clock(), reason, force_full_retrain, "manual")
        return dict(self._last_retrain or {})

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Start the background checker (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="autoretrain-monitor", daemon=True)
        self._thread.start()
        log.info(
            "Performance monitor started (window %s min, check every %s s, auto-retraining %s)",
            self.window_size_minutes,
            self.settings.check_interval_seconds,
            "on" if self.enable_auto_retraining and self.model_updater is not None else "off",
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the checker and join it; deliver queued events if this monitor owns the sink."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._owns_sink and self._sink is not None:
            self._sink.close(timeout)

    def close(self) -> None:
        """Stop, and remove this monitor's metrics from its registry."""
        self.stop()
        for collector in (self._metrics, self._collector):
            with contextlib.suppress(KeyError):  # already closed
                self.registry.unregister(collector)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.check_interval_seconds):
            try:
                self.check()
            except Exception:  # outermost loop: log, count, keep checking
                self._checker_errors += 1
                log.exception("performance check failed")

    # -- serving ---------------------------------------------------------

    def serve_metrics(self, port: int = 9108, addr: str = "0.0.0.0") -> Any:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` in a background thread.

        Returns the server; ``server.server_port`` is the port (useful with 0),
        ``server.shutdown()`` stops it.
        """
        server, _ = serve(self.wsgi_app(), addr, port)
        return server

    def wsgi_app(self) -> Callable[..., Any]:
        """The same endpoints as a WSGI app, for the orchestrator's own server."""
        return metrics_app(self.registry)
