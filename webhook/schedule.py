"""When the optional periodic full retrain is due: every N hours, or a cron expression.

A schedule answers one question, :meth:`next_after`: the first due time
strictly after a Unix time. :class:`Every` counts from the last scheduled
retrain (or from the start); :class:`Cron` reads the five standard fields
(minute, hour, day of month, month, day of week; ``*``, numbers, ``a-b``
ranges, ``*/n`` and ``a-b/n`` steps and comma lists; day of week 0-7 with 0
and 7 Sunday; no names, no ``@daily`` shortcuts) in UTC. A day matches as
in cron: when both day fields are restricted, either one matching is enough.
Written here rather than taken from a dependency: the subset is small and
fully tested, and the webhook has no other use for a scheduling library.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Cron", "Every", "RetrainSchedule"]


class RetrainSchedule(Protocol):
    """When scheduled retrains are due."""

    def next_after(self, t: float) -> float:
        """The first due time strictly after Unix time ``t``."""
        ...

    def describe(self) -> str:
        """For log lines and the status: ``every 24 h`` or ``cron 0 3 * * *``."""
        ...


@dataclass(frozen=True)
class Every:
    """Due every ``seconds`` (counted from the time given to :meth:`next_after`)."""

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"a schedule interval must be a finite number > 0, "
                             f"got {self.seconds!r}")

    def next_after(self, t: float) -> float:
        return t + self.seconds

    def describe(self) -> str:
        return f"every {self.seconds / 3600:g} h"


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))
_MAX_YEARS = 5  # an expression that never matches (Feb 30) is refused, not searched forever


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"cron {name}: bad step {step_text!r} in {part!r}")
            step = int(step_text)
        if rng == "*":
            start, stop = low, high
        else:
            first, dash, last = rng.partition("-")
            if not first.isdigit() or (dash and not last.isdigit()):
                raise ValueError(f"cron {name}: {part!r} is not *, a number, a range a-b, "
                                 "or one of them with /step")
            start = int(first)
            stop = int(last) if dash else (high if step_text else start)
            if not (low <= start <= high and low <= stop <= high) or start > stop:
                raise ValueError(f"cron {name}: {part!r} is outside {low}-{high}")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression in UTC (see the module docstring)."""

    expression: str
    _fields: tuple[frozenset[int], ...] = field(init=False, repr=False, compare=False)
    _dom_any: bool = field(init=False, repr=False, compare=False)
    _dow_any: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = self.expression.split() if isinstance(self.expression, str) else []
        if len(fields) != 5:
            raise ValueError(f"a cron expression has five fields (minute hour day-of-month "
                             f"month day-of-week), got {self.expression!r}")
        parsed = [_parse_field(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
        dow = parsed[4]
        if 7 in dow:
            parsed[4] = (dow - {7}) | {0}
        object.__setattr__(self, "_fields", tuple(parsed))
        object.__setattr__(self, "_dom_any", fields[2] == "*")
        object.__setattr__(self, "_dow_any", fields[4] == "*")
        self.next_after(0.0)  # raises for an expression that never matches

    def _day_matches(self, day: datetime) -> bool:
        _, _, dom, month, dow = self._fields
        if day.month not in month:
            return False
        in_dom = day.day in dom
        in_dow = (day.isoweekday() % 7) in dow  # cron: 0 is Sunday
        if self._dom_any or self._dow_any:
            return in_dom and in_dow
        return in_dom or in_dow

    def next_after(self, t: float) -> float:
        minutes, hours = self._fields[0], self._fields[1]
        # The next whole minute strictly after t.
        start = datetime.fromtimestamp(math.floor(t / 60) * 60 + 60, UTC)
        day = start.replace(hour=0, minute=0)
        for _ in range(366 * _MAX_YEARS):
            if self._day_matches(day):
                for hour in sorted(hours):
                    for minute in sorted(minutes):
                        at = day.replace(hour=hour, minute=minute)
                        if at >= start:
                            return calendar.timegm(at.timetuple())
            day += timedelta(days=1)
        raise ValueError(f"cron expression {self.expression!r} matches no time within "
                         f"{_MAX_YEARS} years")

    def describe(self) -> str:
        return f"cron {self.expression}"
