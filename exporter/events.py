"""The outcome event: the contract between the monitor, Kafka and the updater.

One JSON object per Kafka message on the topic ``agent-outcomes`` (key: the
agent's name). This module owns the contract: the event's types
(:class:`RunEvent`, :class:`AccuracyEvent`), its one builder per kind
(:func:`run_event`, :func:`accuracy_event`), one validator per field (the
``check_*`` functions, also used by :class:`~exporter.PerformanceMonitor` on
its arguments) and parsing (:func:`parse_event`, :func:`decode_event`).
Batches of raw Kafka values are decoded and de-duplicated by
:func:`exporter.ingest.decode_batch`.

Events are plain dicts, typed as ``TypedDict``: building, queueing,
serialising and parsing them stays cheap on the hot paths, and a parsed event
is the same kind of object as a built one (one event format, not a dict on
the wire and a tuple in memory).

Fields (docs/DESIGN.md): ``schema`` (int, :data:`SCHEMA_VERSION`),
``event_id`` (unique, the idempotency key), ``kind`` (``"run"`` |
``"accuracy"``), ``timestamp`` (Unix seconds as a number; an ISO 8601
string is accepted on input), ``agent_name``, ``agent_type``, ``task_type``
(default ``"default"``), optional small ``context`` dict. A run adds
``status``, ``duration_ms``, ``tokens_used``, ``cost``; an accuracy record
adds ``task_id``, ``accuracy`` (0..1) and ``feedback_source``. Unknown
fields are ignored.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import sys
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

import orjson

__all__ = [
    "KINDS",
    "MAX_CONTEXT_KEYS",
    "MAX_EVENT_BYTES",
    "MAX_NAME_LENGTH",
    "RUN_FIELDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "AccuracyEvent",
    "EventIdFactory",
    "InvalidEvent",
    "OutcomeEvent",
    "RunEvent",
    "accuracy_event",
    "check_context",
    "check_name",
    "check_number",
    "check_status",
    "check_task_id",
    "check_timestamp",
    "check_tokens",
    "common_run",
    "common_run_row",
    "decode_event",
    "encode_event",
    "parse_event",
    "run_event",
    "validate_event",
]

SCHEMA_VERSION = 1
KINDS = ("run", "accuracy")
RUN_STATUSES = ("success", "failure", "error", "timeout")
MAX_NAME_LENGTH = 200
MAX_CONTEXT_KEYS = 32
MAX_EVENT_BYTES = 64 * 1024

_SCALAR = (str, int, float, bool)
_RUN_STATUS_SET = frozenset(RUN_STATUSES)
# A run event in normal form has exactly these keys (no context).
_COMMON_RUN_KEYS = 11
#: The fields of a run in normal form, in the order of a row of :func:`common_run_row`.
RUN_FIELDS = ("schema", "kind", "timestamp", "duration_ms", "cost", "tokens_used", "status",
              "event_id", "agent_name", "agent_type", "task_type")
_run_row = operator.itemgetter(*RUN_FIELDS)


class RunEvent(TypedDict):
    """A run event in normal form (what :func:`run_event` builds and parsing returns)."""

    schema: int
    event_id: str
    kind: Literal["run"]
    timestamp: float
    agent_name: str
    agent_type: str
    task_type: str
    status: str
    duration_ms: float
    tokens_used: int
    cost: float
    context: NotRequired[dict[str, Any]]


class AccuracyEvent(TypedDict):
    """An accuracy event in normal form."""

    schema: int
    event_id: str
    kind: Literal["accuracy"]
    timestamp: float
    agent_name: str
    agent_type: str
    task_type: str
    task_id: str
    accuracy: float
    feedback_source: str
    context: NotRequired[dict[str, Any]]


OutcomeEvent = RunEvent | AccuracyEvent


class InvalidEvent(ValueError):
    """An event (or a monitor argument) that breaks the contract.

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
        return self.prefix + str(next(self.counter))


# -- building ------------------------------------------------------------------


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
) -> RunEvent:
    """Build a run event from values the caller has already validated."""
    event: RunEvent = {
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
) -> AccuracyEvent:
    """Build an accuracy event from values the caller has already validated."""
    event: AccuracyEvent = {
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


def encode_event(event: OutcomeEvent | dict[str, Any]) -> bytes:
    """Serialise an event for Kafka (compact JSON, UTF-8)."""
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)


# -- one validator per field -------------------------------------------------------
# Each raises InvalidEvent (a ValueError) with fault "field:<name>" and a
# message naming the field, what was given and what is allowed.


def check_name(field: str, value: Any) -> str:
    """A non-empty string of at most :data:`MAX_NAME_LENGTH` characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidEvent(
            f"field:{field}",
            f"{field} must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
            f"got {value!r:.80}",
        )
    return value


def check_number(field: str, value: Any, hi: float = math.inf) -> float:
    """A finite number in ``[0, hi]`` (bool is not a number here), as float."""
    allowed = "a finite number >= 0" if hi == math.inf else f"a number in [0, {hi:g}]"
    # bool is an int subclass; True is not a duration.
    if isinstance(value, bool) or not isinstance(value, int | float):
        if hi == math.inf:
            allowed = "a number >= 0"
        raise InvalidEvent(f"field:{field}", f"{field} must be {allowed}, got {value!r:.80}")
    if not 0.0 <= value <= hi or value == math.inf:  # NaN fails the comparison
        raise InvalidEvent(f"field:{field}", f"{field} must be {allowed}, got {value!r}")
    return float(value)


def check_status(value: Any) -> str:
    """One of :data:`RUN_STATUSES`."""
    # A tuple scan, not a set lookup: an unhashable value must fail cleanly.
    if type(value) is not str or value not in RUN_STATUSES:
        raise InvalidEvent(
            "field:status",
            f"status must be one of {', '.join(RUN_STATUSES)}, got {value!r:.80}",
        )
    return value


def check_tokens(value: Any) -> int:
    """An integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(
            "field:tokens_used", f"tokens_used must be an integer >= 0, got {value!r:.80}"
        )
    return value


def check_task_id(value: Any) -> str:
    """A string (may be empty) of at most :data:`MAX_NAME_LENGTH` characters."""
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        raise InvalidEvent("field:task_id", f"task_id must be a string, got {value!r:.80}")
    return value


#: Default of ``max_event_skew_seconds`` (the updater and the standalone exporter): how
#: far past the consumer's clock an event's timestamp may be. An event from further
#: ahead (a producer's clock ahead, or milliseconds sent as seconds) is invalid,
#: ``field:timestamp``: under event-time forgetting it would move the model's clock
#: and age all real evidence away (see :mod:`exporter.ingest`).
MAX_EVENT_SKEW_SECONDS = 300.0
#: The largest finite float: ``0 <= x <= FLOAT_MAX`` is "finite and >= 0" in one
#: comparison chain (NaN fails it), the hot path's form of the check.
FLOAT_MAX = sys.float_info.max


def check_timestamp(value: Any) -> float:
    """Unix seconds >= 0, or an ISO 8601 string (returned as Unix seconds, also >= 0).

    No upper bound here: that needs the consumer's clock (``decode_batch``'s ``now``)."""
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
            seconds = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            pass
        else:
            # The same range as a number: before 1970 is no time an outcome happened.
            if seconds < 0:
                raise InvalidEvent("field:timestamp",
                                   f"timestamp must not be before 1970, got {value!r:.80}")
            return seconds
    raise InvalidEvent(
        "field:timestamp",
        f"timestamp must be Unix seconds or an ISO 8601 string, got {value!r:.80}",
    )


def check_context(value: Any) -> dict[str, Any] | None:
    """``None``, or a dict of at most :data:`MAX_CONTEXT_KEYS` scalar values."""
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


# -- parsing -------------------------------------------------------------------------


def common_run(obj: Any, latest: float = FLOAT_MAX) -> RunEvent | None:
    """``obj`` itself when it is a run event already in normal form, else None.

    Normal form is what :func:`run_event` builds without context, so what
    the monitor and the Kafka sink produce: exactly the eleven run fields,
    float timestamp, duration and cost. None means "not this shape", not
    "invalid": :func:`parse_event` then takes the general path, which also
    explains any fault. ``latest`` bounds the timestamp as in
    :func:`common_run_row`.
    """
    return obj if common_run_row(obj, latest) is not None else None


def common_run_row(obj: Any, latest: float = FLOAT_MAX) -> tuple[Any, ...] | None:
    """The values of :data:`RUN_FIELDS` of ``obj``, in that order, when ``obj`` is a
    run event in normal form (see :func:`common_run`); else None.

    Ingest takes this path for almost every event, so it builds nothing but
    the row (which a consumer may keep to read the batch column by column)
    and checks each field once, inline. ``latest`` (finite) bounds the
    timestamp here too, so that a consumer's bound on event time
    (:func:`exporter.ingest.decode_batch`) costs nothing extra on this path:
    a later timestamp is "not this shape" and the caller checks it again.
    """
    if type(obj) is not dict or len(obj) != _COMMON_RUN_KEYS:
        return None
    try:
        # One C call for the eleven fields instead of eleven ``get`` calls (a
        # third of this function's time); a missing key is "not this shape".
        row = _run_row(obj)
    except KeyError:
        return None
    (schema, kind, ts, dur, cost, tokens, status, event_id, agent_name, agent_type,
     task_type) = row
    if (
        kind == "run"
        and type(schema) is int
        and schema == SCHEMA_VERSION
        and type(ts) is float
        and 0.0 <= ts <= latest
        and type(dur) is float
        and 0.0 <= dur <= FLOAT_MAX
        and type(cost) is float
        and 0.0 <= cost <= FLOAT_MAX
        and type(tokens) is int
        and tokens >= 0
        and type(status) is str
        and status in _RUN_STATUS_SET
        and type(event_id) is str
        and type(agent_name) is str
        and type(agent_type) is str
        and type(task_type) is str
        and 0 < len(event_id) <= MAX_NAME_LENGTH
        and 0 < len(agent_name) <= MAX_NAME_LENGTH
        and 0 < len(agent_type) <= MAX_NAME_LENGTH
        and 0 < len(task_type) <= MAX_NAME_LENGTH
    ):
        return row
    return None


def parse_event(obj: Any) -> OutcomeEvent:
    """Check a decoded event against the contract; return it in normal form.

    A run already in normal form (:func:`common_run`) is returned as is;
    anything else is rebuilt with only the contract's fields, defaults filled
    in and the timestamp as Unix seconds. Raises :class:`InvalidEvent`
    naming the field and what is allowed.
    """
    event = common_run(obj)
    return event if event is not None else _validate_general(obj)


def validate_event(obj: Any) -> dict[str, Any]:
    """:func:`parse_event` as a new plain dict (the caller may keep and change ``obj``)."""
    return dict(parse_event(obj))


def decode_event(raw: bytes | str | None) -> dict[str, Any]:
    """Parse and validate one Kafka message value; raise :class:`InvalidEvent`.

    Parsing is strict RFC 8259 JSON: ``NaN`` and ``Infinity`` are not JSON
    and count as ``not_json``. A plain dict; :func:`parse_event` of
    :func:`loads_value` gives the typed event without the copy.
    """
    return dict(parse_event(loads_value(raw)))


def loads_value(raw: bytes | str | None) -> Any:
    """The JSON value of one Kafka message value, unchecked; raise :class:`InvalidEvent`."""
    if raw is None:
        raise InvalidEvent("empty", "event is empty (null message value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"event is {len(raw)} bytes, at most {MAX_EVENT_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"event is not JSON: {exc}") from None


def _validate_general(obj: Any) -> OutcomeEvent:
    """Every check, in contract order, raising on the first fault."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"event must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise InvalidEvent("schema", f"schema must be {SCHEMA_VERSION}, got {schema!r:.40}")
    event_id = check_name("event_id", obj.get("event_id"))
    kind = obj.get("kind")
    if kind not in KINDS:
        raise InvalidEvent(
            "field:kind", f"kind must be one of {', '.join(KINDS)}, got {kind!r:.40}"
        )
    timestamp = check_timestamp(obj.get("timestamp"))
    agent_name = check_name("agent_name", obj.get("agent_name"))
    agent_type = check_name("agent_type", obj.get("agent_type", "unknown"))
    task_type = check_name("task_type", obj.get("task_type", "default"))
    context = check_context(obj.get("context"))
    if kind == "run":
        status = check_status(obj.get("status"))
        tokens = check_tokens(obj.get("tokens_used", 0))
        return run_event(
            event_id,
            timestamp,
            agent_name,
            agent_type,
            status,
            check_number("duration_ms", obj.get("duration_ms")),
            tokens,
            check_number("cost", obj.get("cost", 0.0)),
            task_type,
            context,
        )
    return accuracy_event(
        event_id,
        timestamp,
        agent_name,
        agent_type,
        check_task_id(obj.get("task_id", "")),
        check_number("accuracy", obj.get("accuracy"), 1.0),
        check_name("feedback_source", obj.get("feedback_source", "unknown")),
        task_type,
        context,
    )
