"""Prometheus metrics of the webhook itself (the updater has its own, see
:mod:`webhook.updater.metrics`).

Label values are bounded: ``alertname`` comes from alert rules, not from a
closed list, so :class:`AlertnameLabels` keeps the first ``max_alertnames``
distinct names and counts any further one as ``other``; ``reason``,
``action``, ``status`` and ``endpoint`` come from fixed sets.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .alerts import ALERT_STATUSES
from .policy import Action

__all__ = ["OTHER", "REJECT_REASONS", "AlertnameLabels", "WebhookMetrics"]

#: Label value standing for every name beyond the bound.
OTHER = "other"
#: Why a request was refused (``autoretrain_webhook_requests_rejected_total{reason}``).
REJECT_REASONS = (
    "unauthorized",
    "payload_too_large",
    "unsupported_media_type",
    "invalid_json",
    "invalid_payload",
    "invalid_request",
    "not_found",
    "method_not_allowed",
    "rate_limited",
)
_MAX_NAME_LENGTH = 100


class AlertnameLabels:
    """Maps alert names to bounded label values (thread-safe)."""

    def __init__(self, max_names: int) -> None:
        if max_names < 1:
            raise ValueError(f"max_names must be >= 1, got {max_names!r}")
        self.max_names = max_names
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        # Control characters would be written raw into the exposition, and a lone
        # surrogate cannot be encoded at all (every later scrape would fail).
        if not name or len(name) > _MAX_NAME_LENGTH or not name.isprintable():
            return OTHER
        with self._lock:
            if name in self._known:
                return name
            if len(self._known) < self.max_names:
                self._known.add(name)
                return name
        return OTHER


class WebhookMetrics:
    """The webhook's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry, max_alertnames: int = 100) -> None:
        self.alertname = AlertnameLabels(max_alertnames)
        self.alerts = Counter(
            "autoretrain_webhook_alerts",
            "Alerts received from Alertmanager, by alertname (bounded; excess names "
            "are 'other'), alert status and the action the webhook took.",
            ["alertname", "status", "action"],
            registry=registry,
        )
        self.rejected = Counter(
            "autoretrain_webhook_requests_rejected",
            "Requests refused before any action, by reason.",
            ["reason"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "autoretrain_webhook_request_duration_seconds",
            "Time to answer an HTTP request, by route (unmatched paths are 'other').",
            ["endpoint", "method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.queued = Gauge(
            "autoretrain_webhook_retrain_queue_episodes",
            "Alert episodes waiting for a retrain (coalesced into one).",
            registry=registry,
        )
        self.cooldown_until = Gauge(
            "autoretrain_webhook_retrain_cooldown_until_timestamp_seconds",
            "Unix time before which no alert-triggered retrain starts (0: none).",
            registry=registry,
        )
        # Set by the controller (set_function): read at scrape time, so it
        # grows while a hung retrain holds the worker.
        self.retrain_running = Gauge(
            "autoretrain_webhook_retrain_running_seconds",
            "Age of the retrain in progress on the worker thread (0: none running).",
            registry=registry,
        )
        self.retrains_timed_out = Counter(
            "autoretrain_webhook_retrains_timed_out",
            "Retrains that ran past retrain_time_limit_seconds (recorded as timed_out).",
            registry=registry,
        )
        self.controller_errors = Counter(
            "autoretrain_webhook_controller_errors",
            "Unexpected errors caught by the retrain worker's loop.",
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        # Did the retrains help? (webhook.effects). New series: autoretrain_ prefix.
        self.retrain_finished = Gauge(
            "autoretrain_retrain_last_finished_timestamp_seconds",
            "Unix time the newest retrain of each trigger (alert, api, schedule) finished.",
            ["trigger"],
            registry=registry,
        )
        self.effects = Counter(
            "autoretrain_retrain_effects",
            "Retrains whose effect on the platform's outcomes was measured, by trigger and "
            "verdict (improved, unchanged, worse, not_enough_data).",
            ["trigger", "verdict"],
            registry=registry,
        )
        self.effect_before = Gauge(
            "autoretrain_retrain_effect_before_ratio",
            "The last measured retrain of each trigger: the system figure (success_rate, "
            "accuracy) over the window before it. Absent when too few events were counted.",
            ["trigger", "figure"],
            registry=registry,
        )
        self.effect_after = Gauge(
            "autoretrain_retrain_effect_after_ratio",
            "The last measured retrain of each trigger: the system figure over the window "
            "after it (same length). Absent when too few events were counted.",
            ["trigger", "figure"],
            registry=registry,
        )
        self.effect_delta = Gauge(
            "autoretrain_retrain_effect_delta_ratio",
            "The last measured retrain of each trigger: after minus before (may be negative). "
            "Absent when too few events were counted.",
            ["trigger", "figure"],
            registry=registry,
        )
        self.effect_measured = Gauge(
            "autoretrain_retrain_effect_measured_timestamp_seconds",
            "Unix time the last effect of each trigger was measured.",
            ["trigger"],
            registry=registry,
        )
        self.unhelpful_streak = Gauge(
            "autoretrain_retrains_unhelpful_streak",
            "Measured retrains in a row, newest back, that left the outcomes unchanged or "
            "worse (not_enough_data is skipped); 0 after one that improved them.",
            registry=registry,
        )

    def alert(self, alertname: str, status: str, action: Action) -> None:
        """Count one alert decision."""
        if status not in ALERT_STATUSES:  # parsed alerts never get here; keep labels closed
            status = OTHER
        self.alerts.labels(self.alertname(alertname), status, action.value).inc()
