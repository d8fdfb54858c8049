"""Threshold checks and the retrain policy of the in-process checker.

Pure functions and a small state machine: the monitor feeds them window
statistics and the clock, and acts on what they return. Kept apart from the
monitor so that each rule is tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .thresholds import MonitorSettings, Thresholds
from .window import AgentWindowStats

__all__ = [
    "RETRAIN_METRICS",
    "Alert",
    "RetrainDecision",
    "RetrainPolicy",
    "Violation",
    "find_violations",
]

# Latency is alert-only: the selection model learns success and accuracy, so
# retraining it cannot be expected to fix a slow agent.
RETRAIN_METRICS = ("accuracy", "success_rate", "error_rate")


@dataclass(frozen=True)
class Alert:
    """One entry of the monitor's alert log (``get_alerts``)."""

    level: str  # "info" | "warning" | "critical" | "error"
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    timestamp: str = ""


@dataclass(frozen=True)
class Violation:
    """A threshold crossed by the system (``agent is None``) or one agent."""

    metric: str  # "accuracy" | "success_rate" | "error_rate" | "latency_p95"
    value: float
    threshold: float
    level: str  # "warning" | "critical"
    agent: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.metric, self.agent)

    def describe(self) -> str:
        who = "System" if self.agent is None else f"Agent {self.agent}"
        if self.metric == "latency_p95":
            return (
                f"{who} p95 latency degraded to {self.value:.0f} ms "
                f"(threshold {self.threshold:.0f} ms)"
            )
        name = {"accuracy": "accuracy", "success_rate": "success rate", "error_rate": "error rate"}[
            self.metric
        ]
        return f"{who} {name} degraded to {self.value:.1%} (threshold {self.threshold:.1%})"


def _check(
    m: AgentWindowStats, t: Thresholds, min_runs: int, agent: str | None
) -> list[Violation] | None:
    has_runs = m.total_runs >= min_runs
    has_accuracy = m.accuracy_records >= min_runs
    if not (has_runs or has_accuracy):
        return None
    out: list[Violation] = []
    if has_accuracy and m.avg_accuracy is not None and m.avg_accuracy < t.accuracy_min:
        level = "critical" if m.avg_accuracy < t.accuracy_critical else "warning"
        out.append(Violation("accuracy", m.avg_accuracy, t.accuracy_min, level, agent))
    if has_runs:
        if m.success_rate is not None and m.success_rate < t.success_rate_min:
            out.append(
                Violation("success_rate", m.success_rate, t.success_rate_min, "warning", agent)
            )
        if m.error_rate is not None and m.error_rate > t.error_rate_max:
            out.append(Violation("error_rate", m.error_rate, t.error_rate_max, "warning", agent))
        if m.latency_p95_ms is not None and m.latency_p95_ms > t.latency_p95_max_ms:
            out.append(
                Violation("latency_p95", m.latency_p95_ms, t.latency_p95_max_ms, "warning", agent)
            )
    return out


def find_violations(
    stats: AgentWindowStats,
    thresholds: Thresholds,
    min_runs: int,
    agents: dict[str, AgentWindowStats] | None = None,
) -> list[Violation] | None:
    """Thresholds crossed by the system and, when given, by each agent.

    Returns ``None`` when the system has fewer than ``min_runs`` runs and
    fewer than ``min_runs`` accuracy records: too little data for a verdict,
    which is not the same as healthy. A figure with fewer than ``min_runs``
    records of its kind is not judged.
    """
    system = _check(stats, thresholds, min_runs, None)
    if system is None:
        return None
    for name, agent_stats in (agents or {}).items():
        system.extend(_check(agent_stats, thresholds, min_runs, name) or [])
    return system


@dataclass(frozen=True)
class RetrainDecision:
    retrain_type: str  # "incremental" | "full"
    reason: str

    @property
    def force_full_retrain(self) -> bool:
        return self.retrain_type == "full"


class RetrainPolicy:
    """When the checker retrains, and how.

    - Only system-level violations of :data:`RETRAIN_METRICS` retrain.
    - At most one retrain per ``cooldown_seconds`` (manual ones count too).
    - Incremental first; full when accuracy is below ``accuracy_critical``,
      or when the system is still degraded ``full_retrain_grace_seconds``
      after an incremental retrain of the same degradation episode.
    - After a retrain the monitor judges only records newer than it
      (:attr:`judge_since`), so evidence from before the retrain does not
      keep the episode alive.
    """

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.last_retrain_at: float | None = None
        self._incremental_at: float | None = None  # in the current episode

    def judge_since(self) -> float | None:
        return self.last_retrain_at

    def decide(self, now: float, violations: list[Violation] | None) -> RetrainDecision | None:
        if violations is None:  # not enough data since the last retrain: wait
            return None
        causes = [v for v in violations if v.agent is None and v.metric in RETRAIN_METRICS]
        if not causes:
            self._incremental_at = None  # episode over
            return None
        if (
            self.last_retrain_at is not None
            and now - self.last_retrain_at < self.settings.cooldown_seconds
        ):
            return None
        summary = "; ".join(v.describe() for v in causes)
        if any(v.level == "critical" for v in causes):
            return RetrainDecision("full", f"{summary}: below the critical level")
        if (
            self._incremental_at is not None
            and now - self._incremental_at >= self.settings.full_retrain_grace_seconds
        ):
            waited = now - self._incremental_at
            return RetrainDecision(
                "full", f"{summary}: still degraded {waited:.0f} s after an incremental retrain"
            )
        return RetrainDecision("incremental", summary)

    def record(self, now: float, retrain_type: str) -> None:
        """Note a retrain that was attempted (whatever its outcome)."""
        self.last_retrain_at = now
        if retrain_type == "incremental":
            if self._incremental_at is None:
                self._incremental_at = now
        else:
            self._incremental_at = None
