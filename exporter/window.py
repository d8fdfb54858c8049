"""The monitor's sliding window of recent runs and accuracy records, and its statistics.

"Metrics" in this package means Prometheus collectors; what the window
yields are statistics (:class:`WindowStats`, :class:`AgentWindowStats`).
The old names ``SystemMetrics`` and ``AgentWindowMetrics`` remain as aliases.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .effect import Figures, Outcomes
from .events import RUN_STATUSES

__all__ = [
    "AgentWindowMetrics",
    "AgentWindowStats",
    "SlidingWindow",
    "SystemMetrics",
    "WindowStats",
]

_SUCCESS = RUN_STATUSES.index("success")
_ERRORS = (RUN_STATUSES.index("error"), RUN_STATUSES.index("timeout"))


@dataclass
class AgentWindowStats:
    """One agent's figures over the window. Ratios are in 0..1, ``None`` without data."""

    agent_name: str
    total_runs: int = 0
    successful_runs: int = 0
    failed_runs: int = 0
    error_runs: int = 0
    success_rate: float | None = None
    error_rate: float | None = None
    avg_accuracy: float | None = None
    accuracy_records: int = 0
    latency_p95_ms: float | None = None
    avg_latency_ms: float | None = None
    total_tokens: int = 0
    total_cost: float = 0.0
    task_types: dict[str, int] = field(default_factory=dict)


@dataclass
class WindowStats(AgentWindowStats):
    """The whole system's figures over the window, with the per-agent breakdown.

    ``error_rate`` counts ``error`` and ``timeout`` runs; ``success_rate`` the
    ``success`` runs; ``failed_runs`` every run that did not succeed.
    """

    agent_name: str = "*"
    window_seconds: float = 0.0
    window_start: float = 0.0
    window_end: float = 0.0
    agents: dict[str, AgentWindowStats] = field(default_factory=dict)


class _Acc:
    __slots__ = ("acc_n", "acc_sum", "cost", "durations", "statuses", "task_types", "tokens")

    def __init__(self) -> None:
        self.statuses = [0, 0, 0, 0]
        self.durations: list[float] = []
        self.tokens = 0
        self.cost = 0.0
        self.acc_n = 0
        self.acc_sum = 0.0
        self.task_types: dict[str, int] = {}

    def fill(self, out: AgentWindowStats) -> AgentWindowStats:
        runs = sum(self.statuses)
        out.total_runs = runs
        out.successful_runs = self.statuses[_SUCCESS]
        out.failed_runs = runs - out.successful_runs
        out.error_runs = sum(self.statuses[i] for i in _ERRORS)
        if runs:
            out.success_rate = out.successful_runs / runs
            out.error_rate = out.error_runs / runs
            durations = np.asarray(self.durations)
            out.latency_p95_ms = float(np.percentile(durations, 95))
            out.avg_latency_ms = float(durations.mean())
        out.accuracy_records = self.acc_n
        if self.acc_n:
            out.avg_accuracy = self.acc_sum / self.acc_n
        out.total_tokens = self.tokens
        out.total_cost = self.cost
        out.task_types = dict(self.task_types)
        return out


class SlidingWindow:
    """Runs and accuracy records of the last ``window_seconds``.

    At most ``max_records`` of each kind are kept (the oldest go first), so a
    traffic spike cannot grow the monitor's memory without bound.
    Not thread-safe: the monitor holds its lock around every call.
    """

    def __init__(self, window_seconds: float, max_records: int = 100_000) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records!r}")
        self.window_seconds = float(window_seconds)
        self.max_records = max_records
        # (ts, agent, status_index, duration_ms, tokens, cost, task_type)
        self._runs: deque[tuple[float, str, int, float, int, float, str]] = deque()
        # (ts, agent, accuracy, task_type)
        self._accuracy: deque[tuple[float, str, float, str]] = deque()

    def add_run(
        self,
        ts: float,
        agent: str,
        status_index: int,
        duration_ms: float,
        tokens: int,
        cost: float,
        task_type: str,
    ) -> None:
        runs = self._runs
        runs.append((ts, agent, status_index, duration_ms, tokens, cost, task_type))
        if len(runs) > self.max_records or runs[0][0] < ts - self.window_seconds:
            self._expire(runs, ts)

    def add_accuracy(self, ts: float, agent: str, accuracy: float, task_type: str) -> None:
        acc = self._accuracy
        acc.append((ts, agent, accuracy, task_type))
        if len(acc) > self.max_records or acc[0][0] < ts - self.window_seconds:
            self._expire(acc, ts)

    def _expire(self, q: deque[Any], now: float) -> None:
        cutoff = now - self.window_seconds
        while q and (len(q) > self.max_records or q[0][0] < cutoff):
            q.popleft()

    def __len__(self) -> int:
        return len(self._runs) + len(self._accuracy)

    def stats(self, now: float, since: float | None = None) -> WindowStats:
        """Aggregate the window as of ``now``; with ``since``, only records at or after it."""
        self._expire(self._runs, now)
        self._expire(self._accuracy, now)
        start = (
            now - self.window_seconds if since is None else max(since, now - self.window_seconds)
        )
        total = _Acc()
        per_agent: dict[str, _Acc] = {}
        for ts, agent, status, duration, tokens, cost, task_type in self._runs:
            if ts < start:
                continue
            a = per_agent.get(agent)
            if a is None:
                a = per_agent[agent] = _Acc()
            for x in (a, total):
                x.statuses[status] += 1
                x.durations.append(duration)
                x.tokens += tokens
                x.cost += cost
                x.task_types[task_type] = x.task_types.get(task_type, 0) + 1
        for ts, agent, accuracy, _task_type in self._accuracy:
            if ts < start:
                continue
            a = per_agent.get(agent)
            if a is None:
                a = per_agent[agent] = _Acc()
            a.acc_n += 1
            a.acc_sum += accuracy
            total.acc_n += 1
            total.acc_sum += accuracy
        out = WindowStats(window_seconds=self.window_seconds, window_start=start, window_end=now)
        total.fill(out)
        out.agents = {name: a.fill(AgentWindowStats(name)) for name, a in sorted(per_agent.items())}
        return out

    def outcomes(self, start: float, end: float) -> Outcomes:
        """Runs, successes and accuracy records timed in ``[start, end)``, for the
        system and per task type (what a retrain's effect is measured on)."""
        counts: dict[str, list[float]] = {}
        for ts, _agent, status, _d, _t, _c, task_type in self._runs:
            if start <= ts < end:
                c = counts.setdefault(task_type, [0, 0, 0, 0.0, 0.0])
                c[0] += 1
                c[1] += status == _SUCCESS
        for ts, _agent, accuracy, task_type in self._accuracy:
            if start <= ts < end:
                c = counts.setdefault(task_type, [0, 0, 0, 0.0, 0.0])
                c[2] += 1
                c[3] += accuracy
                c[4] += accuracy * accuracy
        by_task = {k: Figures(int(c[0]), int(c[1]), int(c[2]), float(c[3]), float(c[4]))
                   for k, c in sorted(counts.items())}
        return Outcomes(sum(by_task.values(), Figures()), by_task)


# The names of the original API (``get_system_metrics`` returns a WindowStats).
SystemMetrics = WindowStats
AgentWindowMetrics = AgentWindowStats
