"""The exporter's Prometheus metrics, as one custom collector.

Recording a run is on the orchestrator's hot path, so the state is kept in
plain per-series slot objects updated under one lock, and turned into
metric families only when Prometheus scrapes. This is several times cheaper
than ``Counter.labels(...).inc()`` per call (see ``bench/``), and it lets
the number of distinct agents be bounded in one place: beyond
``max_agents`` a new agent is recorded as ``agent="other"`` and counted in
``autoretrain_agent_series_collapsed_total``. The two free-text labels beside it,
``agent_type`` and ``feedback_source``, are bounded per agent label the same
way (``other`` beyond the bound) and counted in
``autoretrain_agent_label_values_collapsed_total{label}``.

Series (docs/DESIGN.md):

- ``autoretrain_agent_runs_total{agent,agent_type,status}``
- ``autoretrain_agent_run_duration_seconds{agent,agent_type}`` (histogram, a 5 s bucket)
- ``autoretrain_agent_tokens_total{agent}``, ``autoretrain_agent_cost_total{agent}``
- ``autoretrain_agent_prediction_accuracy_ratio{agent}`` (histogram on 0..1)
- ``autoretrain_agent_accuracy_records_total{agent,feedback_source}``
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import accumulate

from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .events import RUN_STATUSES, OutcomeEvent

__all__ = [
    "ACCURACY_BUCKETS",
    "DURATION_BUCKETS_SECONDS",
    "OTHER_AGENT",
    "AgentMetrics",
]

DURATION_BUCKETS_SECONDS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
ACCURACY_BUCKETS: tuple[float, ...] = (
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.95,
    1.0,
)
OTHER_AGENT = "other"
# The feedback_source label is bounded too: it comes from callers' free text.
MAX_FEEDBACK_SOURCES = 20
OTHER_SOURCE = "other"
# agent_type likewise: one agent reporting thousands of types would otherwise
# multiply its run series (status x histogram buckets) by thousands.
MAX_AGENT_TYPES = 20
OTHER_TYPE = "other"

_STATUS_INDEX = {s: i for i, s in enumerate(RUN_STATUSES)}
_HELP = {
    "autoretrain_agent_runs": "Agent runs by final status.",
    "autoretrain_agent_run_duration_seconds": "Duration of agent runs, in seconds.",
    "autoretrain_agent_tokens": "LLM tokens used by agent runs.",
    "autoretrain_agent_cost": "Cost of agent runs, in the platform's currency.",
    "autoretrain_agent_prediction_accuracy_ratio": (
        "Accuracy of agent outputs against real outcomes (0..1)."
    ),
    "autoretrain_agent_accuracy_records": "Accuracy records received, by feedback source.",
    "autoretrain_agent_series_collapsed": (
        'Records attributed to agent="other" because max_agents agents were already exported.'
    ),
    "autoretrain_agent_label_values_collapsed": (
        'Records whose agent_type or feedback_source was exported as "other" because the '
        "agent already had the maximum number of distinct values of that label."
    ),
}


def _check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    b = tuple(float(x) for x in buckets)
    if not b or list(b) != sorted(set(b)) or not all(math.isfinite(x) for x in b):
        raise ValueError(
            f"{name} must be finite, strictly increasing and non-empty, got {buckets!r}"
        )
    return b


class _RunSeries:
    __slots__ = ("buckets", "cost", "duration_sum", "lines", "statuses", "tokens")

    def __init__(self, n_buckets: int) -> None:
        self.lines: tuple[str, str] | None = None  # render() templates
        self.statuses = [0, 0, 0, 0]
        self.buckets = [0] * (n_buckets + 1)  # last slot: above the highest bound (+Inf)
        self.duration_sum = 0.0
        # Tokens and cost are exported per agent; keeping them here and
        # summing at scrape time saves a lookup per recorded run.
        self.tokens = 0
        self.cost = 0.0


class _AgentSeries:
    __slots__ = ("acc_buckets", "acc_sum", "lines", "source_lines", "sources")

    def __init__(self, n_buckets: int) -> None:
        self.lines: str | None = None  # render() template
        self.source_lines: dict[str, str] = {}
        self.acc_buckets = [0] * (n_buckets + 1)
        self.acc_sum = 0.0
        self.sources: dict[str, int] = {}


def _escape(value: str) -> str:
    """A label value as the text exposition format quotes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(family: str, help_text: str, kind: str, openmetrics: bool) -> str:
    """``# HELP`` and ``# TYPE`` lines as each format writes them.

    The text format 0.0.4 names a counter by its sample (``x_total``) and
    escapes backslash and newline in help; OpenMetrics names the family
    (``x``) and escapes double quotes too.
    """
    help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    if openmetrics:
        help_text = help_text.replace('"', '\\"')
    elif kind == "counter":
        family += "_total"
    return f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n"


def _template(prefixes: Iterable[str], value_formats: Iterable[str]) -> str:
    """One ``%``-format string for a series' sample lines: ``prefix value\n`` each.

    A scrape then formats a whole series in one C-level ``%`` instead of a
    Python-level f-string per sample (the render's per-sample cost).
    """
    return "".join(f"{prefix.replace('%', '%%')}{fmt}\n"
                   for prefix, fmt in zip(prefixes, value_formats, strict=True))


def _run_templates(agent: str, agent_type: str, bounds: list[str]) -> tuple[str, str]:
    """The templates of one (agent, agent_type) series: run counts by status (ints),
    and the duration histogram (cumulative bucket counts, ``_count``, ``_sum``)."""
    lbl = f'agent="{_escape(agent)}",agent_type="{_escape(agent_type)}"'
    status = _template([f'autoretrain_agent_runs_total{{{lbl},status="{st}"}} '
                        for st in RUN_STATUSES], ["%d"] * len(RUN_STATUSES))
    family = "autoretrain_agent_run_duration_seconds"
    duration = _template([*(f"{family}_bucket{{{lbl},{b}" for b in bounds),
                          f"{family}_count{{{lbl}}} ", f"{family}_sum{{{lbl}}} "],
                         ["%d"] * (len(bounds) + 1) + ["%r"])
    return status, duration


def _accuracy_template(agent: str, bounds: list[str]) -> str:
    """The template of one agent's accuracy histogram (buckets, ``_count``, ``_sum``)."""
    lbl = f'agent="{_escape(agent)}"'
    family = "autoretrain_agent_prediction_accuracy_ratio"
    return _template([*(f"{family}_bucket{{{lbl},{b}" for b in bounds),
                      f"{family}_count{{{lbl}}} ", f"{family}_sum{{{lbl}}} "],
                     ["%d"] * (len(bounds) + 1) + ["%r"])


def _cumulative(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    acc = 0
    for bound, n in zip(bounds, counts, strict=False):
        acc += n
        out.append((floatToGoString(bound), acc))
    out.append(("+Inf", acc + counts[-1]))
    return out


class AgentMetrics(Collector):
    """Per-agent run, token, cost and accuracy metrics.

    Parameters
    ----------
    registry
        Where to register; ``None`` leaves the collector unregistered.
    max_agents
        Distinct agent label values exported before new agents collapse into
        ``agent="other"``.
    duration_buckets, accuracy_buckets
        Histogram upper bounds (seconds, and 0..1).
    lock
        A lock shared with the caller: the monitor records runs, window and
        metrics under one lock and calls the ``*_locked`` methods.
    before_collect
        Called (without the lock held) before every collect or render: the
        monitor applies the runs it has queued, so a scrape sees them all.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        max_agents: int = 500,
        duration_buckets: Sequence[float] = DURATION_BUCKETS_SECONDS,
        accuracy_buckets: Sequence[float] = ACCURACY_BUCKETS,
        lock: threading.Lock | None = None,
        before_collect: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(max_agents, bool) or not isinstance(max_agents, int) or max_agents < 1:
            raise ValueError(f"max_agents must be an integer >= 1, got {max_agents!r}")
        self.max_agents = max_agents
        self.duration_buckets = _check_buckets("duration_buckets", duration_buckets)
        self.accuracy_buckets = _check_buckets("accuracy_buckets", accuracy_buckets)
        self._lock = lock if lock is not None else threading.Lock()
        self._before_collect = before_collect
        self._labels: dict[str, str] = {}  # agent name -> exported label value
        self._runs: dict[tuple[str, str], _RunSeries] = {}
        self._agents: dict[str, _AgentSeries] = {}
        self._collapsed = 0
        self._types: dict[str, int] = {}  # agent label -> distinct agent_type values
        self._values_collapsed = {"agent_type": 0, "feedback_source": 0}
        self._apart: ContextVar[bool] = ContextVar(f"agent_metrics_apart_{id(self)}", default=False)
        if registry is not None:
            registry.register(self)

    def _label(self, agent: str) -> str:
        label = self._labels.get(agent)
        if label is None:
            if len(self._labels) < self.max_agents:
                label = self._labels[agent] = agent
            else:
                label = OTHER_AGENT
        if label is OTHER_AGENT:
            self._collapsed += 1
        return label

    def record_run(
        self,
        agent: str,
        agent_type: str,
        status: str,
        duration_seconds: float,
        tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        """Count one run. Arguments must already be valid (the monitor checks them)."""
        with self._lock:
            self.record_run_locked(
                agent, agent_type, _STATUS_INDEX[status], duration_seconds, tokens, cost
            )

    def record_run_locked(
        self,
        agent: str,
        agent_type: str,
        status_index: int,
        duration_seconds: float,
        tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        """:meth:`record_run` for a caller that holds the shared lock.

        ``status_index`` is the status's position in ``RUN_STATUSES``.
        """
        label = self._labels.get(agent) or self._label(agent)
        series = self._runs.get((label, agent_type))
        if series is None:
            series = self._new_run_series(label, agent_type)
        series.statuses[status_index] += 1
        series.buckets[bisect_left(self.duration_buckets, duration_seconds)] += 1
        series.duration_sum += duration_seconds
        series.tokens += tokens
        series.cost += cost

    def _new_run_series(self, label: str, agent_type: str) -> _RunSeries:
        types = self._types.get(label, 0)
        if types >= MAX_AGENT_TYPES:
            self._values_collapsed["agent_type"] += 1
            series = self._runs.get((label, OTHER_TYPE))
            if series is not None:
                return series
            agent_type = OTHER_TYPE
        else:
            self._types[label] = types + 1
        series = self._runs[(label, agent_type)] = _RunSeries(len(self.duration_buckets))
        return series

    def record_accuracy(self, agent: str, feedback_source: str, accuracy: float) -> None:
        """Count one accuracy record (``accuracy`` in 0..1, already validated)."""
        with self._lock:
            self.record_accuracy_locked(agent, feedback_source, accuracy)

    def record_accuracy_locked(self, agent: str, feedback_source: str, accuracy: float) -> None:
        """:meth:`record_accuracy` for a caller that holds the shared lock."""
        label = self._label(agent)
        per_agent = self._agents.get(label)
        if per_agent is None:
            per_agent = self._agents[label] = _AgentSeries(len(self.accuracy_buckets))
        per_agent.acc_buckets[bisect_left(self.accuracy_buckets, accuracy)] += 1
        per_agent.acc_sum += accuracy
        sources = per_agent.sources
        if feedback_source not in sources and len(sources) >= MAX_FEEDBACK_SOURCES:
            feedback_source = OTHER_SOURCE
            self._values_collapsed["feedback_source"] += 1
        sources[feedback_source] = sources.get(feedback_source, 0) + 1

    def record_events(self, events: Iterable[OutcomeEvent]) -> None:
        """Count validated outcome events (runs and accuracy records), under one lock hold."""
        record_run, record_accuracy = self.record_run_locked, self.record_accuracy_locked
        with self._lock:
            for event in events:
                if event["kind"] == "run":
                    record_run(
                        event["agent_name"],
                        event["agent_type"],
                        _STATUS_INDEX[event["status"]],
                        event["duration_ms"] / 1000.0,
                        event["tokens_used"],
                        event["cost"],
                    )
                else:
                    record_accuracy(
                        event["agent_name"], event["feedback_source"], event["accuracy"]
                    )

    def remove_agent(self, agent: str) -> None:
        """Drop every series of an agent that went away (frees its label slot)."""
        with self._lock:
            label = self._labels.pop(agent, None)
            if label is None:
                return
            self._agents.pop(label, None)
            self._types.pop(label, None)
            for key in [k for k in self._runs if k[0] == label]:
                del self._runs[key]

    @property
    def collapsed(self) -> int:
        """Records attributed to ``agent="other"`` so far."""
        return self._collapsed

    @property
    def values_collapsed(self) -> dict[str, int]:
        """Records whose ``agent_type`` / ``feedback_source`` was exported as ``other``."""
        return dict(self._values_collapsed)

    def _families(
        self,
    ) -> tuple[
        CounterMetricFamily,
        HistogramMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            CounterMetricFamily(
                "autoretrain_agent_runs",
                _HELP["autoretrain_agent_runs"],
                labels=("agent", "agent_type", "status"),
            ),
            HistogramMetricFamily(
                "autoretrain_agent_run_duration_seconds",
                _HELP["autoretrain_agent_run_duration_seconds"],
                labels=("agent", "agent_type"),
            ),
            CounterMetricFamily(
                "autoretrain_agent_tokens", _HELP["autoretrain_agent_tokens"], labels=("agent",)
            ),
            CounterMetricFamily(
                "autoretrain_agent_cost", _HELP["autoretrain_agent_cost"], labels=("agent",)
            ),
            HistogramMetricFamily(
                "autoretrain_agent_prediction_accuracy_ratio",
                _HELP["autoretrain_agent_prediction_accuracy_ratio"],
                labels=("agent",),
            ),
            CounterMetricFamily(
                "autoretrain_agent_accuracy_records",
                _HELP["autoretrain_agent_accuracy_records"],
                labels=("agent", "feedback_source"),
            ),
            CounterMetricFamily(
                "autoretrain_agent_series_collapsed", _HELP["autoretrain_agent_series_collapsed"]
            ),
            CounterMetricFamily(
                "autoretrain_agent_label_values_collapsed",
                _HELP["autoretrain_agent_label_values_collapsed"],
                labels=("label",),
            ),
        )

    def describe(self) -> list[Metric]:
        # Names only: registering must not walk the state.
        return list(self._families())

    @contextmanager
    def rendered_apart(self) -> Iterator[None]:
        """While active, in this thread, :meth:`collect` yields nothing.

        For a ``/metrics`` handler that serves :meth:`render`'s output and
        lets prometheus_client encode the rest of the registry.
        """
        token = self._apart.set(True)
        try:
            yield
        finally:
            self._apart.reset(token)

    def collect(self) -> Iterator[Metric]:
        if self._apart.get():
            return
        if self._before_collect is not None:
            self._before_collect()
        runs, duration, tokens, cost, accuracy, records, collapsed, values = self._families()
        with self._lock:
            per_agent: dict[str, list[float]] = {}
            for (agent, agent_type), s in self._runs.items():
                for status, n in zip(RUN_STATUSES, s.statuses, strict=True):
                    runs.add_metric((agent, agent_type, status), n)
                duration.add_metric(
                    (agent, agent_type),
                    _cumulative(s.buckets, self.duration_buckets),
                    s.duration_sum,
                )
                totals = per_agent.setdefault(agent, [0, 0.0])
                totals[0] += s.tokens
                totals[1] += s.cost
            for agent, (n_tokens, total_cost) in per_agent.items():
                tokens.add_metric((agent,), n_tokens)
                cost.add_metric((agent,), total_cost)
            for agent, a in self._agents.items():
                if a.sources:
                    accuracy.add_metric(
                        (agent,), _cumulative(a.acc_buckets, self.accuracy_buckets), a.acc_sum
                    )
                    for source, n in a.sources.items():
                        records.add_metric((agent, source), n)
            collapsed.add_metric((), self._collapsed)
            for name, n in self._values_collapsed.items():
                values.add_metric((name,), n)
        yield from (runs, duration, tokens, cost, accuracy, records, collapsed, values)

    def render(self, openmetrics: bool = False) -> str:
        """The exposition of :meth:`collect`, built directly: text format 0.0.4,
        or OpenMetrics 1.0 without the closing ``# EOF`` (the caller ends the body).

        Scrapes of many agents are dominated by per-sample formatting in
        ``generate_latest``; here each series caches its label prefixes once,
        so a scrape is a walk over counters and one ``join``. The samples
        equal those of prometheus_client's encoders over :meth:`collect`
        (tested); the two formats differ only in the family headers.
        """
        om = openmetrics
        d_bounds = [f'le="{floatToGoString(b)}"}} ' for b in self.duration_buckets] + [
            'le="+Inf"} '
        ]
        a_bounds = [f'le="{floatToGoString(b)}"}} ' for b in self.accuracy_buckets] + [
            'le="+Inf"} '
        ]
        # One list of text per family, in exposition order, each opened by its header.
        runs, duration, tokens, cost, accuracy, records = (
            [_header(family, _HELP[family], kind, om)] for family, kind in (
                ("autoretrain_agent_runs", "counter"),
                ("autoretrain_agent_run_duration_seconds", "histogram"),
                ("autoretrain_agent_tokens", "counter"),
                ("autoretrain_agent_cost", "counter"),
                ("autoretrain_agent_prediction_accuracy_ratio", "histogram"),
                ("autoretrain_agent_accuracy_records", "counter"),
            )
        )
        if self._before_collect is not None:
            self._before_collect()
        with self._lock:
            per_agent: dict[str, list[float]] = {}
            for (agent, agent_type), s in self._runs.items():
                templates = s.lines
                if templates is None:
                    templates = s.lines = _run_templates(agent, agent_type, d_bounds)
                status_tpl, duration_tpl = templates
                runs.append(status_tpl % tuple(s.statuses))
                cumulative = list(accumulate(s.buckets))  # the +Inf bucket is _count
                duration.append(duration_tpl % (*cumulative, cumulative[-1], s.duration_sum))
                totals = per_agent.get(agent)
                if totals is None:
                    per_agent[agent] = [s.tokens, s.cost]
                else:
                    totals[0] += s.tokens
                    totals[1] += s.cost
            for agent, (n_tokens, total_cost) in per_agent.items():
                esc = _escape(agent)
                tokens.append(f'autoretrain_agent_tokens_total{{agent="{esc}"}} {n_tokens}\n')
                cost.append(
                    f'autoretrain_agent_cost_total{{agent="{esc}"}} {float(total_cost)!r}\n'
                )
            for agent, a in self._agents.items():
                if not a.sources:
                    continue
                template = a.lines
                if template is None:
                    template = a.lines = _accuracy_template(agent, a_bounds)
                cumulative = list(accumulate(a.acc_buckets))
                accuracy.append(template % (*cumulative, cumulative[-1], a.acc_sum))
                for source, n in a.sources.items():
                    line = a.source_lines.get(source)
                    if line is None:
                        line = a.source_lines[source] = (
                            f'autoretrain_agent_accuracy_records_total{{agent="{_escape(agent)}",'
                            f'feedback_source="{_escape(source)}"}} '
                        )
                    records.append(f"{line}{n}\n")
            collapsed = (
                _header(
                    "autoretrain_agent_series_collapsed",
                    _HELP["autoretrain_agent_series_collapsed"],
                    "counter",
                    om,
                )
                + f"autoretrain_agent_series_collapsed_total {self._collapsed}\n"
            )
            values = _header(
                "autoretrain_agent_label_values_collapsed",
                _HELP["autoretrain_agent_label_values_collapsed"],
                "counter",
                om,
            ) + "".join(
                f'autoretrain_agent_label_values_collapsed_total{{label="{name}"}} {n}\n'
                for name, n in self._values_collapsed.items()
            )
        return "".join(
            [
                "".join(runs),
                "".join(duration),
                "".join(tokens),
                "".join(cost),
                "".join(accuracy),
                "".join(records),
                collapsed,
                values,
            ]
        )
