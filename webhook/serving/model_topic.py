"""The model topic: one message per model version, and the publisher that sends them.

The wire contract (one Kafka message value) is the model store's format in
one compressed envelope::

    b"ARMT" | format byte (1) | zlib( header length (4 bytes, big endian)
                                     | header (UTF-8 JSON) | the .npz bytes )

The header is ``{"format": "autoretrain.model-message/1", "model_type",
"version", "metadata"}``; ``metadata`` is the stored version's JSON as the
store wrote it (store format, version, ``arrays_sha256`` of the ``.npz``
bytes, strategy, names, hyperparameters ...). :func:`decode_model` checks
all of it and raises :class:`InvalidModelMessage` naming the fault; nothing
is ever unpickled. The message key is the model type, so on a compacted
topic the newest version of each model type is kept for followers that
start later.

Version numbers are the store's: a store never reuses a number (see
:meth:`~autoretrain.webhook.updater.store.ModelStore.save`), so they grow
across trainer restarts as long as the store directory survives. A new,
empty store starts again at 1 and followers would ignore it as older until
it passes the last published number: keep the store on a persistent volume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from autoretrain.exporter.background import BackgroundLoop
from autoretrain.exporter.kafka_security import KafkaSecurity

from ..updater.results import MODEL_TYPE
from ..updater.store import FORMAT as STORE_FORMAT
from ..updater.store import CorruptModel, ModelStore, read_arrays

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TOPIC",
    "MESSAGE_FAULTS",
    "MESSAGE_FORMAT",
    "InvalidModelMessage",
    "ModelMessage",
    "ModelPublisher",
    "decode_model",
    "encode_model",
    "publisher_for",
    "reason_counter",
]

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "agent-models"
MESSAGE_FORMAT = "autoretrain.model-message/1"
MAGIC = b"ARMT"
FORMAT_BYTE = 1
#: Largest message (compressed) the publisher sends and followers accept by default.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Largest decompressed message followers accept (a bound on a zlib bomb).
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024
#: Why a message is not a usable model (``InvalidModelMessage.fault``).
MESSAGE_FAULTS = ("too_large", "not_a_model", "unsupported_format", "truncated", "corrupt",
                  "metadata_invalid", "foreign_format", "checksum_mismatch",
                  "arrays_unreadable")
#: Why a publish failed (``autoretrain_publisher_failures_total{reason}``).
PUBLISH_FAILURES = ("too_large", "kafka_error", "store_error")
# Record batch and record headers around the value (the key is counted apart).
_RECORD_OVERHEAD = 512
_HEADER = struct.Struct(">I")


class InvalidModelMessage(ValueError):
    """A model topic message that is not a usable model; ``fault`` is one of
    :data:`MESSAGE_FAULTS`."""

    def __init__(self, message: str, fault: str) -> None:
        super().__init__(message)
        self.fault = fault


@dataclass(frozen=True, eq=False)
class ModelMessage:
    """One decoded model version."""

    model_type: str
    version: int
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]


def encode_model(model_type: str, version: int, npz: bytes, metadata: dict[str, Any]) -> bytes:
    """The message value for ``version`` of ``model_type``: ``npz`` and ``metadata``
    as :meth:`ModelStore.read` returns them."""
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"model_type must be a non-empty string, got {model_type!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r}")
    if metadata.get("version") != version:
        raise ValueError(f"metadata says version {metadata.get('version')!r}, not {version}")
    header = json.dumps({"format": MESSAGE_FORMAT, "model_type": model_type,
                         "version": version, "metadata": metadata},
                        sort_keys=True, allow_nan=False, separators=(",", ":")).encode()
    body = _HEADER.pack(len(header)) + header + npz
    return MAGIC + bytes([FORMAT_BYTE]) + zlib.compress(body, 6)


def decode_model(value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES) -> ModelMessage:
    """Check and decode a message value; :class:`InvalidModelMessage` naming the fault."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidModelMessage(f"the message has no bytes value ({type(value).__name__})",
                                  "not_a_model")
    value = bytes(value)
    if len(value) > max_bytes:
        raise InvalidModelMessage(
            f"the message is {len(value)} bytes, more than the {max_bytes} accepted", "too_large")
    if not value.startswith(MAGIC) or len(value) < len(MAGIC) + 1:
        raise InvalidModelMessage(f"the message does not start with {MAGIC!r}: not a model",
                                  "not_a_model")
    if value[len(MAGIC)] != FORMAT_BYTE:
        raise InvalidModelMessage(
            f"message format {value[len(MAGIC)]} is not supported (this release reads "
            f"{FORMAT_BYTE})", "unsupported_format")
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(value[len(MAGIC) + 1:], max_decompressed_bytes + 1)
    except zlib.error as exc:
        raise InvalidModelMessage(f"the compressed body is corrupt: {exc}", "corrupt") from None
    if len(body) > max_decompressed_bytes:
        raise InvalidModelMessage(
            f"the body decompresses to more than {max_decompressed_bytes} bytes", "too_large")
    if not inflater.eof:
        raise InvalidModelMessage("the compressed body ends early: truncated", "truncated")
    if inflater.unused_data:
        raise InvalidModelMessage(
            f"{len(inflater.unused_data)} bytes follow the compressed body", "corrupt")
    if len(body) < _HEADER.size:
        raise InvalidModelMessage("the body is shorter than its header length", "truncated")
    (header_len,) = _HEADER.unpack_from(body)
    if _HEADER.size + header_len > len(body):
        raise InvalidModelMessage(
            f"the header length {header_len} exceeds the body ({len(body)} bytes)", "truncated")
    try:
        header = json.loads(body[_HEADER.size:_HEADER.size + header_len])
    except (ValueError, RecursionError) as exc:
        raise InvalidModelMessage(f"the header is not JSON: {exc}", "corrupt") from None
    npz = body[_HEADER.size + header_len:]
    if not isinstance(header, dict):
        raise InvalidModelMessage("the header is not a JSON object", "metadata_invalid")
    if header.get("format") != MESSAGE_FORMAT:
        raise InvalidModelMessage(
            f"header format {str(header.get('format'))[:80]!r} is not {MESSAGE_FORMAT!r}",
            "unsupported_format")
    model_type, version, metadata = (header.get("model_type"), header.get("version"),
                                     header.get("metadata"))
    if not isinstance(model_type, str) or not model_type:
        raise InvalidModelMessage(f"model_type {model_type!r} is not a non-empty string",
                                  "metadata_invalid")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidModelMessage(f"version {version!r} is not an integer >= 1",
                                  "metadata_invalid")
    if not isinstance(metadata, dict):
        raise InvalidModelMessage("metadata is not a JSON object", "metadata_invalid")
    if metadata.get("format") != STORE_FORMAT:
        raise InvalidModelMessage(
            f"model format {str(metadata.get('format'))[:80]!r} is not {STORE_FORMAT!r}",
            "foreign_format")
    if metadata.get("version") != version:
        raise InvalidModelMessage(
            f"metadata says version {metadata.get('version')!r}, the header {version}",
            "metadata_invalid")
    if metadata.get("model_type", model_type) != model_type:
        raise InvalidModelMessage(
            f"metadata says model type {str(metadata.get('model_type'))[:80]!r}, the header "
            f"{model_type!r}", "metadata_invalid")
    if hashlib.sha256(npz).hexdigest() != metadata.get("arrays_sha256"):
        raise InvalidModelMessage(f"version {version}: the arrays do not match their SHA-256",
                                  "checksum_mismatch")
    try:
        arrays = read_arrays(npz, f"version {version}")
    except CorruptModel as exc:
        raise InvalidModelMessage(str(exc), "arrays_unreadable") from None
    return ModelMessage(model_type, version, arrays, metadata)


def reason_counter(name: str, documentation: str, reasons: tuple[str, ...],
                   registry: CollectorRegistry) -> Counter:
    """A counter by ``reason`` whose every reason is exported (at 0) from the start; the
    help text lists them, so it cannot disagree with the label values."""
    counter = Counter(name, f"{documentation} ({' | '.join(reasons)}).", ["reason"],
                      registry=registry)
    for reason in reasons:
        counter.labels(reason)
    return counter


class PublisherMetrics:
    """``autoretrain_publisher_*``: what the trainer sent to the model topic."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.version = Gauge(
            "autoretrain_publisher_model_version",
            "Newest model version published to the model topic (0 before the first).",
            registry=registry)
        self.published = Counter(
            "autoretrain_publisher_published",
            "Model versions published to the model topic.", registry=registry)
        self.failures = reason_counter(
            "autoretrain_publisher_failures", "Failed publishes by reason", PUBLISH_FAILURES,
            registry)
        self.message_bytes = Gauge(
            "autoretrain_publisher_message_bytes",
            "Size of the last model message built (compressed).", registry=registry)
        self.limit_bytes = Gauge(
            "autoretrain_publisher_topic_max_message_bytes",
            "max.message.bytes of the model topic (0 until known).", registry=registry)


class ModelPublisher:
    """Publishes model versions of a store to a compacted Kafka topic.

    :meth:`publish` queues a version and returns at once; a background
    thread sends the newest queued version (older queued ones are obsolete:
    a follower serves only the newest), so a promotion never waits for
    Kafka. Kafka errors are retried with backoff; a model larger than the
    topic allows is not retried: it is logged, counted and reported by
    :meth:`status` until a later version goes through.

    Parameters
    ----------
    kafka_servers
        Bootstrap servers.
    topic
        The model topic, created when missing with ``cleanup.policy=compact``
        and ``max.message.bytes`` = ``max_message_bytes`` (capped by the
        broker's ``socket.request.max.bytes``). An existing topic is used
        with its own settings (a warning when it is not compacted).
    model_type
        The message key.
    max_message_bytes
        ``max.message.bytes`` of a topic this publisher creates.
    partitions, replication_factor
        Of a topic this publisher creates (replication -1: the broker's default).
    registry
        Prometheus registry of the ``autoretrain_publisher_*`` metrics.
    producer_factory, admin_factory
        Build the ``KafkaProducer`` and ``KafkaAdminClient`` (tests).
    send_timeout_seconds
        How long one send waits for the broker's acknowledgement.
    kafka_security
        How the producer and admin client authenticate and encrypts
        (:class:`~autoretrain.exporter.kafka_security.KafkaSecurity`; default PLAINTEXT).
    """

    def __init__(
        self,
        kafka_servers: str | list[str],
        topic: str = DEFAULT_TOPIC,
        *,
        model_type: str = MODEL_TYPE,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        partitions: int = 1,
        replication_factor: int = -1,
        registry: CollectorRegistry | None = None,
        producer_factory: Callable[..., Any] | None = None,
        admin_factory: Callable[..., Any] | None = None,
        send_timeout_seconds: float = 10.0,
        kafka_security: KafkaSecurity | None = None,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int) or (
                max_message_bytes < 1024):
            raise ValueError(f"max_message_bytes must be an integer >= 1024, "
                             f"got {max_message_bytes!r}")
        self.kafka_servers = kafka_servers
        self.topic = topic
        self.model_type = model_type
        self.max_message_bytes = max_message_bytes
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.send_timeout_seconds = send_timeout_seconds
        self._security = kafka_security.client_config() if kafka_security is not None else {}
        self.registry = CollectorRegistry() if registry is None else registry
        self.metrics = PublisherMetrics(self.registry)
        self._producer_factory = producer_factory
        self._admin_factory = admin_factory
        self._producer: Any = None
        self._topic_limit: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pending: tuple[ModelStore, int] | None = None
        self._error: str | None = None
        self._too_large: str | None = None
        self.published_version: int | None = None
        self._closed = False
        self._loop = BackgroundLoop("model-publisher", self._step, on_error=self._on_error,
                                    initial_backoff=0.2, max_backoff=5.0)

    # -- the updater's side ------------------------------------------------------------
    def publish(self, store: ModelStore, version: int) -> None:
        """Queue ``version`` of ``store`` for publishing; never blocks, never raises."""
        if self._closed:
            log.warning("model version %d not published: the publisher is closed", version)
            return
        with self._lock:
            if self._pending is None or version >= self._pending[1]:
                self._pending = (store, version)
            self._idle.clear()
        self._wake.set()
        if not self._loop.running:
            self._loop.start()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued (published or given up); False on timeout."""
        return self._idle.wait(timeout)

    def status(self) -> str | None:
        """None when the last publish went through (or none was due), else why not."""
        with self._lock:
            return self._too_large or self._error

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within ``timeout``), stop the thread, close the clients;
        later :meth:`publish` calls are logged and dropped."""
        self._closed = True
        self.flush(timeout)
        self._loop.stop(timeout)
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout)
            except Exception as exc:  # closing must not fail a shutdown
                log.warning("closing the model topic producer failed: %s", exc)

    # -- the thread ----------------------------------------------------------------------
    def _step(self) -> None:
        if not self._wake.wait(0.2):
            return
        with self._lock:
            self._wake.clear()
            pending = self._pending
        if pending is None:
            self._idle.set()
            return
        store, version = pending
        self.publish_now(store, version)  # Kafka errors raise: the loop backs off, retries
        with self._lock:
            if self._pending is pending:
                self._pending = None
                self._idle.set()

    def _on_error(self, exc: BaseException, backoff: float) -> None:
        self.metrics.failures.labels("kafka_error").inc()
        reason = f"publishing to the model topic {self.topic!r} failed: {type(exc).__name__}: {exc}"
        with self._lock:
            self._error = reason
        log.warning("%s; retrying in %.1f s", reason, backoff)
        self._wake.set()

    def publish_now(self, store: ModelStore, version: int) -> bool:
        """Send ``version`` now; True when the broker acknowledged it.

        False (logged, counted, in :meth:`status`) when the version cannot be
        read or is too large for the topic; Kafka errors raise.
        """
        try:
            npz, metadata = store.read(version)
        except (CorruptModel, OSError) as exc:
            self.metrics.failures.labels("store_error").inc()
            log.error("cannot publish model version %d: %s", version, exc)
            return False
        value = encode_model(self.model_type, version, npz, metadata)
        self.metrics.message_bytes.set(len(value))
        limit = self._ensure_topic()
        if len(value) + len(self.model_type) + _RECORD_OVERHEAD > limit:
            self._fail_too_large(version, len(value), limit)
            return False
        from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

        producer = self._ensure_producer(limit)
        try:
            future = producer.send(self.topic, key=self.model_type.encode(), value=value)
            producer.flush(self.send_timeout_seconds)
            future.get(timeout=self.send_timeout_seconds)
        except (MessageSizeTooLargeError, RecordListTooLargeError):
            self._fail_too_large(version, len(value), limit)
            return False
        self.metrics.published.inc()
        self.metrics.version.set(version)
        with self._lock:
            self.published_version = version
            self._error = self._too_large = None
        log.info("published model version %d to %s (%d bytes)", version, self.topic, len(value))
        return True

    def _fail_too_large(self, version: int, size: int, limit: int) -> None:
        self.metrics.failures.labels("too_large").inc()
        reason = (f"model version {version} is {size} bytes, more than the model topic "
                  f"{self.topic!r} allows (max.message.bytes {limit}); followers keep the "
                  "previous version; raise max.message.bytes of the topic")
        with self._lock:
            self._too_large = reason
        log.error("NOT published: %s", reason)

    def _admin(self) -> Any:
        if self._admin_factory is not None:
            return self._admin_factory(bootstrap_servers=self.kafka_servers)
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.kafka_servers,
                                client_id="autoretrain-model-publisher",
                                bootstrap_timeout_ms=5000, request_timeout_ms=10000,
                                **self._security)

    def _ensure_topic(self) -> int:
        """Create the topic if missing; return its max.message.bytes."""
        if self._topic_limit is not None:
            return self._topic_limit
        from kafka.admin import ConfigResource, ConfigResourceType
        from kafka.errors import TopicAlreadyExistsError

        admin = self._admin()
        try:
            limit = self.max_message_bytes
            brokers = admin.describe_cluster().get("brokers") or []
            if brokers:
                broker_id = str(brokers[0]["broker_id"])
                found = admin.describe_configs(
                    [ConfigResource(ConfigResourceType.BROKER, broker_id,
                                    {"socket.request.max.bytes": None})],
                    config_filter="all")
                socket_max = _config_value(found, "broker", broker_id, "socket.request.max.bytes")
                if socket_max is not None and limit > int(socket_max) - 65536:
                    limit = int(socket_max) - 65536
                    log.warning("the broker's socket.request.max.bytes is %s: model topic "
                                "messages are limited to %d bytes", socket_max, limit)
            if self.topic not in admin.list_topics():
                try:
                    admin.create_topics({self.topic: {
                        "num_partitions": self.partitions,
                        "replication_factor": self.replication_factor,
                        "configs": {"cleanup.policy": "compact",
                                    "max.message.bytes": str(limit)}}},
                        wait_for_metadata=True)
                    log.info("created the model topic %s (compacted, max.message.bytes %d)",
                             self.topic, limit)
                except TopicAlreadyExistsError:
                    pass  # another trainer made it meanwhile: read its settings below
            found = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, self.topic,
                                {"max.message.bytes": None, "cleanup.policy": None})],
                config_filter="all")
            topic_max = _config_value(found, "topic", self.topic, "max.message.bytes")
            policy = _config_value(found, "topic", self.topic, "cleanup.policy") or ""
        finally:
            admin.close()
        if "compact" not in policy.split(","):
            log.warning("the model topic %s has cleanup.policy=%s, not compact: a follower "
                        "started after its retention may find no model", self.topic, policy)
        self._topic_limit = min(limit, int(topic_max)) if topic_max is not None else limit
        self.metrics.limit_bytes.set(self._topic_limit)
        return self._topic_limit

    def _ensure_producer(self, limit: int) -> Any:
        if self._producer is None:
            if self._producer_factory is not None:
                factory = self._producer_factory
            else:
                from kafka import KafkaProducer

                factory = KafkaProducer
            self._producer = factory(
                bootstrap_servers=self.kafka_servers, client_id="autoretrain-model-publisher",
                acks="all", linger_ms=0, max_request_size=limit + 65536,
                # A send to a broker that is away fails within this bound and
                # the loop retries, instead of blocking for a minute.
                max_block_ms=int(self.send_timeout_seconds * 1000),
                request_timeout_ms=int(self.send_timeout_seconds * 1000),
                reconnect_backoff_max_ms=1000, **self._security)
        return self._producer


def publisher_for(settings: Any, registry: CollectorRegistry) -> ModelPublisher | None:
    """The webhook's publisher: one when ``settings.kafka_servers`` is set, else None."""
    if not settings.kafka_servers:
        return None
    return ModelPublisher(settings.kafka_servers, settings.model_topic, registry=registry,
                          kafka_security=settings.kafka_security())


def _config_value(found: dict[str, Any], kind: str, name: str, key: str) -> str | None:
    entry = ((found.get(kind) or {}).get(name) or {}).get(key)
    if isinstance(entry, dict):
        value = entry.get("value")
        return None if value is None else str(value)
    return None if entry is None else str(entry)
