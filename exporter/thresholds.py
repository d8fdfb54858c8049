"""The one thresholds file: the limits the monitor checks and the alert rules encode.

The same YAML file feeds :class:`~exporter.PerformanceMonitor` (its
``alert_thresholds`` defaults) and the Prometheus rule generator, so the
in-process checker and Prometheus agree on what "degraded" means. See
``prometheus/thresholds.yml`` for the annotated reference file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AlertSettings",
    "EscalationSettings",
    "Hysteresis",
    "LoopSettings",
    "MonitorSettings",
    "Scope",
    "Thresholds",
    "ThresholdsConfig",
    "load_thresholds",
]

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d))+$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# One PromQL label matcher (name, operator, double-quoted value).
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"^({_MATCHER}(,{_MATCHER})*)?$")
# Labels the rules themselves aggregate by or add; a kept label of that name would clash.
_RESERVED_LABELS = frozenset({"agent", "le", "alertname", "severity", "retrain", "model_type"})


def _ratio(section: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{section}.{key} must be a number in [0, 1], got {value!r}")
    return float(value)


def _positive(section: str, key: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{section}.{key} must be a finite number {bound}, got {value!r}")
    return float(value)


def _duration(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _DURATION.match(value):
        raise ValueError(
            f"{section}.{key} must be a Prometheus duration such as '30s', '2m' or '1h', "
            f"got {value!r}"
        )
    return value


def _check_keys(section: str, data: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{section} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"{section}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    return data


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class Thresholds:
    """When an agent or the system counts as degraded.

    ``accuracy_critical`` is the level below which a retrain is full rather
    than incremental.
    """

    accuracy_min: float = 0.70
    success_rate_min: float = 0.80
    error_rate_max: float = 0.15
    latency_p95_max_ms: float = 5000.0
    accuracy_critical: float = 0.50

    def __post_init__(self) -> None:
        for key in ("accuracy_min", "success_rate_min", "error_rate_max", "accuracy_critical"):
            _ratio("thresholds", key, getattr(self, key))
        _positive("thresholds", "latency_p95_max_ms", self.latency_p95_max_ms)
        if self.accuracy_critical > self.accuracy_min:
            raise ValueError(
                f"thresholds.accuracy_critical ({self.accuracy_critical}) must not exceed "
                f"accuracy_min ({self.accuracy_min})"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], section: str = "thresholds") -> Thresholds:
        """Build from a mapping of overrides merged over the defaults."""
        data = _check_keys(section, data, _names(cls))
        return cls(**{**asdict(cls()), **data})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Hysteresis:
    """How far back past its threshold a value must go before a firing alert clears."""

    accuracy: float = 0.03
    success_rate: float = 0.03
    error_rate: float = 0.03
    latency_p95_ms: float = 500.0

    def __post_init__(self) -> None:
        for key in ("accuracy", "success_rate", "error_rate"):
            _ratio("hysteresis", key, getattr(self, key))
        _positive("hysteresis", "latency_p95_ms", self.latency_p95_ms, allow_zero=True)


@dataclass(frozen=True)
class AlertSettings:
    """Prometheus alert rule settings: how long a condition must hold, over what window."""

    for_: str = "2m"
    rate_window: str = "5m"
    min_runs_per_second: float = 0.0
    # Where each alert's runbook lives; {alertname} is replaced by the alert's name.
    runbook_url: str = "docs/runbooks/{alertname}.md"

    def __post_init__(self) -> None:
        _duration("alerts", "for", self.for_)
        _duration("alerts", "rate_window", self.rate_window)
        _positive("alerts", "min_runs_per_second", self.min_runs_per_second, allow_zero=True)
        url = self.runbook_url
        if (
            not isinstance(url, str)
            or "{alertname}" not in url
            or re.search(r"\{(?!alertname\})|(?<!\{alertname)\}", url)
            or re.search(r"\s", url)
        ):
            raise ValueError(
                "alerts.runbook_url must be a URL pattern with {alertname} and no other "
                "placeholder or space, such as "
                "'https://example.org/autoretrain/docs/runbooks/{alertname}.md', "
                f"got {url!r}"
            )

    def runbook(self, alertname: str) -> str:
        """The runbook URL of ``alertname``."""
        return self.runbook_url.replace("{alertname}", alertname)


@dataclass(frozen=True)
class LoopSettings:
    """The alerts that watch the loop itself (exporter, webhook, updater, Alertmanager)."""

    for_: str = "5m"
    no_events_for: str = "30m"
    failures_window: str = "15m"
    consumer_lag_max_events: float = 10000.0

    def __post_init__(self) -> None:
        _duration("loop", "for", self.for_)
        _duration("loop", "no_events_for", self.no_events_for)
        _duration("loop", "failures_window", self.failures_window)
        _positive("loop", "consumer_lag_max_events", self.consumer_lag_max_events)


@dataclass(frozen=True)
class EscalationSettings:
    """When retrains that did not help call a person (the ``escalation`` section).

    ``grace``: how long retrain alerts may keep firing after an
    alert-triggered retrain finished before a person is called
    (``AutoretrainRetrainDidNotRecover``). ``unhelpful_retrains``: this many
    measured retrains in a row unchanged or worse call a person
    (``AutoretrainRetrainsNotHelping``).
    """

    grace: str = "30m"
    unhelpful_retrains: int = 3

    def __post_init__(self) -> None:
        _duration("escalation", "grace", self.grace)
        value = self.unhelpful_retrains
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"escalation.unhelpful_retrains must be an integer >= 1, got {value!r}"
            )


def _selector(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _SELECTOR.match(value):
        raise ValueError(
            f"{section}.{key} must be PromQL label matchers such as "
            f"'job=\"autoretrain-exporter\"' (comma-separated, empty for none), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Scope:
    """Which series of a shared Prometheus the rules read, and which labels they keep.

    Each selector is the label matchers (without braces) of one component's
    series; ``keep_labels`` are the labels (``cluster``, ``env``) that tell
    one deployment from another: every aggregation keeps them, so two
    environments scraped by one Prometheus are two signals, two alerts and
    two retrains.
    """

    exporter: str = 'job="autoretrain-exporter"'
    webhook: str = 'job="autoretrain-webhook"'
    alertmanager: str = 'job="alertmanager"'
    keep_labels: tuple[str, ...] = ("cluster", "env")

    def __post_init__(self) -> None:
        for key in ("exporter", "webhook", "alertmanager"):
            _selector("scope", key, getattr(self, key))
        labels = self.keep_labels
        if not isinstance(labels, tuple) or not all(
            isinstance(x, str) and _LABEL_NAME.match(x) and not x.startswith("__")
            for x in labels
        ):
            raise ValueError(
                f"scope.keep_labels must be a list of label names, got {labels!r}"
            )
        clash = sorted(set(labels) & _RESERVED_LABELS)
        if clash or len(set(labels)) != len(labels):
            raise ValueError(
                f"scope.keep_labels must be distinct and not one of the rules' own labels "
                f"({', '.join(sorted(_RESERVED_LABELS))}), got {list(labels)!r}"
            )

    def matchers(self, component: str, *more: str) -> str:
        """The selector of ``component`` plus ``more`` matchers, inside braces."""
        parts = [m for m in (getattr(self, component), *more) if m]
        return "{" + ", ".join(parts) + "}" if parts else ""


@dataclass(frozen=True)
class MonitorSettings:
    """The in-process checker of :class:`~exporter.PerformanceMonitor`."""

    check_interval_seconds: float = 5.0
    min_runs: int = 20
    cooldown_seconds: float = 600.0
    full_retrain_grace_seconds: float = 900.0

    def __post_init__(self) -> None:
        _positive("monitor", "check_interval_seconds", self.check_interval_seconds)
        _positive("monitor", "cooldown_seconds", self.cooldown_seconds, allow_zero=True)
        _positive(
            "monitor",
            "full_retrain_grace_seconds",
            self.full_retrain_grace_seconds,
            allow_zero=True,
        )
        if (
            isinstance(self.min_runs, bool)
            or not isinstance(self.min_runs, int)
            or self.min_runs < 1
        ):
            raise ValueError(f"monitor.min_runs must be an integer >= 1, got {self.min_runs!r}")


@dataclass(frozen=True)
class ThresholdsConfig:
    """Everything the thresholds file holds."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    scope: Scope = field(default_factory=Scope)
    loop: LoopSettings = field(default_factory=LoopSettings)
    escalation: EscalationSettings = field(default_factory=EscalationSettings)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ThresholdsConfig:
        data = _check_keys("thresholds file", data or {}, _names(cls))
        alerts = dict(
            _check_keys(
                "alerts",
                data.get("alerts", {}),
                ("for", "rate_window", "min_runs_per_second", "runbook_url"),
            )
        )
        if "for" in alerts:
            alerts["for_"] = alerts.pop("for")
        loop = dict(
            _check_keys(
                "loop",
                data.get("loop", {}),
                ("for", "no_events_for", "failures_window", "consumer_lag_max_events"),
            )
        )
        if "for" in loop:
            loop["for_"] = loop.pop("for")
        return cls(
            thresholds=Thresholds.from_mapping(data.get("thresholds", {})),
            hysteresis=Hysteresis(
                **_check_keys("hysteresis", data.get("hysteresis", {}), _names(Hysteresis))
            ),
            alerts=AlertSettings(**alerts),
            monitor=MonitorSettings(
                **_check_keys("monitor", data.get("monitor", {}), _names(MonitorSettings))
            ),
            scope=_scope(_check_keys("scope", data.get("scope", {}), _names(Scope))),
            loop=LoopSettings(**loop),
            escalation=EscalationSettings(
                **_check_keys(
                    "escalation", data.get("escalation", {}), _names(EscalationSettings)
                )
            ),
        )


def _scope(data: Mapping[str, Any]) -> Scope:
    data = dict(data)
    if isinstance(data.get("keep_labels"), list):  # YAML has lists, the dataclass tuples
        data["keep_labels"] = tuple(data["keep_labels"])
    return Scope(**data)


def load_thresholds(path: str | Path) -> ThresholdsConfig:
    """Read and validate a thresholds file.

    Raises ``ValueError`` naming the file, the key and what is allowed; a
    missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    try:
        return ThresholdsConfig.from_mapping(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
