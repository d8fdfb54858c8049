"""Decode, validate and de-duplicate batches of outcome events: the consumers' one ingest step.

Both consumers of the outcome events (the standalone exporter and the model
updater) take raw values (Kafka message bytes, or dicts from the embedded
bus), need them checked against the contract of :mod:`exporter.events`,
and must apply each ``event_id`` once (Kafka delivery is at-least-once).
:func:`decode_batch` does that once for both; what to do with the events
is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from .events import (
    FLOAT_MAX,
    MAX_EVENT_BYTES,
    MAX_EVENT_SKEW_SECONDS,
    RUN_FIELDS,
    InvalidEvent,
    OutcomeEvent,
    _validate_general,
    common_run_row,
    loads_value,
)

__all__ = ["DecodedBatch", "RecentEventIds", "decode_batch"]

# Positions in a row of RUN_FIELDS (common_run_row).
_ID, _AGENT, _TASK = (RUN_FIELDS.index(f) for f in ("event_id", "agent_name", "task_type"))


class RecentEventIds:
    """Bounded memory of recently seen event ids, O(1) per id.

    Holds at most ``capacity`` ids, of which at least the newest
    ``capacity // 2``: two generations of sets, the older dropped whole when
    the newer fills, so there is no per-id eviction bookkeeping on the hot
    path.
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 2:
            raise ValueError(f"capacity must be an integer >= 2, got {capacity!r}")
        self.capacity = capacity
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def add_if_new(self, event_id: str) -> bool:
        """True when ``event_id`` is new (it is remembered now); False for a duplicate."""
        if event_id in self._current or event_id in self._previous:
            return False
        current = self._current
        current.add(event_id)
        if len(current) >= self.capacity // 2:
            self._previous, self._current = current, set()
        return True

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._current or event_id in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)


class DecodedBatch(NamedTuple):
    """What :func:`decode_batch` made of a batch of raw values."""

    events: list[OutcomeEvent]
    """Valid, new events in normal form, in input order."""
    duplicates: int
    """Valid events whose ``event_id`` was already seen (skipped)."""
    invalid: list[InvalidEvent]
    """One error per invalid value (skipped), in input order."""
    rebuilt: int = 0
    """Events of :attr:`events` that were not already a run in normal form
    (accuracy events, runs with a context or defaults to fill in)."""
    rows: Sequence[tuple[Any, ...]] = ()
    """The :data:`~exporter.events.RUN_FIELDS` of each event that was a run
    in normal form, in order: when :attr:`rebuilt` is 0, one per event of
    :attr:`events`, for a consumer that reads the batch column by column."""

    def invalid_by_fault(self) -> dict[str, int]:
        """Invalid values counted by :attr:`InvalidEvent.fault`."""
        counts: dict[str, int] = {}
        for exc in self.invalid:
            counts[exc.fault] = counts.get(exc.fault, 0) + 1
        return counts


def decode_batch(
    values: Iterable[Any],
    recent: RecentEventIds,
    admit: Callable[[OutcomeEvent], None] | None = None,
    *,
    known: tuple[Container[str], Container[str]] | None = None,
    now: float | None = None,
    max_skew_seconds: float = MAX_EVENT_SKEW_SECONDS,
) -> DecodedBatch:
    """Decode, validate and de-duplicate raw event values, in order.

    ``values`` are Kafka message values (``bytes``/``str`` JSON, ``None``
    for an empty message) or already-decoded dicts (the embedded bus). Each
    becomes an event in normal form (:func:`exporter.events.parse_event`:
    a run already in normal form, as the monitor writes it, is the decoded
    dict itself), or an :class:`~exporter.events.InvalidEvent` in
    ``invalid``. ``admit(event)``, when given, runs on each valid event
    before de-duplication and may raise ``InvalidEvent`` to reject it (the
    updater's bound on distinct agents and task types); a rejected id is not
    remembered. ``known``, ``(agent names, task types)``, spares that call
    for an event whose agent and task type are both in them (the usual
    event: a call per event would be a tenth of this loop). New ids are
    remembered in ``recent``; a repeated id counts in ``duplicates``.
    Nothing is raised for bad input. ``rows`` keeps the fields of each run
    in normal form, so a consumer can read the batch column by column
    without a second look at each event.

    ``now`` (the consumer's clock, Unix seconds; None: no bound) bounds
    event time: a timestamp later than ``now + max_skew_seconds`` is
    invalid (``field:timestamp``). Why: the model forgets in event time
    and its clock is the newest timestamp it has seen, so one event from
    the future (a producer's clock ahead, milliseconds sent as seconds)
    would age all real evidence away and freeze the ranking. With the
    bound, one event moves the model's clock at most ``max_skew_seconds``
    past real time. Old timestamps (down to 1970, the contract's floor)
    are accepted: they cannot move the model's clock (the newest wins) and
    weigh by their own age, and replays and simulated clocks are
    legitimate.
    """
    # Once per batch: the bound, and the per-event lookups hoisted to locals.
    latest = FLOAT_MAX if now is None else min(now + max_skew_seconds, FLOAT_MAX)
    events: list[OutcomeEvent] = []
    keep = events.append
    invalid: list[InvalidEvent] = []
    current, previous, half = recent._current, recent._previous, recent.capacity // 2
    remember = current.add
    loads, max_bytes, run_row = orjson.loads, MAX_EVENT_BYTES, common_run_row
    rows: list[tuple[Any, ...]] = []
    keep_row = rows.append
    known_agents, known_tasks = known if known is not None else ((), ())
    duplicates = rebuilt = 0
    for raw in values:
        try:
            # Inline fast path for the common case, message bytes of a run in
            # normal form: one orjson.loads and the checks of common_run_row
            # (which applies the timestamp bound too).
            if type(raw) is bytes and len(raw) <= max_bytes:
                try:
                    obj = loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise InvalidEvent("not_json", f"event is not JSON: {exc}") from None
            elif type(raw) is dict:
                obj = raw
            elif raw is None or isinstance(raw, bytes | str):
                obj = loads_value(raw)
            else:
                obj = raw  # decoded already; the general check names what it is
            row = run_row(obj, latest)
            if row is not None:
                event: OutcomeEvent = obj
                # From the row: a tuple index is cheaper than a dict lookup.
                event_id, agent, task = row[_ID], row[_AGENT], row[_TASK]
            else:
                event = _validate_general(obj)
                rebuilt += 1
                if event["timestamp"] > latest:
                    raise InvalidEvent(
                        "field:timestamp",
                        f"timestamp {event['timestamp']!r} is more than {max_skew_seconds:g} s "
                        f"ahead of this consumer's clock ({now!r}); milliseconds instead of "
                        "seconds, or the producer's clock ahead?")
                event_id, agent, task = event["event_id"], event["agent_name"], event["task_type"]
            if admit is not None and not (agent in known_agents and task in known_tasks):
                admit(event)
        except InvalidEvent as exc:
            invalid.append(exc)
            continue
        # recent.add_if_new, inline (a call per event is a tenth of this loop).
        if event_id in current or event_id in previous:
            duplicates += 1
            continue
        remember(event_id)
        keep(event)
        if row is not None:
            keep_row(row)
        if len(current) >= half:
            recent._previous, recent._current = current, set()
            previous, current = current, recent._current
            remember = current.add
    return DecodedBatch(events, duplicates, invalid, rebuilt, rows)
