"""RealTimeModelUpdater: learns the agent-selection model from the outcome stream.

Data flow: a source (the embedded bus, or Kafka) -> validate -> de-duplicate
by ``event_id`` -> one vectorised model update per batch -> the bounded
buffer of recent events (for retraining) -> periodic saves. With Kafka,
offsets are committed only after a saved model includes the events before
them, and the saved model carries those offsets; on (re)assignment the
consumer seeks to them, so a restart neither loses nor re-applies events.

With the embedded bus the events exist only in this process until a saved
model includes them: ``stop()`` saves, but a SIGKILL (or an OOM kill, a power
cut) loses every event applied since the last save, up to
``save_interval_seconds`` of them (300 s by default). A shorter interval
loses less and writes a model version more often (the store keeps
``keep_versions`` of them, so rollback reaches back less far); Kafka loses
nothing. README, "The embedded bus loses unsaved events on a crash".

:class:`RealTimeModelUpdater` is the front: it keeps the public API and
wires one collaborator per job, each in its own module:

* :mod:`.settings`: :class:`UpdaterSettings` / :class:`RetrainSettings`,
  validated once;
* :mod:`.consumer`: the consumer loop and its source, with backoff;
* :mod:`.ingest`: validation, capacity and de-duplication of raw events;
* :mod:`.state`: the serving model, buffer, holdout snapshots, retrain journal;
* :mod:`.retrainer`: retrains (typed :class:`~.results.RetrainResult`);
* :mod:`.checkpoint`: saves, offset commits, rollback, corrupt versions;
* :mod:`.status`: counters and the typed :class:`~.status.UpdaterStatus`.

Locks: the consumer's ``ingest_lock`` serialises reading the source and
applying batches; the state's ``lock`` guards the serving model, buffer,
offsets and counters (held for a batch update, never for I/O or a whole
retrain); the checkpointer's ``retrain_lock`` serialises retrains and
rollbacks (a second caller waits, then retrains on what is new).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from autoretrain.exporter.bus import EmbeddedBus
from autoretrain.exporter.kafka_security import KafkaSecurity
from autoretrain.exporter.kafka_sink import BrokerProbe
from autoretrain.exporter.timefmt import utc_iso

from .checkpoint import Checkpointer
from .consumer import Consumer
from .ingest import Ingestor
from .metrics import UpdaterMetrics
from .model import AgentEstimate, AgentSelectionModel
from .objective import Objective
from .outcomes import OutcomeTally
from .results import MODEL_TYPE, RetrainType
from .retrainer import Retrainer
from .settings import UNSET, RetrainSettings, Unset, UpdaterSettings
from .state import ModelState
from .status import Counters, UpdaterStatus
from .store import ModelStore
from .strategies import HYPERPARAMETERS, Rule, UpdateStrategy, make_rule, parse_strategy

__all__ = ["RealTimeModelUpdater"]

log = logging.getLogger(__name__)

# Settings readable as attributes of the front under the names of its keyword arguments.
_RETRAIN_ALIASES = {"retrain_discount": "discount", "recency_weight": "recency_weight",
                    "holdout_fraction": "holdout_fraction",
                    "min_holdout_events": "min_holdout_events",
                    "promotion_tolerance": "promotion_tolerance"}


class RealTimeModelUpdater:
    """Keeps the agent-selection model current from the outcome-event stream.

    Every keyword argument left out (or None, where None has no meaning of
    its own) takes its default from :class:`~.settings.UpdaterSettings`,
    :class:`~.settings.RetrainSettings` or the update rule: the defaults are
    written there only. An orchestrator may instead pass ``settings`` and a
    rule object as ``update_strategy``.

    Parameters
    ----------
    kafka_servers, kafka_topic, consumer_group, batch_size, batch_timeout_seconds,
    model_storage_path, enable_auto_save, save_interval_seconds, buffer_size,
    keep_versions, max_agents, max_task_types, agent_idle_seconds, seed, consumer_config,
    kafka_security, objective
        See :class:`~.settings.UpdaterSettings` (``kafka_servers`` None: the
        embedded bus, :attr:`event_bus`, fed by a ``PerformanceMonitor``; on
        it a SIGKILL loses the events since the last save, up to
        ``save_interval_seconds``: see the module docstring).
    update_strategy
        An :class:`UpdateStrategy` (or its value), or a rule object with its
        own hyperparameters (e.g. ``ExponentialRule(half_life_seconds=600)``).
    registry
        Prometheus registry for the metrics; a fresh one when None.
    half_life_seconds, retry_after_seconds, detect_drops, window_size, learning_rate
        The rule's hyperparameters by name, with a strategy name (see
        :mod:`.strategies`; those of another strategy are checked and have
        no effect). ``retry_after_seconds`` None turns retries off.
    retrain_discount, recency_weight, holdout_fraction, min_holdout_events,
    promotion_tolerance
        Advanced: see :class:`~.settings.RetrainSettings`.
    clock
        Wall clock for timestamps (results, metadata); tests pass a fake.
    consumer_factory
        Builds the Kafka consumer (tests); default ``kafka.KafkaConsumer``.
    kafka_check
        ``f() -> None | reason``: is the broker reachable? Default a
        :class:`~autoretrain.exporter.kafka_sink.BrokerProbe` of ``kafka_servers``.
    settings
        All of the settings at once (then none of the settings keywords above).
    model_publisher
        Told every saved version (promotions, rollbacks, periodic saves)
        and the version loaded at ``start()``: a
        :class:`~autoretrain.webhook.serving.ModelPublisher` sends them to
        the model topic for followers. Its ``publish(store, version)`` must
        not block; its lifecycle stays with the caller.
    """

    def __init__(
        self,
        kafka_servers: str | list[str] | None = None,
        kafka_topic: str | None = None,
        consumer_group: str | None = None,
        batch_size: int | None = None,
        batch_timeout_seconds: float | None = None,
        model_storage_path: str | None = None,
        update_strategy: UpdateStrategy | str | Rule = UpdateStrategy.EXPONENTIAL,
        enable_auto_save: bool | None = None,
        save_interval_seconds: float | None = None,
        buffer_size: int | None = None,
        registry: CollectorRegistry | None = None,
        *,
        half_life_seconds: float | None = None,
        window_size: int | None = None,
        learning_rate: float | None = None,
        retry_after_seconds: float | Unset | None = UNSET,
        detect_drops: bool | None = None,
        retrain_discount: float | None = None,
        recency_weight: float | None = None,
        holdout_fraction: float | None = None,
        min_holdout_events: int | None = None,
        promotion_tolerance: float | None = None,
        keep_versions: int | None = None,
        max_agents: int | None = None,
        max_task_types: int | None = None,
        max_event_skew_seconds: float | None = None,
        agent_idle_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        consumer_factory: Callable[..., Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        kafka_security: KafkaSecurity | None = None,
        kafka_check: Callable[[], str | None] | None = None,
        settings: UpdaterSettings | None = None,
        model_publisher: Any = None,
        objective: Objective | Mapping[str, Any] | None = None,
    ) -> None:
        given: dict[str, Any] = {k: v for k, v in (
            ("kafka_topic", kafka_topic), ("consumer_group", consumer_group),
            ("batch_size", batch_size), ("batch_timeout_seconds", batch_timeout_seconds),
            ("model_storage_path", model_storage_path), ("enable_auto_save", enable_auto_save),
            ("save_interval_seconds", save_interval_seconds), ("buffer_size", buffer_size),
            ("keep_versions", keep_versions), ("max_agents", max_agents),
            ("max_task_types", max_task_types), ("agent_idle_seconds", agent_idle_seconds),
            ("seed", seed), ("max_event_skew_seconds", max_event_skew_seconds),
            ("consumer_config", consumer_config),
            ("kafka_security", kafka_security), ("objective", objective)) if v is not None}
        retrain: dict[str, Any] = {k: v for k, v in (
            ("discount", retrain_discount), ("recency_weight", recency_weight),
            ("holdout_fraction", holdout_fraction), ("min_holdout_events", min_holdout_events),
            ("promotion_tolerance", promotion_tolerance)) if v is not None}
        if settings is None:
            settings = UpdaterSettings(kafka_servers=kafka_servers,
                                       retrain=RetrainSettings(**retrain), **given)
        elif given or retrain or kafka_servers is not None:
            raise ValueError("pass settings or the settings keywords, not both")
        hyper: dict[str, Any] = {k: v for k, v in (
            ("half_life_seconds", half_life_seconds), ("window_size", window_size),
            ("learning_rate", learning_rate), ("detect_drops", detect_drops)) if v is not None}
        if not isinstance(retry_after_seconds, Unset):
            hyper["retry_after_seconds"] = retry_after_seconds
        if not isinstance(update_strategy, Rule):
            update_strategy = parse_strategy(update_strategy)
        # Validates the hyperparameters (ValueError naming the bad one).
        rule = make_rule(update_strategy, **hyper)
        self._build(settings, rule, registry, clock, consumer_factory, kafka_check)
        # Followers in other processes get every saved version through it.
        self.model_publisher = model_publisher
        self._checkpointer.publisher = model_publisher

    @classmethod
    def from_settings(
        cls,
        settings: UpdaterSettings,
        rule: Rule,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        consumer_factory: Callable[..., Any] | None = None,
        kafka_check: Callable[[], str | None] | None = None,
        model_publisher: Any = None,
    ) -> RealTimeModelUpdater:
        """The updater of ``settings`` learning with ``rule`` (its hyperparameters included)."""
        return cls(update_strategy=rule, registry=registry, clock=clock,
                   consumer_factory=consumer_factory, kafka_check=kafka_check,
                   settings=settings, model_publisher=model_publisher)

    def _build(self, settings: UpdaterSettings, rule: Rule, registry: CollectorRegistry | None,
               clock: Callable[[], float], consumer_factory: Callable[..., Any] | None,
               kafka_check: Callable[[], str | None] | None) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = CollectorRegistry() if registry is None else registry
        self.metrics = UpdaterMetrics(self.registry)
        self.store = ModelStore(settings.model_storage_path, keep_last=settings.keep_versions)
        #: The in-process bus a PerformanceMonitor publishes to (None with Kafka).
        self.event_bus: EmbeddedBus | None = None if settings.uses_kafka else EmbeddedBus()
        if kafka_check is None and settings.kafka_servers is not None:
            kafka_check = BrokerProbe(settings.kafka_servers).check

        self._counters = Counters()
        self._state = ModelState(AgentSelectionModel(rule, seed=settings.seed,
                                                     objective=settings.objective),
                                 settings, self.metrics, clock)
        self.metrics.objective.labels(str(settings.objective.mode)).set(1)
        # Read at scrape time: parking happens inside model updates and retrains.
        self.metrics.parked.set_function(lambda: float(self._state.model.parked_pairs()))
        self.metrics.set_aside.source = self.set_aside_pairs
        self.metrics.capacity.labels("agent").set_function(
            lambda: len(self._state.model.agents) / settings.max_agents)
        self.metrics.capacity.labels("task_type").set_function(
            lambda: len(self._state.model.task_types) / settings.max_task_types)
        self._ingestor = Ingestor(self._state, settings, self.metrics, self._counters, clock)
        self._checkpointer = Checkpointer(self._state, self.store, settings, self.metrics,
                                          self._counters, clock, self._hyperparameters,
                                          self._ingestor.know)
        self._retrainer = Retrainer(self._state, self._checkpointer, settings.retrain,
                                    self.metrics, clock)
        self._consumer = Consumer(settings, self._state, self._checkpointer, self.metrics,
                                  self._counters, self._ingestor.ingest, self.event_bus,
                                  consumer_factory, kafka_check)
        self._checkpointer.commit = self._consumer.commit

    # Settings read by name (the keyword arguments' names) are read-only properties
    # added after the class (_add_setting_properties), not a __getattr__: a class
    # with __getattr__ makes every attribute read on it slower, predict_best_agent's too.
    if TYPE_CHECKING:  # for the type checker only: those properties' names

        def __getattr__(self, name: str) -> Any: ...

    def _hyperparameter(self, name: str) -> Any:
        hyperparameters = self._state.model.hyperparameters()
        if name not in hyperparameters:  # another strategy's: absent, as before
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} "
                                 f"(not a hyperparameter of {self.update_strategy.value})")
        return hyperparameters[name]

    @property
    def update_strategy(self) -> UpdateStrategy:
        """The strategy of the update rule."""
        return self._state.model.strategy

    @property
    def rule(self) -> Rule:
        """The update rule's settings (hyperparameters)."""
        return self._state.model.rule

    def _hyperparameters(self) -> dict[str, Any]:
        """What a saved version records under ``hyperparameters``."""
        s, r = self.settings, self.settings.retrain
        return {
            **self._state.model.hyperparameters(),
            "batch_size": s.batch_size,
            "buffer_size": s.buffer_size,
            "retrain_discount": r.discount,
            "recency_weight": r.recency_weight,
            "holdout_fraction": r.holdout_fraction,
            "min_holdout_events": r.min_holdout_events,
            "promotion_tolerance": r.promotion_tolerance,
        }

    # -- lifecycle ------------------------------------------------------------
    @property
    def model(self) -> AgentSelectionModel:
        """The serving model (do not mutate; use the updater's methods)."""
        return self._state.model

    @property
    def version(self) -> int:
        """Store version of the serving model (0 before the first save or load);
        the ranking API reports it with each ranking."""
        return self._state.version

    @property
    def outcomes(self) -> OutcomeTally:
        """Every applied outcome event counted by event time and task type: what
        the webhook measures each retrain's effect on (:mod:`.outcomes`)."""
        return self._ingestor.outcomes

    @property
    def running(self) -> bool:
        """True while the consumer thread is alive."""
        return self._consumer.running

    def start(self) -> None:
        """Load the newest model and start the consumer thread."""
        if self.running:
            return
        self._checkpointer.ensure_loaded()
        self._checkpointer.publish_loaded()
        self._consumer.start()
        log.info("model updater started (%s, strategy %s)",
                 "kafka" if self.settings.uses_kafka else "embedded bus",
                 self.update_strategy.value)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread, apply what is queued, save, commit, close."""
        if not self._consumer.stop(timeout):
            return
        self._consumer.finish()
        log.info("model updater stopped")

    def caught_up(self) -> bool:
        """True once the consumer has applied the backlog its source held at start
        (Kafka: every assigned partition read to its end offset as first seen;
        the embedded bus: what was queued), and whenever the consumer thread is
        not running (there is nothing to wait for).

        Until then the retrain buffer lacks that backlog (after a restart it is
        empty): the webhook holds alert retrains back until this is True, for
        at most ``retrain_catch_up_seconds``.
        """
        return self._consumer.caught_up.is_set() or not self._consumer.running

    # -- applying events ---------------------------------------------------------
    def ingest(self, values: list[Any], offsets: dict[int, int] | None = None) -> int:
        """Validate, de-duplicate and apply raw events (dicts or message bytes)
        as one batch; ``offsets`` are the source positions after them.

        Returns the number of events applied. Invalid events are counted by
        fault and skipped; they never stop the events behind them.
        """
        self._checkpointer.ensure_loaded()
        return self._ingestor.ingest(values, offsets)

    def process_pending(self, timeout: float = 0.0) -> int:
        """Synchronously read what the source has now and apply it; return events applied.

        For simulated time and tests: no dependence on the thread's timing.
        With Kafka, ``timeout`` is how long to poll for records.
        """
        self._checkpointer.ensure_loaded()
        return self._consumer.process_pending(timeout)

    # -- predictions -----------------------------------------------------------------
    def predict_best_agent(
        self,
        task_type: str | None = None,
        context: dict[str, Any] | None = None,
        top_k: int = 3,
        explore: bool = False,
    ) -> list[tuple[str, float]]:
        """Rank agents for ``task_type``; see :meth:`AgentSelectionModel.predict_best_agent`."""
        if not self._checkpointer.loaded:
            self._checkpointer.ensure_loaded()
        state = self._state  # one lookup: this is the orchestrator's per-request path
        with state.lock:
            return state.model.predict_best_agent(task_type, context, top_k, explore)

    def set_aside_pairs(self) -> list[tuple[str, str]]:
        """``(task_type, agent)`` of the pairs the serving model holds set aside
        (parked after a drop until a retry restores them): what
        ``autoretrain_model_pair_set_aside`` exports. Pass this method as the
        ``set_aside`` of a :class:`~autoretrain.exporter.PerformanceMonitor` in
        the same process, so the monitor alerts on it without Prometheus."""
        return self._state.model.set_aside()

    def rank_agents(
        self,
        task_type: str | None = None,
        context: dict[str, Any] | None = None,
        top_k: int = 3,
        explore: bool = False,
    ) -> list[AgentEstimate]:
        """:meth:`predict_best_agent` with each agent's expected quality, cost and
        latency (see :meth:`AgentSelectionModel.rank_agents`)."""
        if not self._checkpointer.loaded:
            self._checkpointer.ensure_loaded()
        state = self._state
        with state.lock:
            return state.model.rank_agents(task_type, context, top_k, explore)

    @property
    def objective(self) -> Objective:
        """What the serving model ranks agents by."""
        return self.settings.objective

    # -- retraining ---------------------------------------------------------------------
    def trigger_retraining(
        self,
        reason: str = "manual",
        force_full_retrain: bool = False,
        model_type: str = MODEL_TYPE,
    ) -> dict[str, Any]:
        """Retrain on the buffer, score against the serving model, promote if not worse.

        Returns a dict with ``success, model_type, retrain_type,
        events_processed, duration_ms, reason, timestamp, promoted,
        candidate_score, serving_score, model_version`` (+ ``error`` when
        ``success`` is False, + ``scores`` with the score components, +
        ``save_ms`` when a promoted model was saved, + ``result``: promoted,
        rejected, skipped or failed, as in ``autoretrain_model_retrains_total``).
        ``duration_ms`` is the retrain: candidate, held-out scoring and promotion, without the save.

        ``success`` is False, with the metric result ``failed``, for an
        unknown ``model_type``; and False with result ``skipped`` when there
        is nothing to learn from: an empty buffer, or fewer than
        ``min_holdout_events`` events since the last promotion to hold out
        (a candidate that cannot be validated is never promoted). A rejected
        candidate is ``success`` True, ``promoted`` False.
        """
        result = self._retrainer.run(reason, RetrainType.of(force_full_retrain), model_type)
        return result.as_dict()

    # -- persistence -------------------------------------------------------------------
    def save(self) -> int:
        """Save the serving model as a new version now; return the version."""
        self._checkpointer.ensure_loaded()
        version = self._checkpointer.save(force=True)
        assert version is not None  # forced
        return version

    def rollback(self, version: int) -> int:
        """Serve the model of ``version`` again (saved as a new version; returned).

        The stream position is kept: events applied after ``version`` are not
        re-applied (rollback discards a bad model, it does not replay).
        """
        return self._checkpointer.rollback(version)

    # -- observability ---------------------------------------------------------------------
    def kafka_status(self) -> str | None:
        """None when Kafka is reachable and the consumer exists, else why not
        (always None without Kafka). Probes at most once a second."""
        return self._consumer.kafka_status()

    def status(self) -> UpdaterStatus:
        """Counters and state of the updater (a snapshot)."""
        self._checkpointer.ensure_loaded()
        kafka_error = self.kafka_status()  # network I/O: outside the state lock
        state, s = self._state, self.settings
        with state.lock:
            c = self._counters
            model = state.model
            return UpdaterStatus(
                running=self.running,
                model_loaded=state.model_loaded,
                model_version=state.version,
                update_strategy=model.strategy.value,
                source="kafka" if s.uses_kafka else "embedded",
                event_buffer_size=len(state.buffer),
                event_buffer_capacity=s.buffer_capacity,
                events_consumed=c.consumed,
                events_applied=c.applied,
                duplicates=c.duplicates,
                invalid=c.invalid,
                invalid_by_fault=dict(c.invalid_by_fault),
                batches=c.batches,
                avg_update_time_ms=(1000.0 * c.update_seconds_total / c.batches
                                    if c.batches else None),
                last_update_time_ms=(None if c.last_update_seconds is None
                                     else 1000.0 * c.last_update_seconds),
                last_update_timestamp=(None if c.last_update_timestamp is None
                                       else utc_iso(c.last_update_timestamp)),
                pending_events=self._consumer.pending + (
                    len(self.event_bus) if self.event_bus is not None else 0),
                events_seen=model.events_seen,
                agents=len(model.agents),
                task_types=len(model.task_types),
                last_retrain=None if state.last_retrain is None else dict(state.last_retrain),
                consumer_lag=self._consumer.lag,
                kafka_offsets=dict(state.offsets),
                errors=c.errors,
                last_error=c.last_error,
                saves=c.saves,
                kafka_reachable=None if not s.uses_kafka else kafka_error is None,
                kafka_error=kafka_error,
                corrupt_versions_skipped=len(self._checkpointer.corrupt_versions),
                corrupt_versions=[dict(v) for v in self._checkpointer.corrupt_versions],
                parked_pairs=model.parked_pairs(),
                recent_probation_events=[dict(e) for e in state.probation_log],
                objective=model.objective.as_dict(),
            )

    def get_metrics(self) -> dict[str, Any]:
        """Counters and state of the updater (a snapshot; JSON-ready)."""
        return self.status().as_dict()


def _add_setting_properties(cls: type[RealTimeModelUpdater]) -> None:
    """The settings as read-only attributes under the constructor's keyword names:
    ``settings.<name>``, the advanced ``settings.retrain.<name>``, and the update
    rule's hyperparameters (only those of the rule in use)."""
    def add(name: str, prop: property) -> None:
        if name not in vars(cls):  # a property or method of its own wins
            setattr(cls, name, prop)

    for name, field in _RETRAIN_ALIASES.items():
        add(name, property(attrgetter(f"settings.retrain.{field}"),
                           doc=f"``settings.retrain.{field}`` (read-only)."))
    for name in UpdaterSettings.__dataclass_fields__:
        add(name, property(attrgetter(f"settings.{name}"),
                           doc=f"``settings.{name}`` (read-only)."))
    for name in HYPERPARAMETERS:
        add(name, property(partial(cls._hyperparameter, name=name),
                           doc=f"The update rule's ``{name}`` (read-only; only the rule's own)."))


_add_setting_properties(RealTimeModelUpdater)
