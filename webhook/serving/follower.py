"""ModelFollower: serve the trainer's newest model in another process, read-only.

An orchestrator that does not train (another process, machine or replica)
follows the versions the trainer (``python -m autoretrain.webhook``) saves,
either from its model store directory (a shared volume; ``model_storage_path``)
or from the model topic (``kafka_servers``; see :mod:`.model_topic`), and
answers ``predict_best_agent`` exactly as :class:`~autoretrain.RealTimeModelUpdater`
does: same signature, same model class, same arguments. Code written against
the updater runs unchanged against a follower.

Loading happens on a background thread (:meth:`ModelFollower.start`) or on
:meth:`ModelFollower.refresh`; a new version is built completely before it
replaces the served one in one reference swap, so a prediction never waits
for a load. A version that cannot be served is skipped, counted in
``autoretrain_follower_load_failures_total{reason}`` and logged, and the
last good version keeps serving. Reasons:

``corrupt``
    unreadable metadata or arrays, a checksum mismatch, content the model rejects;
``partial``
    a store version missing a file, a truncated message;
``foreign``
    another model type, or another store or message format;
``older``
    a message whose version is not newer than the one served;
``too_large``
    a message larger than ``max_message_bytes``.

Before any model exists, ``version`` is None and ``predict_best_agent``
returns ``[]`` (as the updater's empty model does): the orchestrator's
request path never gets an exception for it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from autoretrain.exporter.background import BackgroundLoop

from ..updater.model import AgentEstimate, AgentSelectionModel, check_top_k
from ..updater.objective import Objective
from ..updater.results import MODEL_TYPE
from ..updater.store import CorruptModel, ForeignModel, ModelStore
from .model_topic import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TOPIC,
    InvalidModelMessage,
    ModelMessage,
    decode_model,
    reason_counter,
)

__all__ = ["LOAD_FAILURE_REASONS", "ModelFollower"]

log = logging.getLogger(__name__)

_Row = TypeVar("_Row")  # what a ranking method returns a list of

#: ``reason`` label values of ``autoretrain_follower_load_failures_total``.
LOAD_FAILURE_REASONS = ("corrupt", "partial", "foreign", "older", "too_large")
_STORE_REASONS = {"metadata_missing": "partial", "arrays_missing": "partial"}
_MESSAGE_REASONS = {"too_large": "too_large", "truncated": "partial",
                    "unsupported_format": "foreign", "foreign_format": "foreign"}
# Constructor arguments of AgentSelectionModel in a version's "hyperparameters"
# (the updater adds its own, such as batch_size, to the same map).
_MODEL_HYPERPARAMETERS = ("half_life_seconds", "window_size", "learning_rate", "hash_bits",
                          "retry_after_seconds", "detect_drops")


class FollowerMetrics:
    """``autoretrain_follower_*``."""

    def __init__(self, registry: CollectorRegistry, age: Callable[[], float]) -> None:
        self.version = Gauge(
            "autoretrain_follower_model_version",
            "Version of the model this follower serves (0 before the first).",
            registry=registry)
        self.age = Gauge(
            "autoretrain_follower_model_age_seconds",
            "Seconds since the served version was saved by the trainer (NaN before a model).",
            registry=registry)
        self.age.set_function(age)
        self.loads = Counter(
            "autoretrain_follower_loads",
            "Model versions this follower loaded and served.", registry=registry)
        self.failures = reason_counter(
            "autoretrain_follower_load_failures", "Versions skipped by reason",
            LOAD_FAILURE_REASONS, registry)
        self.errors = Counter(
            "autoretrain_follower_errors",
            "Failed polls of the source (store unreadable, Kafka away); retried.",
            registry=registry)


class _Served:
    """One served version: the model and what describes it (replaced whole)."""

    __slots__ = ("model", "promoted_at", "version")

    def __init__(self, model: AgentSelectionModel, version: int, promoted_at: float | None):
        self.model = model
        self.version = version
        self.promoted_at = promoted_at


class ModelFollower:
    """Serves the newest model version the trainer saved, read-only.

    Parameters
    ----------
    model_storage_path
        Follow this model store directory (the trainer's
        ``model_storage_path``, on a shared volume). Exactly one of it and
        ``kafka_servers``.
    kafka_servers
        Follow the model topic on these bootstrap servers.
    topic
        The model topic (default ``agent-models``).
    model_type
        The model type followed (the message key; ``model_type`` in the metadata).
    poll_interval_seconds
        Store: how often the directory is listed. Kafka: the longest a
        poll waits for a message.
    max_message_bytes
        Kafka: larger messages are skipped (``too_large``).
    seed
        Seed of the exploration draws (``explore=True``); each version gets
        its own generator, seeded from ``seed`` and the version.
    registry
        Prometheus registry of the ``autoretrain_follower_*`` metrics; a fresh one when None.
    clock
        Wall clock (the model's age).
    consumer_factory, consumer_config
        Kafka: builds the consumer (tests), and further ``KafkaConsumer`` settings.
    objective
        What to rank by (:class:`~autoretrain.webhook.updater.objective.Objective`);
        None (the default): the trainer's, as each version's metadata records
        it (quality for a version saved before objectives existed).
    """

    def __init__(
        self,
        model_storage_path: str | os.PathLike[str] | None = None,
        *,
        kafka_servers: str | list[str] | None = None,
        topic: str = DEFAULT_TOPIC,
        model_type: str = MODEL_TYPE,
        poll_interval_seconds: float = 0.5,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        seed: int | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        consumer_factory: Callable[..., Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        objective: Objective | None = None,
    ) -> None:
        if (model_storage_path is None) == (kafka_servers is None):
            raise ValueError("give exactly one of model_storage_path (follow a store "
                             "directory) and kafka_servers (follow the model topic)")
        if not (isinstance(poll_interval_seconds, int | float)
                and 0 < poll_interval_seconds < math.inf):
            raise ValueError(f"poll_interval_seconds must be a number > 0, "
                             f"got {poll_interval_seconds!r}")
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        self.model_storage_path = model_storage_path
        self.kafka_servers = kafka_servers
        self.topic = topic
        self.model_type = model_type
        self.poll_interval_seconds = float(poll_interval_seconds)
        self.max_message_bytes = max_message_bytes
        self.seed = seed
        if objective is not None and not isinstance(objective, Objective):
            raise ValueError(f"objective must be an Objective or None, got {objective!r}")
        self.objective = objective
        self.clock = clock
        self.registry = CollectorRegistry() if registry is None else registry
        self.metrics = FollowerMetrics(self.registry, self._age)
        self._source: _StoreSource | _KafkaSource = (
            _StoreSource(ModelStore(model_storage_path)) if model_storage_path is not None
            else _KafkaSource(kafka_servers, topic, max_message_bytes,  # type: ignore[arg-type]
                              consumer_factory, consumer_config or {}))
        self._served: _Served | None = None
        # Held for a prediction (as the updater's model lock is) and for the
        # swap; never for a load, so a prediction never waits for one.
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._failures: dict[str, int] = dict.fromkeys(LOAD_FAILURE_REASONS, 0)
        self._source_error: str | None = None
        self._loop = BackgroundLoop(
            "model-follower", self._step,
            interval=self.poll_interval_seconds if model_storage_path is not None else 0.0,
            on_error=self._on_error, initial_backoff=0.2, max_backoff=2.0)

    # -- what an orchestrator uses ----------------------------------------------------
    def predict_best_agent(
        self,
        task_type: str | None = None,
        context: dict[str, Any] | None = None,
        top_k: int = 3,
        explore: bool = False,
    ) -> list[tuple[str, float]]:
        """Rank agents for ``task_type`` as :meth:`RealTimeModelUpdater.predict_best_agent`
        does; ``[]`` before the first model is loaded."""
        return self._ranked(AgentSelectionModel.predict_best_agent,
                            task_type, context, top_k, explore)

    def rank_agents(
        self,
        task_type: str | None = None,
        context: dict[str, Any] | None = None,
        top_k: int = 3,
        explore: bool = False,
    ) -> list[AgentEstimate]:
        """:meth:`predict_best_agent` with each agent's expected quality, cost and
        latency; ``[]`` before the first model is loaded."""
        return self._ranked(AgentSelectionModel.rank_agents, task_type, context, top_k, explore)

    def _ranked(self, rank: Callable[[AgentSelectionModel, str | None, dict[str, Any] | None,
                                      int, bool], list[_Row]],
                task_type: str | None, context: dict[str, Any] | None, top_k: int,
                explore: bool) -> list[_Row]:
        """``rank`` (a ranking method of the model) on the served model, under the lock."""
        with self._lock:
            served = self._served
            if served is None:
                check_top_k(top_k)
                return []
            return rank(served.model, task_type, context, top_k, explore)

    @property
    def version(self) -> int | None:
        """Version served; None before the first model is loaded."""
        served = self._served
        return None if served is None else served.version

    @property
    def promoted_at(self) -> float | None:
        """When the trainer saved the served version (unix seconds), if known."""
        served = self._served
        return None if served is None else served.promoted_at

    @property
    def model(self) -> AgentSelectionModel | None:
        """The served model (do not mutate), None before the first."""
        served = self._served
        return None if served is None else served.model

    @property
    def loaded(self) -> bool:
        return self._served is not None

    @property
    def failures(self) -> dict[str, int]:
        """Versions skipped so far, by reason."""
        with self._lock:
            return dict(self._failures)

    def status(self) -> str | None:
        """None while the source answers, else why not (the model still serves)."""
        return self._source_error

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        """Follow in the background (returns at once; the first load happens on the thread)."""
        self._loop.start()
        log.info("following model %s from %s", self.model_type,
                 f"store {self.model_storage_path}" if self.model_storage_path is not None
                 else f"topic {self.topic} on {self.kafka_servers}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread and close the Kafka consumer; False if the thread did not stop."""
        stopped = self._loop.stop(timeout)
        # A load stuck in a Kafka call holds the refresh lock (kafka-python's
        # metadata lookups can wait without a bound); waiting for it here
        # would hang the orchestrator's shutdown, so give up after the timeout
        # and leave the consumer to the (daemon) thread.
        if not self._refresh_lock.acquire(timeout=timeout):
            log.warning("the follower's load did not end within %.1f s; "
                        "its Kafka consumer is left to its thread", timeout)
            return False
        try:
            self._source.close()
        finally:
            self._refresh_lock.release()
        return stopped

    def refresh(self, timeout: float = 5.0) -> bool:
        """Load the newest version now if it is newer than the one served; True when
        one was installed. Kafka: reads what the topic holds (waiting up to
        ``timeout`` for the first answer). Raises the source's error (a
        :class:`OSError` for a store, a Kafka error) so tests and simulations see it."""
        with self._refresh_lock:
            served = self._served
            current = None if served is None else served.version
            if isinstance(self._source, _StoreSource):
                return self._refresh_store(self._source, current)
            return self._refresh_kafka(self._source, current, timeout)

    # -- loading ----------------------------------------------------------------------
    def _step(self) -> None:
        self.refresh(timeout=self.poll_interval_seconds)
        self._source_error = None

    def _on_error(self, exc: BaseException, backoff: float) -> None:
        self.metrics.errors.inc()
        self._source_error = f"{type(exc).__name__}: {exc}"
        log.warning("following the model failed: %s; retrying in %.1f s",
                    self._source_error, backoff)

    def _skip(self, reason: str, version: int | None, detail: str) -> None:
        self.metrics.failures.labels(reason).inc()
        with self._lock:
            self._failures[reason] += 1
        served = self._served
        log.warning("skipping model %s (%s): %s; %s",
                    "message" if version is None else f"version {version}", reason, detail,
                    f"still serving version {served.version}" if served is not None
                    else "no model served yet")

    def _build(self, version: int, arrays: dict[str, np.ndarray],
               metadata: dict[str, Any]) -> _Served:
        """The model of a version; CorruptModel/ForeignModel when it does not fit."""
        model_type = metadata.get("model_type", self.model_type)
        if model_type != self.model_type:
            raise ForeignModel(f"model type {str(model_type)[:80]!r}, not {self.model_type!r}")
        try:
            hyper = {k: v for k, v in (metadata.get("hyperparameters") or {}).items()
                     if k in _MODEL_HYPERPARAMETERS}
            # A new generator per version, seeded from the version: the same
            # seed every time would replay the same exploration draws.
            seed = None if self.seed is None else self.seed * 1_000_003 + version
            objective = self.objective or Objective.from_dict(metadata.get("objective"))
            model = AgentSelectionModel(metadata["strategy"], seed=seed, objective=objective,
                                        **hyper)
            model.load(arrays, metadata)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptModel(f"the model rejects it: {type(exc).__name__}: {exc}",
                               "model_invalid") from None
        return _Served(model, version, _parse_time(metadata.get("created")))

    def _install(self, served: _Served) -> None:
        with self._lock:
            previous = self._served
            self._served = served
        self.metrics.version.set(served.version)
        self.metrics.loads.inc()
        log.info("serving model version %d (was %s)", served.version,
                 "none" if previous is None else previous.version)

    def _refresh_store(self, source: _StoreSource, current: int | None) -> bool:
        for version in reversed(source.store.versions()):
            if current is not None and version <= current:
                return False
            if version in source.bad:
                continue
            try:
                stored = source.store.load(version)
                served = self._build(version, stored.arrays, stored.metadata)
            except CorruptModel as exc:
                source.bad.append(version)
                reason = ("foreign" if isinstance(exc, ForeignModel)
                          else _STORE_REASONS.get(exc.fault, "corrupt"))
                self._skip(reason, version, str(exc))
                continue
            self._install(served)
            return True
        return False

    def _refresh_kafka(self, source: _KafkaSource, current: int | None, timeout: float) -> bool:
        best: ModelMessage | None = None
        candidates: list[ModelMessage] = []
        for key, value in source.poll(timeout):
            if key is not None and key != self.model_type.encode():
                self._skip("foreign", None, f"key {key[:80]!r}, not {self.model_type!r}")
                continue
            try:
                message = decode_model(value, self.max_message_bytes)
            except InvalidModelMessage as exc:
                self._skip(_MESSAGE_REASONS.get(exc.fault, "corrupt"), None, str(exc))
                continue
            if message.model_type != self.model_type:
                self._skip("foreign", message.version,
                           f"model type {message.model_type!r}, not {self.model_type!r}")
                continue
            newest = max(current or 0, best.version if best is not None else 0)
            if message.version < newest:
                self._skip("older", message.version, f"not newer than version {newest}")
                continue
            if message.version == newest:
                continue  # the same version again (a trainer re-publishing at start)
            best = message
            candidates.append(message)
        for message in reversed(candidates):
            try:
                served = self._build(message.version, message.arrays, message.metadata)
            except CorruptModel as exc:
                self._skip("foreign" if isinstance(exc, ForeignModel) else "corrupt",
                           message.version, str(exc))
                continue
            self._install(served)
            return True
        return False

    def _age(self) -> float:
        served = self._served
        if served is None or served.promoted_at is None:
            return math.nan
        return max(0.0, self.clock() - served.promoted_at)


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class _StoreSource:
    def __init__(self, store: ModelStore) -> None:
        self.store = store
        # Versions that failed to load: skipped (and counted) once, not every poll.
        self.bad: deque[int] = deque(maxlen=1000)

    def close(self) -> None:
        pass


class _KafkaSource:
    """A group-less consumer of every partition of the model topic, from the beginning.

    Until it has read up to the end offsets seen at (re)start, :meth:`poll`
    returns everything as one batch, so a follower started late installs
    the newest version at once rather than replaying the history.
    """

    def __init__(self, servers: str | list[str], topic: str, max_message_bytes: int,
                 consumer_factory: Callable[..., Any] | None, config: dict[str, Any]) -> None:
        self.servers = servers
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self._factory = consumer_factory
        self._config = config
        self._consumer: Any = None
        self._partitions: list[Any] = []
        self._catch_up: dict[Any, int] = {}
        self._held: list[tuple[bytes | None, bytes | None]] = []

    def _open(self) -> Any:
        if self._consumer is None:
            if self._factory is not None:
                factory = self._factory
            else:
                from kafka import KafkaConsumer

                factory = KafkaConsumer
            settings: dict[str, Any] = {
                "bootstrap_servers": self.servers, "group_id": None,
                "enable_auto_commit": False, "auto_offset_reset": "earliest",
                "client_id": "autoretrain-model-follower",
                # Short waits: the follower's loop retries, and stop() stays quick.
                "bootstrap_timeout_ms": 5000, "reconnect_backoff_max_ms": 1000,
                "max_partition_fetch_bytes": self.max_message_bytes + 65536,
                "fetch_max_bytes": max(52428800, self.max_message_bytes + 65536),
            }
            settings.update(self._config)
            self._consumer = factory(**settings)
        if not self._partitions:
            from kafka import TopicPartition

            found = self._consumer.partitions_for_topic(self.topic)
            if not found:
                # A consumer keeps the "unknown topic" answer in its metadata:
                # the next attempt asks with a fresh one.
                self.close()
                raise LookupError(f"the model topic {self.topic!r} does not exist yet "
                                  "(the trainer creates it at its first publish)")
            self._partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
            self._consumer.assign(self._partitions)
            self._consumer.seek_to_beginning(*self._partitions)
            ends = self._consumer.end_offsets(self._partitions)
            self._catch_up = {tp: end for tp, end in ends.items() if end > 0}
        return self._consumer

    def poll(self, timeout: float) -> list[tuple[bytes | None, bytes | None]]:
        """(key, value) of the records read within ``timeout``, oldest first."""
        consumer = self._open()
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            for records in consumer.poll(timeout_ms=int(left * 1000)).values():
                self._held.extend((r.key, r.value) for r in records)
            if self._catch_up:
                # position() may wait for an offset reset; bound it by what is left.
                wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
                self._catch_up = {tp: end for tp, end in self._catch_up.items()
                                  if (consumer.position(tp, timeout_ms=wait_ms) or 0) < end}
                if self._catch_up:  # not at the end offsets yet: hold what was read
                    if time.monotonic() >= deadline:
                        return []
                    continue
            out, self._held = self._held, []
            return out

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._partitions, self._catch_up, self._held = [], {}, []
        if consumer is not None:
            consumer.close()
