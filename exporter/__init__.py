"""autoretrain exporter: per-agent performance metrics for Prometheus.

The public API: :class:`PerformanceMonitor` (the library an orchestrator
embeds), :func:`init_performance_monitor`, the thresholds file loader, the
outcome-event contract and the event sinks.
"""

from __future__ import annotations

from typing import Any

from .accuracy import score_accuracy
from .alerts import Alert
from .bus import EmbeddedBus, EventSink
from .events import InvalidEvent, decode_event, encode_event, validate_event
from .kafka_sink import KafkaSink
from .metrics import AgentMetrics
from .monitor import PerformanceMonitor
from .thresholds import Thresholds, ThresholdsConfig, load_thresholds
from .window import AgentWindowMetrics, AgentWindowStats, SystemMetrics, WindowStats

__all__ = [
    "AgentMetrics",
    "AgentWindowMetrics",
    "AgentWindowStats",
    "Alert",
    "EmbeddedBus",
    "EventSink",
    "InvalidEvent",
    "KafkaSink",
    "PerformanceMonitor",
    "SystemMetrics",
    "Thresholds",
    "ThresholdsConfig",
    "WindowStats",
    "decode_event",
    "encode_event",
    "get_performance_monitor",
    "init_performance_monitor",
    "load_thresholds",
    "score_accuracy",
    "validate_event",
]

_default: dict[str, PerformanceMonitor] = {}


def init_performance_monitor(**kwargs: Any) -> PerformanceMonitor:
    """Create the process's default monitor (the original API), replacing any previous one.

    Unless ``registry`` is given, its metrics go to prometheus_client's
    global ``REGISTRY``, so an existing ``/metrics`` endpoint shows them.
    """
    from prometheus_client import REGISTRY

    previous = _default.pop("monitor", None)
    if previous is not None:
        previous.close()
    kwargs.setdefault("registry", REGISTRY)
    monitor = _default["monitor"] = PerformanceMonitor(**kwargs)
    return monitor


def get_performance_monitor() -> PerformanceMonitor | None:
    """The default monitor made by :func:`init_performance_monitor`, if any."""
    return _default.get("monitor")
