"""Alertmanager webhook payloads (version "4") as typed, validated objects.

:func:`parse_notification` is pure: JSON-decoded data in, a
:class:`Notification` out, or :class:`InvalidPayload` (a ``ValueError``)
whose message names the offending field, e.g.
``alerts[2].startsAt must be an RFC 3339 timestamp, got 'yesterday'``.

Only what the webhook relies on is required (``version``, ``status``,
``alerts`` and, per alert, ``status``, ``labels``, ``startsAt`` and
``fingerprint``); the other documented fields are optional but must have the
documented type when present. Unknown fields are ignored, as Alertmanager
may add some.

Every size is bounded (:data:`LIMITS`): alerts per notification, labels and
annotations per alert, the length of their names and values and of the other
strings. A label value travels into the ledger and its unauthenticated read
API; unbounded, 30 notifications with a 1 MB ``alertname`` once made one
``GET /api/performance/retraining`` answer 31.7 MB. A bound that is exceeded
is a 400 whose message names it. Alertmanager's ``max_alerts`` on the
webhook receiver (``prometheus/alertmanager.yml``) is set to the same alert
count, so Alertmanager truncates a larger group instead of sending one we
refuse.
"""

from __future__ import annotations

import re
import reprlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from autoretrain.exporter.timefmt import utc_iso

__all__ = [
    "ALERT_STATUSES",
    "LIMITS",
    "AlertmanagerAlert",
    "EpisodeKey",
    "InvalidPayload",
    "Limits",
    "Notification",
    "parse_alert",
    "parse_notification",
]

ALERT_STATUSES = ("firing", "resolved")
Status = Literal["firing", "resolved"]

# RFC 3339 as Go prints it (up to nanoseconds); datetime.fromisoformat alone
# would also accept dates without a time or a space as the separator.
_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
)
# Alertmanager fingerprints are 16 hex digits; allow other lengths of hex so
# a compatible sender still works, but nothing that could be a path or markup.
_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{1,64}$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_SHOW = 60  # characters of a bad value quoted in an error message


@dataclass(frozen=True)
class Limits:
    """Size bounds of a notification (characters for strings).

    Generous for real alerts (Prometheus label values are short; annotations
    carry a sentence or a runbook link). The request body limit
    (``max_body_bytes``) still bounds a notification as a whole; these bound
    what one value, one alert and one notification can carry into the
    ledger, its read API and the logs.
    """

    max_alerts: int = 1000  # = max_alerts in prometheus/alertmanager.yml
    max_labels: int = 64  # per labels / annotations object
    max_name_chars: int = 128  # a label or annotation name
    max_label_value_chars: int = 1024
    max_annotation_value_chars: int = 4096
    max_string_chars: int = 4096  # receiver, URLs

    @property
    def max_group_key_chars(self) -> int:
        # Alertmanager's groupKey spells out the group labels (all of them
        # when a route groups by '...').
        return self.max_labels * (self.max_name_chars + self.max_label_value_chars + 4) + (
            self.max_string_chars)


LIMITS = Limits()


def _make_repr() -> reprlib.Repr:
    # Bounded depth and size: a plain repr() of a deeply nested value raises
    # RecursionError (a 500) and of a large one costs time for 60 characters.
    shower = reprlib.Repr()
    shower.maxlevel = 3
    shower.maxstring = shower.maxother = shower.maxlong = _SHOW + 10
    return shower


_REPR = _make_repr()


class InvalidPayload(ValueError):
    """The JSON is not a valid Alertmanager webhook message; the text says why."""


@dataclass(frozen=True)
class EpisodeKey:
    """One alert episode: Alertmanager's fingerprint and the episode's start.

    ``starts_at`` is normalised to UTC ISO 8601 with microseconds, so two
    spellings of the same instant are the same episode.
    """

    fingerprint: str
    starts_at: str

    def __str__(self) -> str:
        return f"{self.fingerprint}@{self.starts_at}"


@dataclass(frozen=True)
class AlertmanagerAlert:
    """One alert of a notification."""

    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None  # None while firing (Alertmanager sends year 1)
    fingerprint: str
    generator_url: str = ""

    @property
    def alertname(self) -> str:
        """The ``alertname`` label, or "" when absent."""
        return self.labels.get("alertname", "")

    @property
    def retrain(self) -> str | None:
        """The ``retrain`` label, or None when absent."""
        return self.labels.get("retrain")

    @property
    def episode(self) -> EpisodeKey:
        return EpisodeKey(self.fingerprint, utc_iso(self.starts_at, "microseconds"))


@dataclass(frozen=True)
class Notification:
    """One webhook message: a group of alerts sent together."""

    status: Status
    alerts: tuple[AlertmanagerAlert, ...]
    receiver: str = ""
    group_key: str = ""
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0
    version: str = "4"


def _show(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _object(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPayload(f"{where} must be an object, got {_type(value)}")
    return value


def _unicode(where: str, text: str) -> str:
    # JSON's \uD800 escapes decode to lone surrogates, which are not text: they
    # cannot be encoded as UTF-8, so they would fail later in the ledger
    # (SQLite) or in /metrics' exposition, long after the 202.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayload(
            f"{where} is not valid Unicode text (it has a lone surrogate), got {_show(text)}"
        ) from None
    return text


def _length(where: str, text: str, limit: int) -> str:
    if len(text) > limit:
        raise InvalidPayload(
            f"{where} is longer than the limit of {limit} characters ({len(text)})")
    return text


def _string(where: str, value: Any, limit: int = LIMITS.max_string_chars) -> str:
    if not isinstance(value, str):
        raise InvalidPayload(f"{where} must be a string, got {_type(value)}")
    return _unicode(where, _length(where, value, limit))


def _status(where: str, value: Any) -> Status:
    if value not in ALERT_STATUSES:
        raise InvalidPayload(f"{where} must be \"firing\" or \"resolved\", got {_show(value)}")
    return "firing" if value == "firing" else "resolved"


def _labels(
    where: str, value: Any, value_limit: int = LIMITS.max_label_value_chars
) -> dict[str, str]:
    data = _object(where, value)
    if len(data) > LIMITS.max_labels:
        raise InvalidPayload(
            f"{where} has more than the limit of {LIMITS.max_labels} entries ({len(data)})")
    for name, text in data.items():
        if len(name) > LIMITS.max_name_chars:
            raise InvalidPayload(
                f"{where} has a name longer than the limit of {LIMITS.max_name_chars} "
                f"characters: {_show(name)}")
        if not _LABEL_NAME.match(name):
            raise InvalidPayload(f"{where} has an invalid name {_show(name)}")
        if not isinstance(text, str):
            raise InvalidPayload(f"{where}.{name} must be a string, got {_type(text)}")
        _length(f"{where}.{name}", text, value_limit)
        _unicode(f"{where}.{name}", text)
    return dict(data)


def _annotations(where: str, value: Any) -> dict[str, str]:
    return _labels(where, value, LIMITS.max_annotation_value_chars)


def _timestamp(where: str, value: Any) -> datetime:
    # No length bound of its own: the anchored pattern bounds it, and its
    # message quotes the bad value.
    text = _string(where, value, limit=sys.maxsize)
    if not _TIMESTAMP.match(text):
        raise InvalidPayload(f"{where} must be an RFC 3339 timestamp, got {_show(text)}")
    try:
        when = datetime.fromisoformat(text)
        # The episode key is the time in UTC: 9999-12-31T23:59:59-01:00 is past
        # the year 9999 there, which datetime cannot represent.
        when.astimezone(UTC)
    except ValueError:  # e.g. month 13
        raise InvalidPayload(f"{where} is not a valid date and time, got {_show(text)}") from None
    except OverflowError:
        raise InvalidPayload(
            f"{where} is out of range once converted to UTC, got {_show(text)}") from None
    return when


def _optional(data: Mapping[str, Any], key: str, default: Any) -> Any:
    value = data.get(key, default)
    return default if value is None else value


def parse_alert(data: Any, where: str = "alert") -> AlertmanagerAlert:
    """Validate one element of ``alerts``; ``where`` prefixes error messages."""
    obj = _object(where, data)
    for key in ("status", "labels", "startsAt", "fingerprint"):
        if key not in obj:
            raise InvalidPayload(f"{where}.{key} is required")
    fingerprint = _string(f"{where}.fingerprint", obj["fingerprint"])
    if not _FINGERPRINT.match(fingerprint):
        raise InvalidPayload(
            f"{where}.fingerprint must be 1 to 64 hexadecimal digits, got {_show(fingerprint)}"
        )
    ends_at = None
    if obj.get("endsAt") is not None:
        ends_at = _timestamp(f"{where}.endsAt", obj["endsAt"])
        if ends_at == _ZERO_TIME:
            ends_at = None
    return AlertmanagerAlert(
        status=_status(f"{where}.status", obj["status"]),
        labels=_labels(f"{where}.labels", obj["labels"]),
        annotations=_annotations(f"{where}.annotations", _optional(obj, "annotations", {})),
        starts_at=_timestamp(f"{where}.startsAt", obj["startsAt"]),
        ends_at=ends_at,
        fingerprint=fingerprint.lower(),
        generator_url=_string(f"{where}.generatorURL", _optional(obj, "generatorURL", "")),
    )


def parse_notification(data: Any) -> Notification:
    """Validate a decoded webhook body; raise :class:`InvalidPayload` saying what is wrong."""
    obj = _object("the payload", data)
    for key in ("version", "status", "alerts"):
        if key not in obj:
            raise InvalidPayload(f"{key} is required (an Alertmanager webhook message has "
                                 "version, status and alerts)")
    if obj["version"] != "4":
        raise InvalidPayload(f"version must be \"4\", got {_show(obj['version'])}")
    alerts = obj["alerts"]
    if not isinstance(alerts, list):
        raise InvalidPayload(f"alerts must be an array, got {_type(alerts)}")
    if not alerts:
        raise InvalidPayload("alerts must not be empty")
    if len(alerts) > LIMITS.max_alerts:
        raise InvalidPayload(
            f"alerts has more than the limit of {LIMITS.max_alerts} alerts per notification "
            f"({len(alerts)}); set max_alerts on the Alertmanager webhook receiver")
    truncated = _optional(obj, "truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise InvalidPayload(
            f"truncatedAlerts must be an integer >= 0, got {_show(truncated)}")
    return Notification(
        status=_status("status", obj["status"]),
        alerts=tuple(parse_alert(a, f"alerts[{i}]") for i, a in enumerate(alerts)),
        receiver=_string("receiver", _optional(obj, "receiver", "")),
        group_key=_string(
            "groupKey", _optional(obj, "groupKey", ""), LIMITS.max_group_key_chars),
        group_labels=_labels("groupLabels", _optional(obj, "groupLabels", {})),
        common_labels=_labels("commonLabels", _optional(obj, "commonLabels", {})),
        common_annotations=_annotations(
            "commonAnnotations", _optional(obj, "commonAnnotations", {})),
        external_url=_string("externalURL", _optional(obj, "externalURL", "")),
        truncated_alerts=truncated,
    )
