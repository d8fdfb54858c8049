"""The updater's settings: one frozen dataclass per component, validated once.

:class:`UpdaterSettings` holds what an operator sets (where events come
from, batching, saving, bounds); :class:`RetrainSettings` how a retrain
weighs the buffer and decides on promotion. The defaults are written here
and nowhere else: :class:`~.updater.RealTimeModelUpdater`'s keyword
arguments, :class:`~autoretrain.webhook.config.WebhookConfig` and
``python -m autoretrain.webhook.updater`` all build these objects. The
model's own hyperparameters live on its update rule (see :mod:`.strategies`).

Advanced settings, which no operator normally sets and which are kept
settable only for experiments and tests: ``RetrainSettings.discount``,
``recency_weight``, ``holdout_fraction``, ``min_holdout_events``,
``promotion_tolerance``, and ``UpdaterSettings.max_task_types``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from autoretrain.exporter.events import MAX_EVENT_SKEW_SECONDS
from autoretrain.exporter.kafka_security import KafkaSecurity

from .objective import Objective
from .strategies.base import check_int, check_number

__all__ = [
    "HOLDOUT_FRACTION",
    "MIN_HOLDOUT_EVENTS",
    "PROMOTION_TOLERANCE",
    "RECENCY_WEIGHT",
    "RETRAIN_DISCOUNT",
    "UNSET",
    "RetrainSettings",
    "Unset",
    "UpdaterSettings",
]


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "unset"


#: "Not given: use the default" for a keyword whose None means something else.
UNSET: Final = Unset.UNSET

#: Incremental retrain: factor applied to evidence older than the buffer, for
#: the pairs whose buffered runs do not contradict it (a pair at a change
#: point always restarts, see ``strategies.retrain_factors``). 1 keeps what
#: still holds. It was 0.25, with ``RECENCY_WEIGHT`` 2, until issue 14: a
#: retrain then shrank every observed pair's history and counted the buffer
#: up to twice, so a retrain on a model that had not changed (the monitor's
#: retrain while new agents are tried out) still moved it, by chance one
#: way or the other, and the model it left behind was overconfident about
#: the few runs in its buffer (BENCHMARKS.md, decision quality).
RETRAIN_DISCOUNT = 1.0
#: Incremental retrain: weight of the newest buffered event (the oldest gets about 1).
RECENCY_WEIGHT = 1.0
#: Promotion check: the newest fraction of the buffer held out to score both models ...
HOLDOUT_FRACTION = 0.2
#: ... and at least this many events.
MIN_HOLDOUT_EVENTS = 10
#: Promote when ``candidate_score >= serving_score - tolerance``.
PROMOTION_TOLERANCE = 0.0


@dataclass(frozen=True)
class RetrainSettings:
    """How retrains weigh the buffer and decide (all advanced; see the module docstring).

    Attributes
    ----------
    discount
        Incremental retrain: factor in [0, 1] applied to evidence older than the buffer.
    recency_weight
        Incremental retrain: weight (>= 1) of the newest buffered event.
    holdout_fraction, min_holdout_events
        The newest ``holdout_fraction`` of the buffer (at least
        ``min_holdout_events``) is held out to score both models.
    promotion_tolerance
        Promote when ``candidate_score >= serving_score - tolerance``.
    """

    discount: float = RETRAIN_DISCOUNT
    recency_weight: float = RECENCY_WEIGHT
    holdout_fraction: float = HOLDOUT_FRACTION
    min_holdout_events: int = MIN_HOLDOUT_EVENTS
    promotion_tolerance: float = PROMOTION_TOLERANCE

    def __post_init__(self) -> None:
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"retrain_discount must be in [0, 1], got {self.discount!r}")
        if not self.recency_weight >= 1.0:
            raise ValueError(f"recency_weight must be >= 1, got {self.recency_weight!r}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(
                f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}")
        check_int("min_holdout_events", self.min_holdout_events, 1)
        if not self.promotion_tolerance >= 0.0:
            raise ValueError(
                f"promotion_tolerance must be >= 0, got {self.promotion_tolerance!r}")
        for name in ("discount", "recency_weight", "holdout_fraction", "promotion_tolerance"):
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True)
class UpdaterSettings:
    """What the updater consumes, how it batches, saves and bounds its state.

    Attributes
    ----------
    kafka_servers
        Kafka bootstrap servers; None for the embedded bus, fed by a
        ``PerformanceMonitor`` in-process.
    kafka_topic, consumer_group
        Topic of outcome events and the consumer group.
    batch_size, batch_timeout_seconds
        A batch is applied when it holds ``batch_size`` events or its oldest
        event has waited ``batch_timeout_seconds``.
    model_storage_path
        Directory of the model store.
    enable_auto_save, save_interval_seconds
        Save (and, with Kafka, commit) at most every ``save_interval_seconds``
        when the state changed. Promotions and ``stop()`` always save.
    buffer_size
        Recent events kept for retraining; None (the default) is
        ``10 * batch_size``, resolved here.
    keep_versions
        Model versions kept on disk.
    max_agents, max_task_types
        Bound on the distinct names the model learns (memory is per pair);
        events naming more are counted invalid (``capacity:...``).
        ``max_task_types`` is advanced.
    max_event_skew_seconds
        Events timestamped more than this after the updater's clock are
        invalid (``field:timestamp``): one such event would move the model's
        event-time clock and age all real evidence away. Default 300.
    agent_idle_seconds
        When ``max_agents`` agents are known and a new one arrives, an agent
        with no event for longer than this (in event time, against the
        newest event the model has seen) and none among the buffered recent
        events is dropped from the model to make room, the longest idle
        first. One day by default: with the default exponential rule (half
        life 1 h) its evidence then weighs 2^-24, nothing. Without it, names
        forged once could fill the limit for good.
    seed
        Seed of the model's exploration generator.
    consumer_config
        Further ``KafkaConsumer`` settings, e.g. ``fetch_max_bytes`` (the
        consumer assigns itself every partition, so group settings such as
        ``session_timeout_ms`` have no effect).
    kafka_security
        How the consumer authenticates and encrypts
        (:class:`~autoretrain.exporter.kafka_security.KafkaSecurity`); None is PLAINTEXT.
    retrain
        The :class:`RetrainSettings`.
    objective
        What the model ranks agents by (:class:`~.objective.Objective`, or its
        ``as_dict`` mapping); default quality alone. Recorded in every saved
        version, so followers rank by the same objective.
    """

    kafka_servers: str | list[str] | None = None
    kafka_topic: str = "agent-outcomes"
    consumer_group: str = "autoretrain-updater"
    batch_size: int = 10
    batch_timeout_seconds: float = 30.0
    model_storage_path: str = "./models"
    enable_auto_save: bool = True
    save_interval_seconds: float = 300.0
    buffer_size: int | None = None
    keep_versions: int = 10
    max_agents: int = 1000
    max_task_types: int = 1000
    max_event_skew_seconds: float = MAX_EVENT_SKEW_SECONDS
    agent_idle_seconds: float = 86_400.0
    seed: int | None = None
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    kafka_security: KafkaSecurity | None = None
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    objective: Objective = field(default_factory=Objective)

    def __post_init__(self) -> None:
        for name in ("kafka_topic", "consumer_group"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        check_int("batch_size", self.batch_size, 1)
        set_ = object.__setattr__
        set_(self, "batch_timeout_seconds",
             check_number("batch_timeout_seconds", self.batch_timeout_seconds, 0.0))
        set_(self, "enable_auto_save", bool(self.enable_auto_save))
        set_(self, "save_interval_seconds",
             check_number("save_interval_seconds", self.save_interval_seconds, 0.0))
        buffer_size = 10 * self.batch_size if self.buffer_size is None else self.buffer_size
        check_int("buffer_size", buffer_size, 1)
        if buffer_size < 2:
            raise ValueError(f"buffer_size must be >= 2, got {self.buffer_size!r}")
        set_(self, "buffer_size", buffer_size)
        for name in ("keep_versions", "max_agents", "max_task_types"):
            check_int(name, getattr(self, name), 1)
        set_(self, "max_event_skew_seconds",
             check_number("max_event_skew_seconds", self.max_event_skew_seconds, 0.0,
                          low_inclusive=True))
        set_(self, "agent_idle_seconds",
             check_number("agent_idle_seconds", self.agent_idle_seconds, 0.0))
        set_(self, "consumer_config", dict(self.consumer_config))
        if self.kafka_security is not None and not isinstance(self.kafka_security,
                                                              KafkaSecurity):
            raise ValueError("kafka_security must be KafkaSecurity or None, got "
                             f"{type(self.kafka_security).__name__}")
        if not isinstance(self.retrain, RetrainSettings):
            raise ValueError(f"retrain must be RetrainSettings, got {self.retrain!r}")
        if not isinstance(self.objective, Objective):
            set_(self, "objective", Objective.from_dict(self.objective))

    @property
    def uses_kafka(self) -> bool:
        """True when events come from Kafka (else the embedded bus)."""
        return self.kafka_servers is not None

    @property
    def buffer_capacity(self) -> int:
        """``buffer_size`` resolved (never None after construction)."""
        assert self.buffer_size is not None
        return self.buffer_size

    @property
    def holdout_target(self) -> int:
        """Events a holdout snapshot is taken before (see :mod:`.state`)."""
        r = self.retrain
        return max(r.min_holdout_events, int(r.holdout_fraction * self.buffer_capacity))

