"""RealTimeModelUpdater: learns the agent-selection model from the outcome stream.

Data flow: a source (the embedded bus, or Kafka) -> validate -> de-duplicate
by ``event_id`` -> one vectorised model update per batch -> the bounded
buffer of recent events (for retraining) -> periodic saves. With Kafka,
offsets are committed only after a saved model includes the events before
them, and the saved model carries those offsets; on (re)assignment the
consumer seeks to them, so a restart neither loses nor re-applies events.

Kafka may be away at start or at any time later: the consumer is created
by the loop (retried with backoff), client errors are retried by the loop,
and :meth:`RealTimeModelUpdater.get_metrics` reports ``kafka_reachable``
(a TCP probe of the bootstrap servers, plus whether a consumer exists).

Locks: ``_ingest_lock`` serialises reading the source and applying batches;
``_model_lock`` guards the serving model, buffer, offsets and counters (held
for a batch update, never for I/O or a whole retrain); ``_retrain_lock``
serialises retrains (a second caller waits, then retrains on what is new).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from autoretrain.exporter.bus import EmbeddedBus
from autoretrain.exporter.events import (
    MAX_EVENT_BYTES,
    InvalidEvent,
    decode_event,
    run_fields,
    validate_event,
)
from autoretrain.exporter.kafka_sink import BrokerProbe
from autoretrain.exporter.timefmt import utc_iso

from .batch import BatchBuilder, EventBatch
from .buffers import EventBuffer, RecentIds
from .metrics import INVALID_MODEL_TYPE, MODEL_TYPES, UpdaterMetrics
from .model import AgentSelectionModel
from .retrain import retrain
from .sources import EmbeddedSource, EventSource, KafkaSource, SourceError
from .store import CorruptModel, ModelStore
from .strategies import UpdateStrategy

__all__ = ["RealTimeModelUpdater"]

log = logging.getLogger(__name__)

MODEL_TYPE = "agent_selection"
_PROBATION_LOG = {
    "parked": "set aside (it got worse; retried later)",
    "restored": "restored (retried runs look like its history)",
    "retry_failed": "still broken at its retry (next retry later)",
    "given_up": "no longer retried (its history has faded)",
}


@dataclass
class _Counters:
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


class RealTimeModelUpdater:
    """Keeps the agent-selection model current from the outcome-event stream.

    Parameters
    ----------
    kafka_servers
        Kafka bootstrap servers; None for the embedded bus
        (:attr:`event_bus`), fed by a ``PerformanceMonitor`` in-process.
    kafka_topic, consumer_group
        Topic of outcome events and the consumer group.
    batch_size, batch_timeout_seconds
        A batch is applied when it holds ``batch_size`` events or its oldest
        event has waited ``batch_timeout_seconds``.
    model_storage_path
        Directory of the :class:`~.store.ModelStore`.
    update_strategy
        An :class:`UpdateStrategy` (or its value).
    enable_auto_save, save_interval_seconds
        Save (and, with Kafka, commit) at most every ``save_interval_seconds``
        when the state changed. Promotions and ``stop()`` always save.
    buffer_size
        Recent events kept for retraining; default ``10 * batch_size``.
    registry
        Prometheus registry for the metrics; a fresh one when None.
    half_life_seconds, window_size, learning_rate
        Strategy hyperparameters (see :mod:`.strategies`).
    retry_after_seconds
        EXPONENTIAL: an agent set aside at a retrain because it got worse
        on a task type is retried by ``explore=True`` requests this many
        seconds (event time) later, and restored if the retries look like
        its history (see :mod:`.probation`); None turns retries off.
    detect_drops
        EXPONENTIAL: also set an agent aside between retrains when a CUSUM
        of its runs on a task type says it dropped by 20 % (see
        :mod:`.drops`); off by default, so the model changes its routing
        only on the retrains the alerts trigger.
    retrain_discount
        Incremental retrain: factor applied to evidence older than the buffer.
    recency_weight
        Incremental retrain: weight of the newest buffered event (the oldest
        gets about 1).
    holdout_fraction, min_holdout_events
        Promotion check: the newest ``holdout_fraction`` of the buffer (at
        least ``min_holdout_events``) is held out to score both models.
    promotion_tolerance
        Promote when ``candidate_score >= serving_score - tolerance``.
    keep_versions
        Model versions kept on disk.
    max_agents, max_task_types
        Bound on distinct names the model learns (memory is per pair);
        events naming more are counted invalid (``capacity:...``).
    clock
        Wall clock for timestamps (results, metadata); tests pass a fake.
    seed
        Seed of the model's exploration generator.
    consumer_factory
        Builds the Kafka consumer (tests); default ``kafka.KafkaConsumer``.
    consumer_config
        Further ``KafkaConsumer`` settings, e.g. ``session_timeout_ms`` or
        ``group_instance_id`` (static membership: a restarted process takes
        its predecessor's place in the group without waiting for its session
        to expire).
    kafka_check
        ``f() -> None | reason``: is the broker reachable? Default a
        :class:`~exporter.kafka_sink.BrokerProbe` of ``kafka_servers``.
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
        kafka_topic: str = "agent-outcomes",
        consumer_group: str = "autoretrain-updater",
        batch_size: int = 10,
        batch_timeout_seconds: float = 30,
        model_storage_path: str = "./models",
        update_strategy: UpdateStrategy | str = UpdateStrategy.EXPONENTIAL,
        enable_auto_save: bool = True,
        save_interval_seconds: float = 300,
        buffer_size: int | None = None,
        registry: CollectorRegistry | None = None,
        *,
        half_life_seconds: float = 3600.0,
        window_size: int = 100,
        learning_rate: float = 0.1,
        retry_after_seconds: float | None = 600.0,
        detect_drops: bool = False,
        retrain_discount: float = 0.25,
        recency_weight: float = 2.0,
        holdout_fraction: float = 0.2,
        min_holdout_events: int = 10,
        promotion_tolerance: float = 0.0,
        keep_versions: int = 10,
        max_agents: int = 1000,
        max_task_types: int = 1000,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        consumer_factory: Callable[..., Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        kafka_check: Callable[[], str | None] | None = None,
        model_publisher: Any = None,
    ) -> None:
        def positive_int(name: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            return value

        def positive(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
            return float(value)

        try:
            strategy = UpdateStrategy(update_strategy)
        except ValueError:
            allowed = ", ".join(s.value for s in UpdateStrategy)
            raise ValueError(
                f"update_strategy must be one of {allowed}, got {update_strategy!r}") from None
        if not isinstance(kafka_topic, str) or not kafka_topic:
            raise ValueError(f"kafka_topic must be a non-empty string, got {kafka_topic!r}")
        if not isinstance(consumer_group, str) or not consumer_group:
            raise ValueError(f"consumer_group must be a non-empty string, got {consumer_group!r}")
        self.kafka_servers = kafka_servers
        self.kafka_topic = kafka_topic
        self.consumer_group = consumer_group
        self.batch_size = positive_int("batch_size", batch_size)
        self.batch_timeout_seconds = positive("batch_timeout_seconds", batch_timeout_seconds)
        self.model_storage_path = model_storage_path
        self.update_strategy = strategy
        self.enable_auto_save = bool(enable_auto_save)
        self.save_interval_seconds = positive("save_interval_seconds", save_interval_seconds)
        self.buffer_size = positive_int(
            "buffer_size", 10 * self.batch_size if buffer_size is None else buffer_size)
        if self.buffer_size < 2:
            raise ValueError(f"buffer_size must be >= 2, got {buffer_size!r}")
        if not 0.0 <= retrain_discount <= 1.0:
            raise ValueError(f"retrain_discount must be in [0, 1], got {retrain_discount!r}")
        if not recency_weight >= 1.0:
            raise ValueError(f"recency_weight must be >= 1, got {recency_weight!r}")
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}")
        if not promotion_tolerance >= 0.0:
            raise ValueError(f"promotion_tolerance must be >= 0, got {promotion_tolerance!r}")
        self.half_life_seconds = half_life_seconds
        self.window_size = window_size
        self.learning_rate = learning_rate
        self.retry_after_seconds = retry_after_seconds
        self.detect_drops = detect_drops
        self.retrain_discount = float(retrain_discount)
        self.recency_weight = float(recency_weight)
        self.holdout_fraction = float(holdout_fraction)
        self.min_holdout_events = positive_int("min_holdout_events", min_holdout_events)
        self.promotion_tolerance = float(promotion_tolerance)
        self.keep_versions = positive_int("keep_versions", keep_versions)
        self.max_agents = positive_int("max_agents", max_agents)
        self.max_task_types = positive_int("max_task_types", max_task_types)
        self.clock = clock
        self.seed = seed
        self._consumer_factory = consumer_factory
        self._consumer_config = dict(consumer_config or {})
        self._kafka_check = kafka_check or (
            BrokerProbe(kafka_servers).check if kafka_servers is not None else None)
        #: Why no consumer exists yet (None once one does, or without Kafka).
        self._source_error: str | None = (
            "consumer not created yet" if kafka_servers is not None else None)
        # Validates the hyperparameters (ValueError naming the bad one).
        self._model = AgentSelectionModel(
            strategy, half_life_seconds=half_life_seconds, window_size=window_size,
            learning_rate=learning_rate, retry_after_seconds=retry_after_seconds,
            detect_drops=detect_drops, seed=seed)

        self.registry = CollectorRegistry() if registry is None else registry
        self.metrics = UpdaterMetrics(self.registry)
        # Read at scrape time: parking happens inside model updates and retrains.
        self.metrics.parked.set_function(lambda: float(self._model.parked_pairs()))
        self.store = ModelStore(model_storage_path, keep_last=self.keep_versions)
        #: The in-process bus a PerformanceMonitor publishes to (None with Kafka).
        self.event_bus: EmbeddedBus | None = EmbeddedBus() if kafka_servers is None else None

        self._model_lock = threading.RLock()
        self._ingest_lock = threading.Lock()
        self._retrain_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: EventSource | None = (
            EmbeddedSource(self.event_bus) if self.event_bus is not None else None)

        self._buffer = EventBuffer(self.buffer_size)
        self._seen = RecentIds(max(100_000, 10 * self.buffer_size))
        self._known_agents: set[str] = set()
        self._known_tasks: set[str] = set()
        self._counters = _Counters()
        self._faults_logged: set[str] = set()
        self._pending: list[Any] = []
        self._pending_offsets: dict[int, int] = {}
        self._pending_since: float | None = None
        self._offsets: dict[int, int] = {}  # partition -> next offset, in the model state
        self._commit_request: dict[int, int] | None = None
        self._applied_total = 0  # events applied since load (positions snapshots)
        self._snapshots: deque[tuple[int, AgentSelectionModel]] = deque(maxlen=2)
        # The newest probation events (get_metrics), numbered so a reader can
        # tell which it has not seen yet.
        self._probation_log: deque[dict[str, Any]] = deque(maxlen=50)
        self._probation_seq = 0
        self._retraining = False
        self._journal: list[EventBatch] = []
        self._version = 0
        self._parent_version: int | None = None
        self._loaded = False
        self._model_loaded = False
        self._dirty = False
        self._last_save = time.monotonic()
        self._last_retrain: dict[str, Any] | None = None
        self._last_scores: dict[str, Any] | None = None
        self._lag: int | None = None
        self._corrupt_versions: list[dict[str, Any]] = []
        # serving: followers get every saved version through the model topic.
        self.model_publisher = model_publisher

    # -- lifecycle ------------------------------------------------------------
    @property
    def model(self) -> AgentSelectionModel:
        """The serving model (do not mutate; use the updater's methods)."""
        return self._model

    @property
    def version(self) -> int:
        """Store version of the serving model (0 before the first save or load)."""
        # serving: the ranking API reports it with each ranking.
        return self._version

    @property
    def running(self) -> bool:
        """True while the consumer thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._model_lock:
            if self._loaded:
                return
            self._loaded = True
            self._load_latest()

    def _hyper(self) -> dict[str, Any]:
        return {
            **self._model.hyperparameters(),
            "batch_size": self.batch_size,
            "buffer_size": self.buffer_size,
            "retrain_discount": self.retrain_discount,
            "recency_weight": self.recency_weight,
            "holdout_fraction": self.holdout_fraction,
            "min_holdout_events": self.min_holdout_events,
            "promotion_tolerance": self.promotion_tolerance,
        }

    def _load_latest(self) -> None:
        """Serve the newest intact version; report each broken one skipped on the way."""
        try:
            self.store.remove_incomplete()
        except OSError as exc:  # a read-only store still loads
            log.warning("cannot clean up interrupted saves in %s: %s",
                        self.model_storage_path, exc)
        for version in reversed(self.store.versions()):
            try:
                stored = self.store.load(version)
                model = self._model.fresh()
                model.load(stored.arrays, stored.metadata)
            except (CorruptModel, ValueError, KeyError, TypeError) as exc:
                fault = exc.fault if isinstance(exc, CorruptModel) else "model_invalid"
                log.error("skipping corrupt model version %d in %s (%s): %s", version,
                          self.model_storage_path, fault, exc)
                self._corrupt_versions.append(
                    {"version": version, "fault": fault, "error": str(exc)})
                self.metrics.corrupt_versions.labels(fault).inc()
                continue
            self._install_loaded(model, stored.version, stored.metadata)
            if self._corrupt_versions:
                log.warning("loaded model version %d after skipping %d corrupt newer "
                            "version(s)", version, len(self._corrupt_versions))
            return
        log.info("no usable model in %s; starting empty", self.model_storage_path)
        self._snapshots.append((0, self._model.copy()))

    def _install_loaded(self, model: AgentSelectionModel, version: int,
                        metadata: dict[str, Any]) -> None:
        kafka = metadata.get("kafka") or {}
        offsets: dict[int, int] = {}
        if kafka.get("topic") == self.kafka_topic:
            offsets = {int(p): int(o) for p, o in (kafka.get("offsets") or {}).items()}
        self._model = model
        self._offsets = offsets
        self._version = version
        self._model_loaded = True
        self._known_agents = set(model.agents)
        self._known_tasks = set(model.task_types)
        self._buffer.clear()
        self._snapshots.clear()
        self._snapshots.append((self._applied_total, model.copy()))
        self._last_scores = metadata.get("scores")
        self.metrics.version.set(version)
        log.info("loaded model version %d (%d events seen, offsets %s)", version,
                 model.events_seen, offsets)

    def start(self) -> None:
        """Load the newest model and start the consumer thread."""
        if self.running:
            return
        self._ensure_loaded()
        if self.model_publisher is not None and self._version:
            # serving: a follower started before this trainer gets its model.
            self.model_publisher.publish(self.store, self._version)
        # With Kafka the consumer is created by the thread (_ensure_source):
        # a broker that is down at start must not fail or block start().
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="model-updater", daemon=True)
        self._thread.start()
        log.info("model updater started (%s, strategy %s)",
                 "kafka" if self.kafka_servers is not None else "embedded bus",
                 self.update_strategy.value)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread, apply what is queued, save, commit, close."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("model updater thread did not stop within %.1f s", timeout)
                return
            self._thread = None
        if self._source is None:
            # Kafka never answered: nothing was consumed; save what a retrain changed.
            if self._dirty:
                self._save_and_commit(force=False)
            return
        try:
            with self._ingest_lock:
                self._drain_source(timeout=0.0)
                self._flush_pending()
            self._save_and_commit(force=False)
        except SourceError as exc:
            # The model (with its offsets) is saved or unchanged; only the
            # Kafka side failed, and the next start seeks to the saved offsets.
            log.warning("final poll or commit failed: %s", exc)
            if self._dirty:
                self._save_and_commit(force=False, commit=False)
        if self.kafka_servers is not None:
            try:
                self._source.close()
            except SourceError as exc:
                log.warning("closing the Kafka consumer failed: %s", exc)
            self._source = None
        log.info("model updater stopped")

    # -- the consumer loop ------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.1
        try:
            while not self._stop_event.is_set():
                try:
                    self._step()
                    backoff = 0.1
                except Exception as exc:  # the outermost loop: log, count, go on
                    if isinstance(exc, SourceError):
                        # Expected while Kafka is away: no traceback, same counter.
                        log.warning("%s; retrying in %.1f s", exc, backoff)
                    else:
                        log.exception("model updater loop failed; retrying in %.1f s", backoff)
                    with self._model_lock:
                        self._counters.errors += 1
                        self._counters.last_error = f"{type(exc).__name__}: {exc}"
                    self.metrics.errors.inc()
                    self._stop_event.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            if not self._stop_event.is_set():
                log.error("model updater thread exited unexpectedly")

    def _ensure_source(self) -> None:
        """Create the Kafka consumer if there is none (ingest lock held)."""
        if self._source is not None or self.kafka_servers is None:
            return
        try:
            self._source = KafkaSource(
                self.kafka_servers, self.kafka_topic, self.consumer_group,
                positions=self._positions, on_revoke=self._on_revoke,
                consumer_factory=self._consumer_factory,
                max_poll_records=max(500, self.batch_size), **self._consumer_config)
        except SourceError as exc:
            self._source_error = str(exc)
            raise
        self._source_error = None
        log.info("consuming %s from %s as group %s", self.kafka_topic, self.kafka_servers,
                 self.consumer_group)

    def _step(self) -> None:
        with self._ingest_lock:
            self._ensure_source()
            wait = 0.2
            if self._pending_since is not None:
                left = self._pending_since + self.batch_timeout_seconds - time.monotonic()
                wait = max(0.0, min(wait, left))
            if self._pending and isinstance(self._source, EmbeddedSource):
                # The bus's wakeup stays set while events are queued, so a wait
                # would return at once; poll in small steps until the batch fills.
                if len(self.event_bus or ()) == 0:
                    self._stop_event.wait(min(wait, 0.02))
                wait = 0.0
            self._drain_source(timeout=wait, once=True)
            due = self._pending_since is not None and (
                time.monotonic() - self._pending_since >= self.batch_timeout_seconds)
            if len(self._pending) >= self.batch_size or due:
                self._flush_pending()
            if self._commit_request is not None and self._source is not None:
                offsets, self._commit_request = self._commit_request, None
                self._source.commit(offsets)
            if self._source is not None:
                positions = {**self._offsets, **self._pending_offsets}
                self._lag = self._source.lag(positions)
                self.metrics.lag.set(float("nan") if self._lag is None else self._lag)
        if (self.enable_auto_save and self._dirty
                and time.monotonic() - self._last_save >= self.save_interval_seconds):
            self._save_and_commit(force=False)

    def _drain_source(self, timeout: float, once: bool = False) -> None:
        """Move what the source has into the pending list (ingest lock held)."""
        assert self._source is not None
        limit = max(self.batch_size, 10_000)
        while True:
            values, offsets = self._source.poll(timeout, limit)
            if values or offsets:
                if self._pending_since is None:
                    self._pending_since = time.monotonic()
                self._pending.extend(values)
                self._pending_offsets.update(offsets)
            if once or (not values and not offsets):
                return
            timeout = 0.0

    def _flush_pending(self) -> int:
        """Apply the pending values (ingest lock held); return events applied."""
        values, offsets = self._pending, self._pending_offsets
        self._pending, self._pending_offsets, self._pending_since = [], {}, None
        if not values and not offsets:
            return 0
        applied = 0
        # Apply in slices so one huge backlog does not hold the model lock long.
        step = max(self.batch_size, 10_000)
        for start in range(0, max(len(values), 1), step):
            last = start + step >= len(values)
            applied += self.ingest(values[start : start + step], offsets if last else None)
        return applied

    def _on_revoke(self) -> None:
        # Called inside consumer.poll on the consumer thread (ingest lock held).
        self._flush_pending()
        self._save_and_commit(force=False, commit_now=True)

    def _positions(self) -> dict[int, int]:
        with self._model_lock:
            return dict(self._offsets)

    # -- applying events ---------------------------------------------------------
    def _invalid(self, fault: str, message: str) -> None:
        self._counters.invalid += 1
        faults = self._counters.invalid_by_fault
        faults[fault] = faults.get(fault, 0) + 1
        if fault not in self._faults_logged:
            self._faults_logged.add(fault)
            log.warning("skipping invalid event (%s): %s (further %r faults are only counted)",
                        fault, message, fault)

    def ingest(self, values: list[Any], offsets: dict[int, int] | None = None) -> int:
        """Validate, de-duplicate and apply raw events (dicts or message bytes)
        as one batch; ``offsets`` are the source positions after them.

        Returns the number of events applied. Invalid events are counted by
        fault and skipped; they never stop the events behind them.
        """
        self._ensure_loaded()
        builder = BatchBuilder()
        seen = self._seen
        invalid = duplicates = 0
        with self._model_lock:
            known_agents, known_tasks = self._known_agents, self._known_tasks
            for raw in values:
                # Fast path: the common run event as the monitor produces it,
                # without building the normalised dict (see run_fields).
                fields = None
                if type(raw) is bytes:
                    if len(raw) <= MAX_EVENT_BYTES:
                        try:  # noqa: SIM105 - contextlib.suppress costs ~0.2 us per event here
                            fields = run_fields(orjson.loads(raw))
                        except orjson.JSONDecodeError:
                            pass  # decode_event below reports it
                elif type(raw) is dict:
                    fields = run_fields(raw)
                event = None
                try:
                    if fields is None:
                        event = validate_event(raw) if isinstance(raw, dict) else decode_event(raw)
                        event_id, agent = event["event_id"], event["agent_name"]
                        task = event["task_type"]
                    else:
                        event_id, agent, task = fields[0], fields[2], fields[4]
                    if agent not in known_agents:
                        if len(known_agents) >= self.max_agents:
                            raise InvalidEvent("capacity:agent_name",
                                               f"more than max_agents={self.max_agents} agents")
                        known_agents.add(agent)
                    if task not in known_tasks:
                        if len(known_tasks) >= self.max_task_types:
                            raise InvalidEvent(
                                "capacity:task_type",
                                f"more than max_task_types={self.max_task_types} task types")
                        known_tasks.add(task)
                except InvalidEvent as exc:
                    invalid += 1
                    self._invalid(exc.fault, str(exc))
                    continue
                if not seen.add(event_id):
                    duplicates += 1
                    continue
                if event is None:
                    assert fields is not None
                    builder.add_row(task, agent, True, 1.0 if fields[5] == "success" else 0.0,
                                    fields[1])
                else:
                    builder.add(event)
            batch = builder.build()
            started = time.perf_counter()
            self._apply(batch)
            elapsed = time.perf_counter() - started
            if offsets:
                self._offsets.update(offsets)
            c = self._counters
            c.consumed += len(values)
            c.applied += len(batch)
            c.duplicates += duplicates
            if len(batch):
                c.batches += 1
                c.update_seconds_total += elapsed
                c.last_update_seconds = elapsed
                c.last_update_timestamp = self.clock()
            if len(batch) or offsets:
                self._dirty = True
            buffered = len(self._buffer)
        self.metrics.events.labels("applied").inc(len(batch))
        self.metrics.events.labels("duplicate").inc(duplicates)
        self.metrics.events.labels("invalid").inc(invalid)
        self.metrics.buffer.set(buffered)
        return len(batch)

    def _apply(self, batch: EventBatch) -> None:
        """Learn ``batch`` (model lock held): model, buffer, retrain journal, snapshots."""
        if not len(batch):
            return
        target = self._holdout_target()
        if len(batch) > target:
            # Snapshot just before the batch's last `target` events, so a
            # retrain right after a large batch still has a fair holdout.
            split = len(batch) - target
            self._model.update(batch.take(slice(0, split)))
            self._snapshots.append((self._applied_total + split, self._model.copy()))
            self._model.update(batch.take(slice(split, None)))
        else:
            self._model.update(batch)
        self._buffer.append(batch)
        if self._retraining:
            self._journal.append(batch)
        self._applied_total += len(batch)
        newest = self._snapshots[-1][0] if self._snapshots else -1
        if self._applied_total - newest >= target:
            self._snapshots.append((self._applied_total, self._model.copy()))
        self._report_probation()

    def _report_probation(self) -> None:
        """Log, count and keep what the serving model's probation did (model lock held)."""
        for event, task_type, agent in self._model.probation_events():
            self.metrics.probation.labels(event).inc()
            log.info("model: %s %s on task type %s", _PROBATION_LOG[event], agent, task_type)
            self._probation_seq += 1
            self._probation_log.append({
                "seq": self._probation_seq, "event": event, "task_type": task_type,
                "agent": agent, "timestamp": utc_iso(self.clock())})

    def _holdout_target(self) -> int:
        return max(self.min_holdout_events, int(self.holdout_fraction * self.buffer_size))

    def process_pending(self, timeout: float = 0.0) -> int:
        """Synchronously read what the source has now and apply it; return events applied.

        For simulated time and tests: no dependence on the thread's timing.
        With Kafka, ``timeout`` is how long to poll for records.
        """
        self._ensure_loaded()
        with self._ingest_lock:
            self._ensure_source()
            self._drain_source(timeout)
            return self._flush_pending()

    # -- predictions -----------------------------------------------------------------
    def predict_best_agent(
        self,
        task_type: str | None = None,
        context: dict[str, Any] | None = None,
        top_k: int = 3,
        explore: bool = False,
    ) -> list[tuple[str, float]]:
        """Rank agents for ``task_type``; see :meth:`AgentSelectionModel.predict_best_agent`."""
        if not self._loaded:
            self._ensure_loaded()
        with self._model_lock:
            return self._model.predict_best_agent(task_type, context, top_k, explore)

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
        rejected, skipped or failed, as in ``model_retrains_total``). ``duration_ms`` is the
        retrain: candidate, held-out scoring and promotion, without the save.

        ``success`` is False, with the metric result ``failed``, for an
        unknown ``model_type``; and False with result ``skipped`` when there
        is nothing to learn from: an empty buffer, or fewer than
        ``min_holdout_events`` events since the last promotion to hold out
        (a candidate that cannot be validated is never promoted). A rejected
        candidate is ``success`` True, ``promoted`` False.
        """
        retrain_type = "full" if force_full_retrain else "incremental"
        started = time.perf_counter()
        # duration_ms is the retrain itself (candidate, scoring, promotion);
        # persisting a promoted model is storage I/O, reported as save_ms.
        save_seconds = 0.0
        result: dict[str, Any] = {
            "success": False,
            "model_type": model_type,
            "retrain_type": retrain_type,
            "events_processed": 0,
            "duration_ms": 0.0,
            "reason": reason,
            "timestamp": utc_iso(self.clock()),
            "promoted": False,
            "candidate_score": None,
            "serving_score": None,
            "model_version": self._version,
        }

        def finish(metric_result: str, error: str | None = None) -> dict[str, Any]:
            duration = time.perf_counter() - started - save_seconds
            result["duration_ms"] = round(duration * 1000.0, 3)
            result["result"] = metric_result
            if error is not None:
                result["error"] = error
            label = model_type if model_type in MODEL_TYPES else INVALID_MODEL_TYPE
            self.metrics.retrains.labels(label, retrain_type, metric_result).inc()
            if metric_result in ("promoted", "rejected"):
                self.metrics.retrain_duration.labels(retrain_type).observe(duration)
                self.metrics.retrain_events.set(result["events_processed"])
            with self._model_lock:
                self._last_retrain = dict(result)
            log.info("retrain (%s, %s): %s %s", retrain_type, reason, metric_result,
                     error or "")
            return result

        if model_type not in MODEL_TYPES:
            return finish("failed", f"unknown model_type {model_type!r}; known: "
                                    f"{', '.join(MODEL_TYPES)}")
        self._ensure_loaded()
        with self._retrain_lock:
            with self._model_lock:
                buffer, weights = self._buffer.contents()
                if not len(buffer):
                    return finish("skipped", "no buffered events to retrain on")
                snapshot = self._pick_snapshot(len(buffer))
                if snapshot is None:
                    return finish(
                        "skipped",
                        f"fewer than min_holdout_events={self.min_holdout_events} events "
                        "applied since the last promotion or load; retry later")
                seq, baseline = snapshot
                holdout_start = len(buffer) - (self._applied_total - seq)
                serving = self._model.copy()
                self._retraining = True
                self._journal = []
            promoted = False
            try:
                outcome = retrain(
                    serving, buffer, weights, baseline=baseline, holdout_start=holdout_start,
                    full=force_full_retrain, discount=self.retrain_discount,
                    recency_weight=self.recency_weight, tolerance=self.promotion_tolerance)
                with self._model_lock:
                    if outcome.promoted:
                        assert outcome.model is not None and outcome.weights is not None
                        self._promote(outcome.model, buffer, outcome.weights)
                        promoted = True
            finally:
                with self._model_lock:
                    self._retraining = False
                    self._journal = []
            result.update(
                success=True,
                events_processed=len(buffer),
                promoted=promoted,
                candidate_score=outcome.candidate_score.score,
                serving_score=outcome.serving_score.score,
                scores={"candidate": outcome.candidate_score.as_dict(),
                        "serving": outcome.serving_score.as_dict(),
                        "holdout_events": len(buffer) - holdout_start},
            )
            self._last_scores = result["scores"]
            if promoted:
                self.metrics.last_retrain.set(self.clock())
                # A promoted model is a new version: always saved.
                save_started = time.perf_counter()
                self._save_and_commit(force=True)
                save_seconds = time.perf_counter() - save_started
                result["save_ms"] = round(save_seconds * 1000.0, 3)
            result["model_version"] = self._version
            return finish("promoted" if promoted else "rejected")

    def _pick_snapshot(self, buffered: int) -> tuple[int, AgentSelectionModel] | None:
        for seq, model in reversed(self._snapshots):
            held_out = self._applied_total - seq
            if self.min_holdout_events <= held_out < buffered:
                return seq, model
        return None

    def _promote(self, model: AgentSelectionModel, buffer: EventBatch,
                 weights: np.ndarray) -> None:
        """Serve ``model`` (model lock held); events applied meanwhile are re-applied."""
        journal = EventBatch.concat(self._journal)
        model.update(journal)
        self._model = model
        self._buffer.clear()
        self._buffer.append(buffer, weights)
        self._buffer.append(journal)
        self._snapshots.clear()
        self._snapshots.append((self._applied_total, model.copy()))
        self._dirty = True
        self._report_probation()

    # -- persistence -------------------------------------------------------------------
    def save(self) -> int:
        """Save the serving model as a new version now; return the version."""
        self._ensure_loaded()
        self._save_and_commit(force=True)
        return self._version

    def _save_and_commit(self, force: bool, commit_now: bool = False,
                         commit: bool = True) -> None:
        with self._model_lock:
            if not force and not self._dirty:
                return
            arrays = self._model.to_arrays()
            metadata = self._model.metadata()
            offsets = dict(self._offsets)
            kafka = ({"topic": self.kafka_topic,
                      "offsets": {str(p): o for p, o in offsets.items()}}
                     if self.kafka_servers is not None else None)
            metadata.update(
                model_type=MODEL_TYPE,
                parent_version=self._version or None,
                created=utc_iso(self.clock()),
                hyperparameters=self._hyper(),
                scores=self._last_scores,
                kafka=kafka,
            )
            self._dirty = False
            self._last_save = time.monotonic()
        try:
            version = self.store.save(arrays, metadata)
        except OSError:
            with self._model_lock:
                self._dirty = True
            raise
        with self._model_lock:
            self._version = version
            self._counters.saves += 1
        self.metrics.version.set(version)
        if self.model_publisher is not None:
            self.model_publisher.publish(self.store, version)  # serving: queued, never blocks
        if commit and self.kafka_servers is not None and self._source is not None:
            if commit_now or not self.running or threading.current_thread() is self._thread:
                self._source.commit(offsets)
            else:
                # KafkaConsumer is not thread-safe: the consumer thread commits.
                self._commit_request = offsets

    def rollback(self, version: int) -> int:
        """Serve the model of ``version`` again (saved as a new version; returned).

        The stream position is kept: events applied after ``version`` are not
        re-applied (rollback discards a bad model, it does not replay).
        """
        self._ensure_loaded()
        with self._retrain_lock:
            with self._model_lock:
                stored = self.store.load(version)
                model = self._model.fresh()
                model.load(stored.arrays, stored.metadata)
                offsets = dict(self._offsets)
                kafka = ({"topic": self.kafka_topic,
                          "offsets": {str(p): o for p, o in offsets.items()}}
                         if self.kafka_servers is not None else None)
            new_version = self.store.rollback(version, {"kafka": kafka,
                                                        "created": utc_iso(self.clock())})
            with self._model_lock:
                self._install_loaded(model, new_version, stored.metadata)
                self._offsets = offsets
        if self.model_publisher is not None:
            self.model_publisher.publish(self.store, new_version)  # serving: queued
        return new_version

    # -- observability ---------------------------------------------------------------------
    def kafka_status(self) -> str | None:
        """None when Kafka is reachable and the consumer exists, else why not
        (always None without Kafka). Probes at most once a second."""
        if self.kafka_servers is None:
            return None
        unreachable = self._kafka_check() if self._kafka_check is not None else None
        if unreachable is not None:
            return f"Kafka unreachable: {unreachable}"
        error = self._source_error
        if error is not None:
            return f"Kafka consumer not connected: {error}"
        return None

    def get_metrics(self) -> dict[str, Any]:
        """Counters and state of the updater (a snapshot; JSON-ready)."""
        self._ensure_loaded()
        kafka_error = self.kafka_status()  # network I/O: outside the model lock
        with self._model_lock:
            c = self._counters
            return {
                "running": self.running,
                "model_loaded": self._model_loaded,
                "model_version": self._version,
                "update_strategy": self.update_strategy.value,
                "source": "kafka" if self.kafka_servers is not None else "embedded",
                "event_buffer_size": len(self._buffer),
                "event_buffer_capacity": self.buffer_size,
                "events_consumed": c.consumed,
                "events_applied": c.applied,
                "duplicates": c.duplicates,
                "invalid": c.invalid,
                "invalid_by_fault": dict(c.invalid_by_fault),
                "batches": c.batches,
                "avg_update_time_ms": (1000.0 * c.update_seconds_total / c.batches
                                       if c.batches else None),
                "last_update_time_ms": (None if c.last_update_seconds is None
                                        else 1000.0 * c.last_update_seconds),
                "last_update_timestamp": (None if c.last_update_timestamp is None
                                          else utc_iso(c.last_update_timestamp)),
                "pending_events": len(self._pending) + (len(self.event_bus)
                                                        if self.event_bus is not None else 0),
                "events_seen": self._model.events_seen,
                "agents": len(self._model.agents),
                "task_types": len(self._model.task_types),
                "last_retrain": None if self._last_retrain is None else dict(self._last_retrain),
                "consumer_lag": self._lag,
                "kafka_offsets": dict(self._offsets),
                "errors": c.errors,
                "last_error": c.last_error,
                "saves": c.saves,
                "kafka_reachable": (None if self.kafka_servers is None
                                    else kafka_error is None),
                "kafka_error": kafka_error,
                "corrupt_versions_skipped": len(self._corrupt_versions),
                "corrupt_versions": [dict(v) for v in self._corrupt_versions],
                "parked_pairs": self._model.parked_pairs(),
                "recent_probation_events": [dict(e) for e in self._probation_log],
            }
