"""The outcome event: the contract between the monitor, Kafka and the updater.

One JSON object per Kafka message on the topic ``agent-outcomes`` (key: the
agent's name). Events are plain dicts so that building, queueing and
serialising them stays cheap on the orchestrator's hot path.

Fields (DESIGN.md): ``schema`` (int, :data:`SCHEMA_VERSION`), ``event_id``
(unique, the idempotency key), ``kind`` (``"run"`` | ``"accuracy"``),
``timestamp`` (Unix seconds as a number; an ISO 8601 string is accepted on
input), ``agent_name``, ``agent_type``, ``task_type`` (default
``"default"``), optional small ``context`` dict. A run adds ``status``,
``duration_ms``, ``tokens_used``, ``cost``; an accuracy record adds
``task_id``, ``accuracy`` (0..1) and ``feedback_source``. Unknown fields are
ignored.
"""

from __future__ import annotations

import itertools
import math
import os
from datetime import datetime
from typing import Any

import orjson

__all__ = [
    "KINDS",
    "MAX_CONTEXT_KEYS",
    "MAX_EVENT_BYTES",
    "MAX_NAME_LENGTH",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "EventIdFactory",
    "InvalidEvent",
    "RunFields",
    "accuracy_event",
    "decode_event",
    "encode_event",
    "run_event",
    "run_fields",
    "validate_event",
]

SCHEMA_VERSION = 1
KINDS = ("run", "accuracy")
RUN_STATUSES = ("success", "failure", "error", "timeout")
MAX_NAME_LENGTH = 200
MAX_CONTEXT_KEYS = 32
MAX_EVENT_BYTES = 64 * 1024

_SCALAR = (str, int, float, bool)


class InvalidEvent(ValueError):
    """An event that breaks the contract.

    ``fault`` is a short, bounded category (``"not_json"``, ``"schema"``,
    ``"field:agent_name"`` ...) used to count faults and to log each kind once.
    """

    def __init__(self, fault: str, message: str) -> None:
        super().__init__(message)
        self.fault = fault


class EventIdFactory:
    """Unique event ids without the cost of ``uuid4()`` per event.

    A random per-process prefix plus a counter: unique across processes and
    restarts, and about ten times cheaper than a UUID on the hot path.
    """

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex() + "-"
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        # Hot paths inline this expression to save the call.
        return self.prefix + str(next(self.counter))


def run_event(
    event_id: str,
    timestamp: float,
    agent_name: str,
    agent_type: str,
    status: str,
    duration_ms: float,
    tokens_used: int,
    cost: float,
    task_type: str = "default",
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a run event from values the caller has already validated."""
    event: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "event_id": event_id,
        "kind": "run",
        "timestamp": timestamp,
        "agent_name": agent_name,
        "agent_type": agent_type,
        "task_type": task_type,
        "status": status,
        "duration_ms": duration_ms,
        "tokens_used": tokens_used,
        "cost": cost,
    }
    if context:
        event["context"] = context
    return event


def accuracy_event(
    event_id: str,
    timestamp: float,
    agent_name: str,
    agent_type: str,
    task_id: str,
    accuracy: float,
    feedback_source: str,
    task_type: str = "default",
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build an accuracy event from values the caller has already validated."""
    event: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "event_id": event_id,
        "kind": "accuracy",
        "timestamp": timestamp,
        "agent_name": agent_name,
        "agent_type": agent_type,
        "task_type": task_type,
        "task_id": task_id,
        "accuracy": accuracy,
        "feedback_source": feedback_source,
    }
    if context:
        event["context"] = context
    return event


def encode_event(event: dict[str, Any]) -> bytes:
    """Serialise an event for Kafka (compact JSON, UTF-8)."""
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)


def decode_event(raw: bytes | str | None) -> dict[str, Any]:
    """Parse and validate one Kafka message value; raise :class:`InvalidEvent`.

    Parsing is strict RFC 8259 JSON: ``NaN`` and ``Infinity`` are not JSON
    and count as ``not_json``.
    """
    if raw is None:
        raise InvalidEvent("empty", "event is empty (null message value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"event is {len(raw)} bytes, at most {MAX_EVENT_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"event is not JSON: {exc}") from None
    return validate_event(obj)


def _name(obj: dict[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidEvent(
            f"field:{key}",
            f"{key} must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
            f"got {value!r:.80}",
        )
    return value


def _number(obj: dict[str, Any], key: str, lo: float = 0.0, hi: float = math.inf) -> float:
    value = obj.get(key)
    # bool is an int subclass; True is not a duration.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"field:{key}", f"{key} must be a number, got {value!r:.80}")
    if not (lo <= value <= hi) or value != value:
        raise InvalidEvent(f"field:{key}", f"{key} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


def _timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidEvent(
            "field:timestamp", f"timestamp must be a number or ISO 8601, got {value!r}"
        )
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise InvalidEvent("field:timestamp", f"timestamp must be >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise InvalidEvent(
        "field:timestamp",
        f"timestamp must be Unix seconds or an ISO 8601 string, got {value!r:.80}",
    )


def _context(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_CONTEXT_KEYS:
        raise InvalidEvent(
            "field:context",
            f"context must be an object of at most {MAX_CONTEXT_KEYS} keys",
        )
    for k, v in value.items():
        if not isinstance(v, _SCALAR) and v is not None:
            raise InvalidEvent(
                "field:context", f"context values must be scalars, {k!r} is {type(v).__name__}"
            )
    return value


_RUN_STATUS_SET = frozenset(RUN_STATUSES)


RunFields = tuple[str, float, str, str, str, str, float, int, float]


def run_fields(obj: Any) -> RunFields | None:
    """The fields of a common, well-formed run event, or None.

    ``(event_id, timestamp, agent_name, agent_type, task_type, status,
    duration_ms, tokens_used, cost)`` for a run event of this schema with
    float timestamp, duration and cost and no context: what the monitor and
    the Kafka sink produce. None means "not this shape", not "invalid": use
    :func:`validate_event` then, which also explains any fault. Hot paths
    (ingest) use it to skip building the normalised dict.
    """
    if type(obj) is not dict:
        return None
    g = obj.get
    if g("kind") != "run" or type(schema := g("schema")) is not int or schema != SCHEMA_VERSION:
        return None
    ts, dur, cost, tokens = g("timestamp"), g("duration_ms"), g("cost", 0.0), g("tokens_used", 0)
    agent_type, task_type, status = (
        g("agent_type", "unknown"),
        g("task_type", "default"),
        g("status"),
    )
    if not (
        type(ts) is float
        and 0.0 <= ts < math.inf
        and type(dur) is float
        and 0.0 <= dur < math.inf
        and type(cost) is float
        and 0.0 <= cost < math.inf
        and type(tokens) is int
        and tokens >= 0
        and status in _RUN_STATUS_SET
        and type(status) is str
        and type(event_id := g("event_id")) is str
        and type(agent_name := g("agent_name")) is str
        and type(agent_type) is str
        and type(task_type) is str
        and 0 < len(event_id) <= MAX_NAME_LENGTH
        and 0 < len(agent_name) <= MAX_NAME_LENGTH
        and 0 < len(agent_type) <= MAX_NAME_LENGTH
        and 0 < len(task_type) <= MAX_NAME_LENGTH
        and g("context") is None
    ):
        return None
    return (event_id, ts, agent_name, agent_type, task_type, status, dur, tokens, cost)


def validate_event(obj: Any) -> dict[str, Any]:
    """Check an event against the contract and return its normalised form.

    The result holds only the contract's fields, with defaults filled in and
    the timestamp as Unix seconds. Raises :class:`InvalidEvent` naming the
    field and what is allowed.
    """
    fields = run_fields(obj)
    if fields is not None:
        event_id, ts, agent_name, agent_type, task_type, status, dur, tokens, cost = fields
        return {
            "schema": SCHEMA_VERSION,
            "event_id": event_id,
            "kind": "run",
            "timestamp": ts,
            "agent_name": agent_name,
            "agent_type": agent_type,
            "task_type": task_type,
            "status": status,
            "duration_ms": dur,
            "tokens_used": tokens,
            "cost": cost,
        }
    return _validate_general(obj)


def _validate_general(obj: Any) -> dict[str, Any]:
    """Every check, in contract order, raising on the first fault."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"event must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise InvalidEvent("schema", f"schema must be {SCHEMA_VERSION}, got {schema!r:.40}")
    event_id = obj.get("event_id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_NAME_LENGTH:
        raise InvalidEvent(
            "field:event_id", f"event_id must be a non-empty string, got {event_id!r:.80}"
        )
    kind = obj.get("kind")
    if kind not in KINDS:
        raise InvalidEvent(
            "field:kind", f"kind must be one of {', '.join(KINDS)}, got {kind!r:.40}"
        )
    timestamp = _timestamp(obj.get("timestamp"))
    agent_name = _name(obj, "agent_name")
    agent_type = _name(obj, "agent_type", "unknown")
    task_type = _name(obj, "task_type", "default")
    context = _context(obj.get("context"))
    if kind == "run":
        status = obj.get("status")
        if status not in RUN_STATUSES:
            raise InvalidEvent(
                "field:status",
                f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r:.40}",
            )
        tokens = obj.get("tokens_used", 0)
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise InvalidEvent(
                "field:tokens_used", f"tokens_used must be an integer >= 0, got {tokens!r:.40}"
            )
        event = run_event(
            event_id=event_id,
            timestamp=timestamp,
            agent_name=agent_name,
            agent_type=agent_type,
            status=status,
            duration_ms=_number(obj, "duration_ms"),
            tokens_used=tokens,
            cost=_number({"cost": obj.get("cost", 0.0)}, "cost"),
            task_type=task_type,
            context=context,
        )
    else:
        task_id = obj.get("task_id", "")
        if not isinstance(task_id, str) or len(task_id) > MAX_NAME_LENGTH:
            raise InvalidEvent("field:task_id", f"task_id must be a string, got {task_id!r:.40}")
        event = accuracy_event(
            event_id=event_id,
            timestamp=timestamp,
            agent_name=agent_name,
            agent_type=agent_type,
            task_id=task_id,
            accuracy=_number(obj, "accuracy", 0.0, 1.0),
            feedback_source=_name(obj, "feedback_source", "unknown"),
            task_type=task_type,
            context=context,
        )
    return event
