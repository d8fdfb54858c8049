"""``PerformanceMonitor.generate_report``: the report, its health score and recommendations."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .alerts import Alert, Violation, find_violations
from .set_aside import SetAsidePair
from .thresholds import Thresholds
from .timefmt import utc_iso
from .window import AgentWindowStats, WindowStats

__all__ = ["HEALTH_WEIGHTS", "build_report", "health_score", "recommendations",
           "set_aside_recommendations"]

HEALTH_WEIGHTS = {"accuracy": 0.40, "success_rate": 0.30, "error_rate": 0.15, "latency_p95": 0.15}
VIOLATION_PENALTY = 10.0


def health_score(m: AgentWindowStats, t: Thresholds, violations: list[Violation]) -> float | None:
    """A 0-100 summary of the figures, ``None`` without any data.

    Each figure with data gives a component in 0..1: accuracy is the mean
    accuracy, success is the success rate, errors is ``1 - error_rate``,
    latency is ``min(1, latency_p95_max_ms / p95)``. The score is
    ``100 * sum(w * c) / sum(w)`` over the components present, with weights
    accuracy 0.40, success 0.30, errors 0.15, latency 0.15, minus 10 for each
    threshold crossed (``violations`` of this entity), clamped to 0..100.
    """
    parts: list[tuple[float, float]] = []
    if m.avg_accuracy is not None:
        parts.append((HEALTH_WEIGHTS["accuracy"], m.avg_accuracy))
    if m.success_rate is not None:
        parts.append((HEALTH_WEIGHTS["success_rate"], m.success_rate))
    if m.error_rate is not None:
        parts.append((HEALTH_WEIGHTS["error_rate"], 1.0 - m.error_rate))
    if m.latency_p95_ms is not None:
        ratio = t.latency_p95_max_ms / m.latency_p95_ms if m.latency_p95_ms > 0 else 1.0
        parts.append((HEALTH_WEIGHTS["latency_p95"], min(1.0, ratio)))
    if not parts:
        return None
    score = 100.0 * sum(w * c for w, c in parts) / sum(w for w, _ in parts)
    score -= VIOLATION_PENALTY * len(violations)
    return round(min(100.0, max(0.0, score)), 1)


_ACTIONS = {
    "accuracy": (
        "retrain the agent-selection model (incremental; full below the critical level) "
        "so its task types move to better agents, and review the agent's prompts or model"
    ),
    "success_rate": "check the agent's failures in its logs and route its task types elsewhere",
    "error_rate": "check the agent's errors and timeouts (upstream API, limits, time-outs)",
    "latency_p95": "check the agent's slow runs (model size, retries, upstream latency)",
}


def recommendations(
    system: AgentWindowStats,
    agents: dict[str, AgentWindowStats],
    violations: list[Violation] | None,
    min_runs: int,
) -> list[str]:
    """What to do, derived from the crossed thresholds, worst first."""
    if violations is None:
        return [
            f"Not enough data for a verdict: {system.total_runs} runs and "
            f"{system.accuracy_records} accuracy records in the window, {min_runs} needed."
        ]
    out: list[str] = []
    ordered = sorted(
        violations, key=lambda v: (v.agent is not None, v.level != "critical", v.metric)
    )
    for v in ordered:
        where = ""
        if v.agent is not None and v.agent in agents:
            tasks = ", ".join(sorted(agents[v.agent].task_types)) or "its tasks"
            where = f" (task types: {tasks})"
        out.append(f"{v.describe()}{where}: {_ACTIONS[v.metric]}.")
    if system.accuracy_records == 0 and system.total_runs:
        out.append(
            "No accuracy records in the window: call record_accuracy() when real outcomes are "
            "known, or accuracy drift goes unseen."
        )
    if not out:
        out.append("All figures within thresholds: no action needed.")
    return out


def set_aside_recommendations(pairs: list[SetAsidePair]) -> list[str]:
    """One line per agent the selection model holds set aside (oldest first)."""
    by_agent: dict[str, list[SetAsidePair]] = {}
    for p in pairs:
        by_agent.setdefault(p.agent, []).append(p)
    return [
        f"Agent {agent} is set aside by the selection model on "
        f"{', '.join(p.task_type for p in ps)} (since {utc_iso(min(p.since for p in ps))}): "
        "it was clearly worse than its history, traffic is routed around it and retried "
        "with backoff; check the agent itself (its per-agent figures may be silent for "
        "lack of traffic)."
        for agent, ps in by_agent.items()
    ]


def build_report(
    stats: WindowStats,
    thresholds: Thresholds,
    min_runs: int,
    *,
    now: float,
    window_size_minutes: float,
    recent_alerts: list[Alert],
    monitor_stats: dict[str, Any],
    include_agents: bool = True,
    retrain_effects: list[dict[str, Any]] | None = None,
    effect_recommendation: str | None = None,
    set_aside: list[SetAsidePair] | None = None,
) -> dict[str, Any]:
    """The report of ``generate_report`` from the window's statistics (a pure function).

    ``retrain_effects`` (newest first) are reported as they are;
    ``effect_recommendation`` (retrains stopped helping) comes first among
    the recommendations: it asks for a person, whatever the window says.
    ``set_aside`` (None: not watched) are the pairs the selection model
    holds set aside; each agent among them gets a recommendation, since its
    window may no longer hold enough runs for a violation of its own.

    ``status`` is ``no_data``, ``healthy``, ``degraded`` or ``critical``
    (from the system-level violations); ``health_score`` is
    :func:`health_score` of the system, and of each agent under ``agents``.
    """
    violations = find_violations(stats, thresholds, min_runs, stats.agents)
    system_violations = [v for v in violations or [] if v.agent is None]
    if violations is None:
        status = "no_data"
    elif any(v.level == "critical" for v in system_violations):
        status = "critical"
    else:
        status = "degraded" if system_violations else "healthy"
    system = asdict(stats)
    system.pop("agents")
    report: dict[str, Any] = {
        "generated_at": utc_iso(now),
        "window_size_minutes": window_size_minutes,
        "status": status,
        "health_score": health_score(stats, thresholds, system_violations),
        "system": system,
        "thresholds": thresholds.as_dict(),
        "violations": [asdict(v) for v in violations or []],
        "recommendations": [
            *([effect_recommendation] if effect_recommendation else []),
            *set_aside_recommendations(set_aside or []),
            *recommendations(stats, stats.agents, violations, min_runs),
        ],
        "retrain_effects": list(retrain_effects or []),
        "set_aside": None if set_aside is None else [p.as_dict() for p in set_aside],
        "recent_alerts": [asdict(a) for a in recent_alerts],
        "stats": monitor_stats,
    }
    if include_agents:
        report["agents"] = {
            name: {
                **asdict(a),
                "health_score": health_score(
                    a, thresholds, [v for v in violations or [] if v.agent == name]
                ),
            }
            for name, a in stats.agents.items()
        }
    return report
