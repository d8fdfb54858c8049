"""The updater's counters and its typed status (:class:`UpdaterStatus`).

``RealTimeModelUpdater.get_metrics()`` returns ``UpdaterStatus.as_dict()``:
the JSON-ready dict with the keys it has always had. Inside the webhook
(readiness, stats) the status is read by attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

__all__ = ["Counters", "UpdaterStatus"]


@dataclass
class Counters:
    """What the updater counted since it was built (guarded by the model lock)."""

    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    invalid_by_fault: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    update_seconds_total: float = 0.0
    last_update_seconds: float | None = None
    last_update_timestamp: float | None = None
    errors: int = 0
    last_error: str | None = None
    saves: int = 0


@dataclass(frozen=True)
class UpdaterStatus:
    """A snapshot of the updater's state (field order is the dict's key order)."""

    running: bool
    model_loaded: bool
    model_version: int
    update_strategy: str
    source: str  # "kafka" | "embedded"
    event_buffer_size: int
    event_buffer_capacity: int
    events_consumed: int
    events_applied: int
    duplicates: int
    invalid: int
    invalid_by_fault: dict[str, int]
    batches: int
    avg_update_time_ms: float | None
    last_update_time_ms: float | None
    last_update_timestamp: str | None
    pending_events: int
    events_seen: int
    agents: int
    task_types: int
    last_retrain: dict[str, Any] | None
    consumer_lag: int | None
    kafka_offsets: dict[int, int]
    errors: int
    last_error: str | None
    saves: int
    kafka_reachable: bool | None
    kafka_error: str | None
    corrupt_versions_skipped: int
    corrupt_versions: list[dict[str, Any]]
    parked_pairs: int
    recent_probation_events: list[dict[str, Any]]
    #: The selection objective the model ranks by (``Objective.as_dict``);
    #: None from an updater object that does not report one.
    objective: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The dict ``get_metrics()`` returns."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpdaterStatus:
        """The status a ``get_metrics()`` dict describes (an updater object other
        than ours); ValueError naming the keys it lacks."""
        names = [f.name for f in fields(cls)]
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = [name for name in names if name not in data and name not in optional]
        if missing:
            raise ValueError(f"updater status lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in names if name in data})

    @classmethod
    def of(cls, updater: Any) -> UpdaterStatus:
        """``updater.status()`` when it gives one, else from ``updater.get_metrics()``."""
        status = getattr(updater, "status", None)
        if callable(status):
            value = status()
            if isinstance(value, UpdaterStatus):
                return value
        return cls.from_dict(updater.get_metrics())
