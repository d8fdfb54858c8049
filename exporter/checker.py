"""The monitor's checker: window statistics against thresholds, the alert log, retrains.

:class:`Checker` runs one pass at a time (:meth:`Checker.check`): it asks
for the window's statistics, finds the crossed thresholds
(:func:`~exporter.alerts.find_violations`), logs an alert when a violation
starts or ends, and lets :class:`~exporter.alerts.RetrainPolicy` decide
whether to call the retrainer. It owns no thread: the monitor runs it on a
:class:`~exporter.background.BackgroundLoop`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, Protocol

from .alerts import Alert, RetrainPolicy, Violation, find_violations
from .effect import UNHELPFUL, EffectTracker
from .retrain_types import MODEL_TYPE, RetrainType
from .set_aside import SetAsideWatch
from .thresholds import MonitorSettings, Thresholds
from .timefmt import utc_iso
from .window import WindowStats

__all__ = ["AlertLog", "Checker", "Retrainer"]

log = logging.getLogger(__name__)


class Retrainer(Protocol):
    """What the checker asks for a retrain: a ``RealTimeModelUpdater``, or anything alike."""

    def trigger_retraining(self, reason: str, force_full_retrain: bool) -> Mapping[str, Any]:
        """Retrain now; return the result dict (``success``, ``retrain_type``, ...)."""
        ...


class AlertLog:
    """The newest ``max_alerts`` alerts, thread-safe."""

    def __init__(self, max_alerts: int = 1000) -> None:
        self._alerts: deque[Alert] = deque(maxlen=max_alerts)
        self._lock = threading.Lock()

    def add(self, level: str, message: str, details: dict[str, Any], now: float) -> Alert:
        alert = Alert(level=level, message=message, details=details, timestamp=utc_iso(now))
        with self._lock:
            self._alerts.append(alert)
        return alert

    def newest(self, limit: int) -> list[Alert]:
        """The newest ``limit`` alerts, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
        with self._lock:
            alerts = list(self._alerts)
        return alerts[::-1][:limit]

    def __len__(self) -> int:
        return len(self._alerts)


class Checker:
    """One checker pass at a time: alert on crossed thresholds, retrain when the policy says.

    Parameters
    ----------
    window_stats
        ``f(since) -> WindowStats``: the window's statistics, only records
        at or after ``since`` when it is not None.
    thresholds
        Returns the thresholds to judge by (read at every pass).
    settings
        ``min_runs``, cooldown and grace period of the retrain policy.
    retrainer
        Asked to retrain; ``None``: alerts only, and manual retrains fail.
    clock
        Returns Unix seconds.
    max_alerts
        Alerts kept in the log.
    effects
        Measures each retrain's effect on the outcomes (checked every pass);
        None: not measured.
    set_aside
        Watches the pairs the selection model set aside (polled every pass):
        an alert when one is set aside or restored, so a person learns an
        agent is broken after routing moved away from it and its per-agent
        alerts went quiet. None: not watched.
    """

    def __init__(
        self,
        window_stats: Callable[[float | None], WindowStats],
        thresholds: Callable[[], Thresholds],
        settings: MonitorSettings,
        retrainer: Retrainer | None,
        clock: Callable[[], float],
        max_alerts: int = 1000,
        effects: EffectTracker | None = None,
        set_aside: SetAsideWatch | None = None,
    ) -> None:
        self._window_stats = window_stats
        self.effects = effects
        self.set_aside = set_aside
        self._thresholds = thresholds
        self.settings = settings
        self.retrainer = retrainer
        self._clock = clock
        self.alerts = AlertLog(max_alerts)
        self._policy = RetrainPolicy(settings)
        self._lock = threading.RLock()  # one pass or retrain at a time
        self._active: dict[tuple[str, str | None], Violation] = {}
        self.checks = 0
        self.errors = 0
        self.retrains: dict[tuple[str, str], int] = {}
        self.last_retrain: dict[str, Any] | None = None

    @property
    def active_violations(self) -> int:
        return len(self._active)

    def check(self, auto_retrain: bool = True) -> list[Alert]:
        """One pass; retrains only when ``auto_retrain``. Returns the alerts it raised."""
        with self._lock:
            now = self._clock()
            stats = self._window_stats(self._policy.judge_since())
            violations = find_violations(
                stats, self._thresholds(), self.settings.min_runs, stats.agents
            )
            raised: list[Alert] = self._measure_effects(now)
            raised += self._watch_set_aside(now)
            self.checks += 1
            if violations is not None:
                current = {v.key: v for v in violations}
                for key, v in current.items():
                    if key not in self._active:
                        raised.append(self.alerts.add(v.level, v.describe(), asdict(v), now))
                        log.warning("%s", v.describe())
                for key, v in list(self._active.items()):
                    if key not in current:
                        who = "System" if v.agent is None else f"Agent {v.agent}"
                        msg = f"{who} {v.metric.replace('_', ' ')} back within its threshold"
                        details: dict[str, Any] = {"metric": v.metric, "agent": v.agent}
                        aside = self.set_aside.agents() if self.set_aside is not None else {}
                        if v.agent in aside:
                            # Most likely not recovered: routed around, too few runs to judge.
                            msg = (f"Agent {v.agent} {v.metric.replace('_', ' ')} no longer "
                                   "judged or back within its threshold; the selection model "
                                   f"still holds it set aside on {', '.join(aside[v.agent])}")
                            details["set_aside_on"] = aside[v.agent]
                        raised.append(self.alerts.add("info", msg, details, now))
                        log.info("%s", msg)
                self._active = current
            decision = self._policy.decide(now, violations)
            if decision is not None and auto_retrain and self.retrainer is not None:
                raised.append(
                    self._retrain(now, decision.reason, decision.force_full_retrain, "monitor")
                )
            return raised

    def trigger_retraining(self, reason: str, force_full_retrain: bool) -> dict[str, Any]:
        """A manual retrain; starts the policy's cooldown. Never raises."""
        with self._lock:
            if self.retrainer is None:
                return self._call_retrainer(reason, force_full_retrain)
            self._retrain(self._clock(), reason, force_full_retrain, "manual")
            return dict(self.last_retrain or {})

    def _retrain(self, now: float, reason: str, full: bool, trigger: str) -> Alert:
        retrain_type = RetrainType.of(full).value
        self._policy.record(now, retrain_type)
        key = (retrain_type, trigger)
        self.retrains[key] = self.retrains.get(key, 0) + 1
        log.warning("Retraining triggered (%s, by %s): %s", retrain_type, trigger, reason)
        started = self.effects.retrain_started() if self.effects is not None else None
        result = self._call_retrainer(reason, full)
        self.last_retrain = result
        if self.effects is not None and started is not None:
            self.effects.retrain_finished(
                started, trigger=trigger, retrain_type=retrain_type, reason=reason,
                outcome=result.get("result", "promoted" if result.get("promoted") else
                                   "rejected" if result.get("success") else "failed"))
        details = {"reason": reason, "result": result}
        if result.get("success"):
            log.info(
                "Retraining completed: %s events processed in %s ms, promoted=%s",
                result.get("events_processed"),
                result.get("duration_ms"),
                result.get("promoted"),
            )
            return self.alerts.add("info", f"Retraining ({retrain_type}) completed", details, now)
        if result.get("result") == "skipped":
            # Nothing to retrain on yet (e.g. too few events since the last
            # promotion): not a failure, and not worth an ERROR at every start.
            log.info("Retraining skipped: %s", result.get("error"))
            return self.alerts.add("info", f"Retraining ({retrain_type}) skipped", details, now)
        log.error("Retraining failed: %s", result.get("error"))
        return self.alerts.add("error", f"Retraining ({retrain_type}) failed", details, now)

    def _measure_effects(self, now: float) -> list[Alert]:
        """Measure the retrains whose after-window closed; one alert per effect, and a
        warning when the last retrains in a row did not help."""
        if self.effects is None:
            return []
        raised = []
        for entry in self.effects.check():
            effect = entry["effect"]
            delta = ", ".join(f"{k.replace('_', ' ')} {v:+.3f}"
                              for k, v in effect["delta"].items() if v is not None)
            message = (f"Retrain effect ({entry['retrain_type']}, by {entry['trigger']}): "
                       f"{effect['verdict'].replace('_', ' ')}" + (f" ({delta})" if delta else ""))
            log.info("%s", message)
            raised.append(self.alerts.add("info", message, entry, now))
            advice = self.effects.recommendation()
            if effect["verdict"] in UNHELPFUL and advice is not None:
                log.warning("%s", advice)
                raised.append(self.alerts.add(
                    "warning", "Retrains stopped helping: a person should look",
                    {"unhelpful_streak": self.effects.unhelpful_streak,
                     "recommendation": advice}, now))
        return raised

    def _watch_set_aside(self, now: float) -> list[Alert]:
        """One alert per pair the selection model set aside or restored since the last pass."""
        if self.set_aside is None:
            return []
        new, restored = self.set_aside.poll(now)
        raised = []
        for p in new:
            message = (f"Agent {p.agent} set aside on task type {p.task_type} by the selection "
                       "model: clearly worse than its history, routed around and retried later "
                       "(its per-agent alerts go quiet once it gets no traffic)")
            log.warning("%s", message)
            raised.append(self.alerts.add("warning", message, {
                "event": "set_aside", "agent": p.agent, "task_type": p.task_type,
                "times": p.times}, now))
        for task_type, agent in restored:
            message = (f"Agent {agent} back on task type {task_type}: the selection model's "
                       "retry found it well again")
            log.info("%s", message)
            raised.append(self.alerts.add("info", message, {
                "event": "restored", "agent": agent, "task_type": task_type}, now))
        return raised

    def _call_retrainer(self, reason: str, full: bool) -> dict[str, Any]:
        base = {
            "success": False,
            "model_type": MODEL_TYPE,
            "retrain_type": RetrainType.of(full).value,
            "events_processed": 0,
            "duration_ms": 0.0,
            "reason": reason,
            "timestamp": utc_iso(self._clock()),
        }
        if self.retrainer is None:
            return {**base, "error": "no model updater connected to this monitor"}
        try:
            result = self.retrainer.trigger_retraining(reason=reason, force_full_retrain=full)
        except Exception as exc:  # the caller gets a result, never the retrainer's exception
            log.exception("retrainer raised during retraining")
            return {**base, "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(result, Mapping):
            return {**base, "error": f"model updater returned {type(result).__name__}, not a dict"}
        return dict(result)
