"""``PerformanceMonitor``: the library an orchestrator embeds.

The front of four collaborators, each with one job: the
:class:`~exporter.recorder.Recorder` records every agent run and accuracy
record as Prometheus metrics and in a sliding window and publishes them as
outcome events (the hot path); the :class:`~exporter.checker.Checker`
compares the window with the thresholds, keeps the alert log and asks the
retrainer to retrain, on a :class:`~exporter.background.BackgroundLoop`;
:func:`~exporter.report.build_report` writes the report; :mod:`exporter.http`
serves ``/metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .accuracy import score_accuracy
from .alerts import Alert
from .background import BackgroundLoop
from .build_info import register_build_info
from .bus import EventSink
from .checker import Checker, Retrainer
from .effect import VERDICTS, EffectSettings, EffectTracker
from .http import DEFAULT_ADDRESS, metrics_app, serve
from .kafka_security import KafkaSecurity, security_from_environ
from .kafka_sink import KafkaSink
from .recorder import Recorder
from .report import build_report
from .set_aside import SetAsideSource, SetAsideWatch
from .thresholds import MonitorSettings, Thresholds, ThresholdsConfig, load_thresholds
from .window import AgentWindowStats, WindowStats

__all__ = ["PerformanceMonitor"]

log = logging.getLogger(__name__)


class _MonitorCollector(Collector):
    """The monitor's own health: events published or dropped, checker errors, retrains."""

    def __init__(self, recorder: Recorder, checker: Checker) -> None:
        self._recorder = recorder
        self._checker = checker

    def collect(self) -> Iterator[Metric]:
        stats = self._recorder.event_stats()
        events = CounterMetricFamily(
            "autoretrain_monitor_events",
            "Outcome events handed to the event sink, by result.",
            labels=("result",),
        )
        events.add_metric(("published",), stats["published"])
        events.add_metric(("dropped",), stats["dropped"])
        yield events
        errors = CounterMetricFamily(
            "autoretrain_monitor_checker_errors", "Exceptions caught in the checker thread."
        )
        errors.add_metric((), self._checker.errors)
        yield errors
        retrains = CounterMetricFamily(
            "autoretrain_monitor_retrains_triggered",
            "Retrains requested by the monitor, by type and trigger.",
            labels=("retrain_type", "trigger"),
        )
        for (rtype, trigger), n in sorted(self._checker.retrains.items()):
            retrains.add_metric((rtype, trigger), n)
        yield retrains
        pending = GaugeMetricFamily(
            "autoretrain_monitor_events_pending", "Outcome events waiting in the event sink."
        )
        pending.add_metric((), stats["pending"])
        yield pending
        effects = self._checker.effects
        if effects is not None:
            measured = CounterMetricFamily(
                "autoretrain_monitor_retrain_effects",
                "Retrains of this monitor whose effect on the outcomes was measured, by verdict.",
                labels=("verdict",),
            )
            for verdict in VERDICTS:
                measured.add_metric((verdict,), effects.counts[verdict])
            yield measured
            streak = GaugeMetricFamily(
                "autoretrain_monitor_retrains_unhelpful_streak",
                "Measured retrains in a row, newest back, that left the outcomes unchanged "
                "or worse.",
            )
            streak.add_metric((), effects.unhelpful_streak)
            yield streak


#: Prefix of the environment variables the monitor's Kafka producer reads its security from.
MONITOR_ENV_PREFIX = "AUTORETRAIN_MONITOR_"

def _event_sink(
    event_sink: EventSink | None, kafka_servers: str | None, kafka_topic: str, model_updater: Any,
    kafka_security: KafkaSecurity | None = None,
) -> tuple[EventSink | None, str, bool]:
    """The sink, its kind for ``get_stats`` and whether the monitor owns (closes) it."""
    if event_sink is not None:
        return event_sink, type(event_sink).__name__, False
    if kafka_servers:
        if kafka_security is None:
            # The orchestrator's environment: the one way to secure the
            # producer without changing the code that builds the monitor.
            kafka_security = security_from_environ(MONITOR_ENV_PREFIX)
        return (KafkaSink(kafka_servers, topic=kafka_topic, kafka_security=kafka_security),
                "kafka", True)
    # The model_updater shortcut: an updater in this process reads its own
    # embedded bus, so that bus is where the events go.
    bus = getattr(model_updater, "event_bus", None)
    if bus is not None:
        return bus, "embedded", False
    # Nobody in this process would read the events: publishing them would
    # only fill a queue. Metrics and the checker still work.
    return None, "none", False


class PerformanceMonitor:
    """Per-agent performance monitoring with automatic retraining.

    Record with ``record_agent_run(run_id, agent_name, agent_type, status,
    duration_ms, tokens_used=0, cost=0.0, *, task_type="default",
    context=None)`` (documented at :meth:`exporter.recorder.Recorder.record_run`)
    and :meth:`record_accuracy`.

    Parameters
    ----------
    window_size_minutes
        Length of the sliding window behind ``get_system_metrics``.
    enable_auto_retraining
        Let the checker ask the retrainer to retrain.
    model_updater
        A shortcut for an updater in this process (a
        :class:`~autoretrain.webhook.RealTimeModelUpdater`): it is the
        ``retrainer`` unless one is given, and its ``event_bus`` (when it has
        one) the ``event_sink`` unless an event sink or Kafka is given.
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
        Publish events to Kafka (a :class:`~exporter.kafka_sink.KafkaSink`
        the monitor owns and closes) instead of the embedded bus.
    kafka_security
        How that producer connects (SASL, TLS, a client certificate; see
        :class:`~exporter.kafka_security.KafkaSecurity`). None: from the
        ``AUTORETRAIN_MONITOR_KAFKA_*`` environment variables (e.g.
        ``AUTORETRAIN_MONITOR_KAFKA_SECURITY_PROTOCOL``,
        ``..._SASL_PASSWORD`` or ``..._SASL_PASSWORD_FILE``), PLAINTEXT when
        none is set; invalid ones raise ``ValueError`` here.
    event_sink
        Where outcome events go: any :class:`~exporter.bus.EventSink` (wins
        over Kafka and the updater's bus; the caller closes it).
    retrainer
        What the checker and :meth:`trigger_retraining` call: anything with
        ``trigger_retraining(reason=..., force_full_retrain=...)`` returning a dict.
    max_agents
        Distinct ``agent`` label values before new ones collapse into "other".
    check_interval_seconds, min_runs, cooldown_seconds, full_retrain_grace_seconds
        Checker settings (override the thresholds file's ``monitor`` section).
    retrain_effect
        How each retrain's effect is measured (:class:`~exporter.effect.EffectSettings`);
        by default a window of 15 minutes, or half the monitor's window when
        that is shorter. ``window_seconds + settle_seconds`` must fit in the
        monitor's window, which holds the events it is measured on.
    set_aside
        Returns the ``(task_type, agent)`` pairs the selection model holds
        set aside, e.g. ``updater.set_aside_pairs`` of an in-process
        :class:`~autoretrain.webhook.RealTimeModelUpdater`. Each check then
        alerts when a pair is set aside or restored, and :meth:`get_stats`
        and :meth:`generate_report` list them: once routing moves away from
        a broken agent its runs leave the window and its per-agent alerts
        stop, so without this a library deployment (no Prometheus, no
        ``AgentSetAside``) would not learn it is broken. None: not watched.
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
        kafka_security: KafkaSecurity | None = None,
        event_sink: EventSink | None = None,
        retrainer: Retrainer | None = None,
        max_agents: int = 500,
        check_interval_seconds: float | None = None,
        min_runs: int | None = None,
        cooldown_seconds: float | None = None,
        full_retrain_grace_seconds: float | None = None,
        max_window_records: int = 100_000,
        max_alerts: int = 1000,
        retrain_effect: EffectSettings | None = None,
        set_aside: SetAsideSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(window_size_minutes, int | float) and window_size_minutes > 0):
            raise ValueError(f"window_size_minutes must be > 0, got {window_size_minutes!r}")
        for name, value in (("model_updater", model_updater), ("retrainer", retrainer)):
            if value is not None and not callable(getattr(value, "trigger_retraining", None)):
                raise ValueError(
                    f"{name} must have a trigger_retraining(reason, force_full_retrain) method"
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

        sink, self.event_sink_kind, self._owns_sink = _event_sink(
            event_sink, kafka_servers, kafka_topic, model_updater, kafka_security
        )
        self._recorder = Recorder(
            self.registry,
            window_seconds=window_size_minutes * 60.0,
            max_window_records=max_window_records,
            max_agents=max_agents,
            sink=sink,
            clock=clock,
        )
        window_seconds = window_size_minutes * 60.0
        if retrain_effect is None:
            half = window_seconds / 2
            retrain_effect = EffectSettings(
                window_seconds=min(900.0, half), settle_seconds=min(30.0, half)
            )
        if retrain_effect.window_seconds + retrain_effect.settle_seconds > window_seconds:
            raise ValueError(
                f"retrain_effect window_seconds + settle_seconds "
                f"({retrain_effect.window_seconds + retrain_effect.settle_seconds:g} s) must fit "
                f"in the monitor's window ({window_seconds:g} s), which holds the events "
                "the effect is measured on"
            )
        self._effects = EffectTracker(self._recorder.outcomes, retrain_effect, clock)
        self._set_aside = None if set_aside is None else SetAsideWatch(set_aside)
        self._checker = Checker(
            self._recorder.window_stats,
            lambda: self.thresholds,
            self.settings,
            retrainer if retrainer is not None else model_updater,
            clock,
            max_alerts,
            self._effects,
            self._set_aside,
        )
        self._loop = BackgroundLoop(
            "autoretrain-monitor", self._check_when_due, on_error=self._check_failed
        )
        self._collector = _MonitorCollector(self._recorder, self._checker)
        self.registry.register(self._collector)
        self._build_info = register_build_info(self.registry)
        # The recording hot path is the recorder's method itself: a
        # delegating call would add about a tenth to its cost (bench/recording.py).
        #: ``record_agent_run(run_id, agent_name, agent_type, status, duration_ms,
        #: tokens_used=0, cost=0.0, *, task_type="default", context=None)``:
        #: record one finished agent run (:meth:`Recorder.record_run`).
        self.record_agent_run = self._recorder.record_run

    # -- recording (record_agent_run is set in __init__) -------------------

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

        Pass ``accuracy`` (0..1) or both outcomes, scored as
        :func:`exporter.accuracy.score_accuracy` defines. Returns the accuracy.
        ``agent_type`` defaults to the type of the agent's recorded runs.
        """
        if accuracy is None:
            if predicted_outcome is None or actual_outcome is None:
                raise ValueError("pass accuracy=, or both predicted_outcome and actual_outcome")
            accuracy = score_accuracy(predicted_outcome, actual_outcome)
        return self._recorder.record_accuracy(
            agent_name, task_id, accuracy, feedback_source, task_type, context, agent_type
        )

    # -- reading ----------------------------------------------------------

    @property
    def event_sink(self) -> EventSink | None:
        """Where this monitor's outcome events go (``None``: nowhere)."""
        return self._recorder.sink

    def get_system_metrics(self, since: float | None = None) -> WindowStats:
        """Statistics over the window (or since ``since``), with ``agents`` per agent."""
        return self._recorder.window_stats(since)

    def get_agent_metrics(self, agent_name: str) -> AgentWindowStats | None:
        """One agent's statistics over the window, ``None`` if it has none."""
        return self.get_system_metrics().agents.get(agent_name)

    def get_alerts(self, limit: int = 10) -> list[Alert]:
        """The newest ``limit`` alerts, newest first."""
        return self._checker.alerts.newest(limit)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds.from_mapping(self.alert_thresholds, "alert_thresholds")

    def get_stats(self) -> dict[str, Any]:
        checker = self._checker
        events = self._recorder.event_stats()
        return {
            "running": self._loop.running,
            "auto_retraining_enabled": self.enable_auto_retraining,
            "model_updater_connected": checker.retrainer is not None,
            "window_size_minutes": self.window_size_minutes,
            **self._recorder.counts(),
            "alerts_total": len(checker.alerts),
            "active_violations": checker.active_violations,
            "checks": checker.checks,
            "checker_errors": checker.errors,
            "retrains_triggered": sum(checker.retrains.values()),
            "last_retrain": checker.last_retrain,
            "event_sink": self.event_sink_kind,
            "events_published": events["published"],
            "events_dropped": events["dropped"],
            "events_pending": events["pending"],
            "alert_thresholds": dict(self.alert_thresholds),
            # Did the retrains help? (exporter.effect): newest first.
            "retrain_effects": self._effects.last(5),
            "retrain_effect_counts": dict(self._effects.counts),
            "retrain_effects_pending": self._effects.pending,
            "retrains_unhelpful_streak": self._effects.unhelpful_streak,
            # Pairs the selection model set aside, as of the last check (None: not watched).
            "set_aside": None if self._set_aside is None else [
                p.as_dict() for p in self._set_aside.current()],
            "set_aside_total": None if self._set_aside is None else self._set_aside.total,
            "set_aside_source_errors": None if self._set_aside is None else self._set_aside.errors,
        }

    def generate_report(self, include_agents: bool = True) -> dict[str, Any]:
        """A health report of the window: score, violations, recommendations.

        ``health_score`` is documented in :func:`exporter.report.health_score`
        (``None`` when the window holds no data); ``status`` is ``no_data``,
        ``healthy``, ``degraded`` or ``critical``.
        """
        return build_report(
            self.get_system_metrics(),
            self.thresholds,
            self.settings.min_runs,
            now=self._clock(),
            window_size_minutes=self.window_size_minutes,
            recent_alerts=self.get_alerts(10),
            monitor_stats=self.get_stats(),
            include_agents=include_agents,
            retrain_effects=self._effects.last(5),
            effect_recommendation=self._effects.recommendation(),
            set_aside=None if self._set_aside is None else self._set_aside.current(),
        )

    # -- checking and retraining -------------------------------------------

    def check(self) -> list[Alert]:
        """One checker pass: compare the window with the thresholds, alert, retrain.

        The background thread calls this every ``check_interval_seconds``;
        simulations call it directly. Returns the alerts raised by this pass.
        """
        return self._checker.check(auto_retrain=self.enable_auto_retraining)

    def trigger_retraining(
        self, reason: str = "manual", force_full_retrain: bool = False
    ) -> dict[str, Any]:
        """Ask the retrainer to retrain now; returns its result dict.

        Without a retrainer the result has ``success: False`` and an ``error``.
        Never raises. The retrain starts the checker's cooldown.
        """
        return self._checker.trigger_retraining(reason, force_full_retrain)

    # -- lifecycle -------------------------------------------------------

    def _check_when_due(self) -> None:
        # Wait first, then check: the first pass comes one interval after start.
        if not self._loop.stopping.wait(self.settings.check_interval_seconds):
            self.check()

    def _check_failed(self, exc: BaseException, retry_in: float) -> None:
        self._checker.errors += 1
        log.error("performance check failed", exc_info=exc)

    def start(self) -> None:
        """Start the background checker (idempotent)."""
        if self._loop.running:
            return
        self._loop.start()
        log.info(
            "Performance monitor started (window %s min, check every %s s, auto-retraining %s)",
            self.window_size_minutes,
            self.settings.check_interval_seconds,
            "on" if self.enable_auto_retraining and self._checker.retrainer is not None else "off",
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the checker and join it; deliver queued events if this monitor owns the sink."""
        self._loop.stop(timeout)
        if self._owns_sink and self._recorder.sink is not None:
            self._recorder.sink.close(timeout)

    def close(self) -> None:
        """Stop, and remove this monitor's metrics from its registry."""
        self.stop()
        collectors: list[Collector] = [self._recorder.metrics, self._collector]
        if self._build_info is not None:
            collectors.append(self._build_info)
        for collector in collectors:
            with contextlib.suppress(KeyError):  # already closed
                self.registry.unregister(collector)

    # -- serving ---------------------------------------------------------

    def serve_metrics(self, port: int = 9108, addr: str = DEFAULT_ADDRESS) -> Any:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` in a background thread.

        On loopback (127.0.0.1) unless ``addr`` says otherwise (``"0.0.0.0"``
        for every interface, e.g. in a container). The server closes idle
        connections and bounds their number (:class:`~.http.ServerLimits`).

        Returns the server; ``server.server_port`` is the port (useful with 0),
        ``server.shutdown()`` stops it.
        """
        server, _ = serve(self.wsgi_app(), addr, port)
        return server

    def wsgi_app(self) -> Callable[..., Any]:
        """The same endpoints as a WSGI app, for the orchestrator's own server."""
        return metrics_app(self.registry, fast=[self._recorder.metrics])
