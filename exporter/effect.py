"""Did the retrain help? The effect of one retrain on the platform's outcomes.

A retrain's ledger row says what it did to the *model* (held-out scores,
promotion); this module says what it did to the *platform*: the system
success rate and mean accuracy over a window before the retrain and a window
of the same length after it, measured on the outcome events themselves, and
a verdict:

``improved``
    at least one of the two rose by a clear change and none fell by one;
``worse``
    at least one fell by a clear change and none rose by one;
``unchanged``
    neither changed clearly (or one rose and the other fell: the retrain
    did not clearly help);
``not_enough_data``
    neither figure had ``min_events`` events in *both* windows. Then there
    is no before, after or delta: never a number made up from a handful of
    events.

A *clear* change is larger than ``tolerance`` and larger than twice its
standard error (``standard_error``, from the counts and the spread of each
window): with a few dozen events a window's success rate or accuracy moves
by a few points from noise alone, and that must not read as "worse". A
figure is compared only when both of its windows hold ``min_events``
events; one that does not is reported with its counts and ``None`` values.

:func:`measure` is pure. :class:`EffectTracker` is what a process that
retrains uses: told each retrain as it finishes (with the figures of the
window before it), it measures the window after once that window has closed
on its injected clock, keeps the newest effects, and says how many of the
last measured retrains in a row did not help (:attr:`EffectTracker.unhelpful_streak`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .timefmt import utc_iso

__all__ = [
    "FIGURES",
    "IMPROVED",
    "NOT_ENOUGH_DATA",
    "UNCHANGED",
    "UNHELPFUL",
    "VERDICTS",
    "WORSE",
    "Effect",
    "EffectSettings",
    "EffectTracker",
    "Figures",
    "Outcomes",
    "measure",
    "unhelpful_recommendation",
]

IMPROVED, UNCHANGED, WORSE, NOT_ENOUGH_DATA = "improved", "unchanged", "worse", "not_enough_data"
#: Every verdict, in the order reports list them.
VERDICTS = (IMPROVED, UNCHANGED, WORSE, NOT_ENOUGH_DATA)
#: Verdicts of a retrain that did not help.
UNHELPFUL = frozenset({UNCHANGED, WORSE})
#: The figures compared, by name.
FIGURES = ("success_rate", "accuracy")


@dataclass(frozen=True)
class EffectSettings:
    """How a retrain's effect is measured (validated here, once).

    ``window_seconds``: length of the window before and of the one after.
    ``min_events``: events a figure needs in each window to be compared.
    ``tolerance``: a change within this (in 0..1) counts as unchanged.
    ``settle_seconds``: wait this long after the after-window ends before
    measuring, so events reported late still count.
    ``unhelpful_retrains``: this many measured retrains in a row unchanged
    or worse is where a person should look (the report's recommendation).
    """

    window_seconds: float = 900.0
    min_events: int = 20
    tolerance: float = 0.02
    settle_seconds: float = 30.0
    unhelpful_retrains: int = 3

    def __post_init__(self) -> None:
        def number(name: str, value: Any, low: float, allow_low: bool) -> None:
            ok = (not isinstance(value, bool) and isinstance(value, int | float)
                  and math.isfinite(value) and (value >= low if allow_low else value > low))
            if not ok:
                bound = f">= {low:g}" if allow_low else f"> {low:g}"
                raise ValueError(f"effect {name} must be a finite number {bound}, got {value!r}")

        number("window_seconds", self.window_seconds, 0, False)
        number("settle_seconds", self.settle_seconds, 0, True)
        number("tolerance", self.tolerance, 0, True)
        if self.tolerance >= 1:
            raise ValueError(f"effect tolerance must be below 1, got {self.tolerance!r}")
        for name in ("min_events", "unhelpful_retrains"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"effect {name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Figures:
    """Outcome counts of one time span: runs and successes, accuracy records and their sum."""

    runs: int = 0
    successes: int = 0
    accuracy_records: int = 0
    accuracy_sum: float = 0.0
    accuracy_sq_sum: float = 0.0  # sum of squared accuracies: the spread

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.runs + other.runs, self.successes + other.successes,
                       self.accuracy_records + other.accuracy_records,
                       self.accuracy_sum + other.accuracy_sum,
                       self.accuracy_sq_sum + other.accuracy_sq_sum)

    def variance(self, name: str) -> float:
        """The per-event variance of figure ``name`` (0 without events)."""
        mean = self.value(name)
        if mean is None:
            return 0.0
        if name == "success_rate":
            return mean * (1.0 - mean)
        return max(0.0, self.accuracy_sq_sum / self.accuracy_records - mean * mean)

    def value(self, name: str) -> float | None:
        """``success_rate`` or ``accuracy`` (None without events)."""
        if name == "success_rate":
            return self.successes / self.runs if self.runs else None
        return self.accuracy_sum / self.accuracy_records if self.accuracy_records else None

    def events(self, name: str) -> int:
        """The events behind figure ``name``."""
        return self.runs if name == "success_rate" else self.accuracy_records


@dataclass(frozen=True)
class Outcomes:
    """The figures of one time span, for the system and per task type."""

    system: Figures = field(default_factory=Figures)
    by_task_type: Mapping[str, Figures] = field(default_factory=dict)


def _compare(before: Figures, after: Figures, settings: EffectSettings) -> dict[str, Any]:
    """Before, after and delta of each figure (None where either window is too thin)."""
    out: dict[str, Any] = {"before": {}, "after": {}, "delta": {}, "standard_error": {},
                           "events": {"before": {}, "after": {}}}
    for name in FIGURES:
        n_before, n_after = before.events(name), after.events(name)
        out["events"]["before"][name] = n_before
        out["events"]["after"][name] = n_after
        enough = n_before >= settings.min_events and n_after >= settings.min_events
        b = before.value(name) if enough else None
        a = after.value(name) if enough else None
        out["before"][name] = None if b is None else round(b, 6)
        out["after"][name] = None if a is None else round(a, 6)
        out["delta"][name] = None if a is None or b is None else round(a - b, 6)
        out["standard_error"][name] = None if a is None or b is None else round(math.sqrt(
            before.variance(name) / n_before + after.variance(name) / n_after), 6)
    return out


def _verdict(compared: Mapping[str, Any], tolerance: float) -> str:
    changes = [(d, compared["standard_error"][name])
               for name, d in compared["delta"].items() if d is not None]
    if not changes:
        return NOT_ENOUGH_DATA
    # The comparison is on rounded deltas, so a change of exactly the
    # tolerance is unchanged on every platform.
    clear = [d for d, se in changes if abs(d) > max(tolerance, 2 * se)]
    rose = any(d > 0 for d in clear)
    fell = any(d < 0 for d in clear)
    if rose and not fell:
        return IMPROVED
    if fell and not rose:
        return WORSE
    return UNCHANGED


@dataclass(frozen=True)
class Effect:
    """The measured effect of one retrain (see the module docstring).

    ``figures`` holds ``before``, ``after``, ``delta``, ``standard_error``
    (of the delta; by figure name, None where not measured) and ``events``
    counted in each window;
    ``task_types`` the same per task type (the task types with events in
    either window, most events first, at most ``max_task_types``).
    """

    verdict: str
    window_seconds: float
    before_start: float
    after_end: float
    measured_at: float
    figures: Mapping[str, Any]
    task_types: Mapping[str, Mapping[str, Any]]

    def delta(self, name: str) -> float | None:
        value = self.figures["delta"].get(name)
        return None if value is None else float(value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the ledger's ``effect`` and the reports' entries."""
        return {
            "verdict": self.verdict,
            "window_seconds": self.window_seconds,
            "before_start": utc_iso(self.before_start),
            "after_end": utc_iso(self.after_end),
            "measured_at": utc_iso(self.measured_at),
            **{k: dict(v) for k, v in self.figures.items()},
            "task_types": {k: dict(v) for k, v in self.task_types.items()},
        }


def measure(
    before: Outcomes,
    after: Outcomes,
    settings: EffectSettings,
    *,
    before_start: float,
    after_end: float,
    measured_at: float,
    max_task_types: int = 20,
) -> Effect:
    """The effect of a retrain from the outcomes of the window before and after it.

    The verdict is the system's; each task type is compared the same way
    (same ``min_events`` and ``tolerance``), with its own verdict.
    """
    figures = _compare(before.system, after.system, settings)
    verdict = _verdict(figures, settings.tolerance)
    names = set(before.by_task_type) | set(after.by_task_type)
    empty = Figures()

    def weight(name: str) -> tuple[int, str]:
        b, a = before.by_task_type.get(name, empty), after.by_task_type.get(name, empty)
        return -(b.runs + b.accuracy_records + a.runs + a.accuracy_records), name

    task_types: dict[str, Mapping[str, Any]] = {}
    for name in sorted(names, key=weight)[:max_task_types]:
        per = _compare(before.by_task_type.get(name, empty), after.by_task_type.get(name, empty),
                       settings)
        per["verdict"] = _verdict(per, settings.tolerance)
        task_types[name] = per
    return Effect(verdict, settings.window_seconds, before_start, after_end, measured_at,
                  figures, task_types)


def unhelpful_recommendation(streak: int, needed: int) -> str | None:
    """What a person should do when the last ``streak`` measured retrains did not help."""
    if streak < needed:
        return None
    return (
        f"Retrains stopped helping: the last {streak} measured retrains left the system's "
        "success rate and accuracy unchanged or worse. Retraining only moves work between "
        "the agents there are; a person should look at the agents themselves (fix or replace "
        "the degraded ones, add a better agent for the affected task types) rather than "
        "wait for another retrain. See docs/runbooks/AutoretrainRetrainsNotHelping.md."
    )


@dataclass
class _Pending:
    info: dict[str, Any]
    before: Outcomes
    started_at: float
    finished_at: float


class EffectTracker:
    """Measures each retrain it is told of once its after-window has closed (thread-safe).

    ``outcomes(start, end)`` returns the :class:`Outcomes` of events timed in
    ``[start, end)``; ``clock`` returns Unix seconds (tests inject a fake
    one). Call :meth:`retrain_started` before a retrain (the before-window is
    read then), :meth:`retrain_finished` after it, and :meth:`check` now and
    then (the monitor's checker does, every pass).
    """

    def __init__(
        self,
        outcomes: Callable[[float, float], Outcomes],
        settings: EffectSettings | None = None,
        clock: Callable[[], float] = time.time,
        keep: int = 20,
    ) -> None:
        self._outcomes = outcomes
        self.settings = settings or EffectSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._measured: deque[dict[str, Any]] = deque(maxlen=keep)
        self._streak = 0
        self.counts: dict[str, int] = dict.fromkeys(VERDICTS, 0)

    def retrain_started(self) -> tuple[float, Outcomes]:
        """The start time and the before-window's outcomes, read now."""
        now = self._clock()
        return now, self._outcomes(now - self.settings.window_seconds, now)

    def retrain_finished(self, started: tuple[float, Outcomes], **info: Any) -> None:
        """Wait for the after-window of a retrain that started at ``started``;
        ``info`` (trigger, retrain_type, outcome, ...) is kept with its effect."""
        started_at, before = started
        finished_at = self._clock()
        entry = {**info, "started_at": utc_iso(started_at), "finished_at": utc_iso(finished_at)}
        with self._lock:
            self._pending.append(_Pending(entry, before, started_at, finished_at))

    def check(self) -> list[dict[str, Any]]:
        """Measure every retrain whose after-window has closed; return them."""
        s = self.settings
        now = self._clock()
        with self._lock:
            due = [p for p in self._pending
                   if now >= p.finished_at + s.window_seconds + s.settle_seconds]
            self._pending = [p for p in self._pending if p not in due]
        done = []
        for p in due:
            end = p.finished_at + s.window_seconds
            effect = measure(p.before, self._outcomes(p.finished_at, end), s,
                             before_start=p.started_at - s.window_seconds, after_end=end,
                             measured_at=now)
            entry = {**p.info, "effect": effect.as_dict()}
            with self._lock:
                self._measured.append(entry)
                self.counts[effect.verdict] += 1
                if effect.verdict in UNHELPFUL:
                    self._streak += 1
                elif effect.verdict == IMPROVED:
                    self._streak = 0
                # not_enough_data neither extends nor breaks the streak.
            done.append(entry)
        return done

    @property
    def pending(self) -> int:
        """Retrains whose after-window has not closed yet."""
        with self._lock:
            return len(self._pending)

    @property
    def unhelpful_streak(self) -> int:
        """Measured retrains in a row, newest back, that were unchanged or worse
        (``not_enough_data`` is skipped)."""
        with self._lock:
            return self._streak

    def last(self, limit: int = 5) -> list[dict[str, Any]]:
        """The newest ``limit`` measured retrains, newest first."""
        with self._lock:
            return list(self._measured)[::-1][:limit]

    def recommendation(self) -> str | None:
        """The report's recommendation when retrains stopped helping, else None."""
        return unhelpful_recommendation(self.unhelpful_streak, self.settings.unhelpful_retrains)
