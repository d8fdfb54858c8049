"""UTC timestamps as ISO 8601 text with a ``Z``: the one formatter every module uses."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc_iso"]


def utc_iso(when: float | datetime, timespec: str = "milliseconds") -> str:
    """Unix seconds or an aware ``datetime`` as UTC ISO 8601 with a ``Z`` suffix.

    >>> utc_iso(0)
    '1970-01-01T00:00:00.000Z'
    >>> utc_iso(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "microseconds")
    '2026-01-02T03:04:05.678901Z'
    """
    if isinstance(when, datetime):
        moment = when.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(when, UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
