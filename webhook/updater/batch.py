"""Columnar batches of validated outcome events.

A batch names its task types and agents once (``task_names``,
``agent_names``) and refers to them by small integer codes, so a batch does
not depend on any model's row order: every model maps the names to its own
rows when it is fed the batch. Contexts are reduced to stable 64-bit hashes
of ``key=value`` (only the gradient strategy reads them).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoretrain.exporter.events import RUN_FIELDS, OutcomeEvent

__all__ = ["BatchBuilder", "EventBatch", "context_hash", "stable_hash"]

# 0 marks "no context feature" in the padded context matrix.
_NO_FEATURE = 0


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (unlike ``hash()``).

    Saved gradient weights are addressed by these hashes, so they must not
    depend on Python's per-process string-hash salt.
    """
    data = text.encode()
    # Two CRCs with different seeds give 64 bits; never 0 (0 means "none").
    return ((zlib.crc32(data) << 32) | zlib.crc32(data, 0x5BD1E995)) or 1


def context_hash(key: str, value: Any) -> int:
    """Stable hash of one context feature ``key=value``."""
    return stable_hash(f"{key}={type(value).__name__}:{value}")


def _floats(values: Iterable[Any], n: int) -> np.ndarray:
    """``float64`` array of ``n`` Python numbers (``fromiter`` skips the shape
    discovery ``np.array`` does on a sequence of objects)."""
    return np.fromiter(values, np.float64, n)


class _Codes(dict[str, int]):
    """Name -> code, a new name numbered on first lookup (so codes follow the
    order of first appearance, as :class:`BatchBuilder` numbers them): one
    dict lookup per name, in C when mapped over a column."""

    def __missing__(self, name: str) -> int:
        code = self[name] = len(self)
        return code


@dataclass(frozen=True, eq=False)
class EventBatch:
    """Validated events as columns, oldest first.

    Attributes
    ----------
    task_names, agent_names
        The distinct names, in order of first appearance in the batch.
    task, agent
        ``intp`` codes into ``task_names`` / ``agent_names``.
    is_run
        True for a run event (``value`` is 1.0 for success, else 0.0); False
        for an accuracy event (``value`` is the accuracy in 0..1).
    value, timestamp
        ``float64``.
    context
        ``uint64`` matrix ``[n, c]`` of context-feature hashes, 0 = none.
    cost, duration
        ``float64``: a run's cost and duration in seconds (NaN for an
        accuracy record); what the model learns expected cost and latency from.
    """

    task_names: tuple[str, ...]
    agent_names: tuple[str, ...]
    task: np.ndarray
    agent: np.ndarray
    is_run: np.ndarray
    value: np.ndarray
    timestamp: np.ndarray
    context: np.ndarray
    cost: np.ndarray
    duration: np.ndarray

    def __len__(self) -> int:
        return int(self.task.shape[0])

    @classmethod
    def empty(cls) -> EventBatch:
        """A batch with no events."""
        return BatchBuilder().build()

    @classmethod
    def from_events(cls, events: Iterable[OutcomeEvent]) -> EventBatch:
        """Build a batch from events already checked by ``validate_event``."""
        builder = BatchBuilder()
        builder.add_events(events)
        return builder.build()

    @classmethod
    def from_run_rows(cls, rows: Sequence[tuple[Any, ...]]) -> EventBatch:
        """The batch of runs in normal form given as rows of
        :data:`~autoretrain.exporter.events.RUN_FIELDS` (what
        :func:`~autoretrain.exporter.ingest.decode_batch` keeps): the batch
        :meth:`from_events` builds of the same events, made column by column
        in C loops (``zip``, ``map``, numpy) instead of a Python step per
        event. The updater's ingest takes this path for almost every batch."""
        n = len(rows)
        if not n:
            return cls.empty()
        column = dict(zip(RUN_FIELDS, zip(*rows, strict=True), strict=True))
        task_code, agent_code = _Codes(), _Codes()
        task = np.fromiter(map(task_code.__getitem__, column["task_type"]), np.intp, n)
        agent = np.fromiter(map(agent_code.__getitem__, column["agent_name"]), np.intp, n)
        return cls(
            tuple(task_code),
            tuple(agent_code),
            task,
            agent,
            np.ones(n, dtype=bool),
            _floats(map("success".__eq__, column["status"]), n),
            _floats(column["timestamp"], n),
            np.zeros((n, 0), dtype=np.uint64),
            _floats(column["cost"], n),
            _floats(column["duration_ms"], n) / 1000.0,
        )

    def take(self, index: np.ndarray | slice) -> EventBatch:
        """The events at ``index`` (names are kept, codes unchanged)."""
        return EventBatch(
            self.task_names,
            self.agent_names,
            self.task[index],
            self.agent[index],
            self.is_run[index],
            self.value[index],
            self.timestamp[index],
            self.context[index],
            self.cost[index],
            self.duration[index],
        )

    @staticmethod
    def concat(batches: Sequence[EventBatch]) -> EventBatch:
        """One batch holding ``batches`` in order (codes remapped to merged names)."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return EventBatch.empty()
        if len(batches) == 1:
            return batches[0]
        task_map: dict[str, int] = {}
        agent_map: dict[str, int] = {}
        tasks, agents = [], []
        for b in batches:
            t_lookup = np.array(
                [task_map.setdefault(n, len(task_map)) for n in b.task_names], dtype=np.intp
            )
            a_lookup = np.array(
                [agent_map.setdefault(n, len(agent_map)) for n in b.agent_names], dtype=np.intp
            )
            tasks.append(t_lookup[b.task])
            agents.append(a_lookup[b.agent])
        width = max(b.context.shape[1] for b in batches)
        contexts = [
            b.context
            if b.context.shape[1] == width
            else np.pad(b.context, ((0, 0), (0, width - b.context.shape[1])))
            for b in batches
        ]
        return EventBatch(
            tuple(task_map),
            tuple(agent_map),
            np.concatenate(tasks),
            np.concatenate(agents),
            np.concatenate([b.is_run for b in batches]),
            np.concatenate([b.value for b in batches]),
            np.concatenate([b.timestamp for b in batches]),
            np.concatenate(contexts),
            np.concatenate([b.cost for b in batches]),
            np.concatenate([b.duration for b in batches]),
        )


class BatchBuilder:
    """Accumulates validated events, then :meth:`build` makes an :class:`EventBatch`.

    ``add`` is the per-event hot path: a handful of dict lookups and list
    appends; all arithmetic happens once, vectorised, in the model.
    """

    def __init__(self) -> None:
        self._task_map: dict[str, int] = {}
        self._agent_map: dict[str, int] = {}
        self._task: list[int] = []
        self._agent: list[int] = []
        self._is_run: list[bool] = []
        self._value: list[float] = []
        self._timestamp: list[float] = []
        self._cost: list[float] = []
        self._duration: list[float] = []
        self._contexts: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._task)

    def add(self, event: OutcomeEvent) -> None:
        """Append one validated event."""
        if event["kind"] == "run":
            self.add_row(event["task_type"], event["agent_name"], True,
                         1.0 if event["status"] == "success" else 0.0, event["timestamp"],
                         event["cost"], event["duration_ms"] / 1000.0)
        else:
            self.add_row(event["task_type"], event["agent_name"], False,
                         float(event["accuracy"]), event["timestamp"])
        context = event.get("context")
        if context:
            self._contexts[len(self._task) - 1] = [context_hash(k, v) for k, v in context.items()]

    def add_events(self, events: Iterable[OutcomeEvent]) -> None:
        """Append validated events in order: :meth:`add` of each, with the common
        run without context (the ingest's almost every event) appended inline
        here, without a call per event."""
        task_map, agent_map = self._task_map, self._agent_map
        task_get, agent_get = task_map.get, agent_map.get
        task, agent = self._task.append, self._agent.append
        is_run, value, timestamp = self._is_run.append, self._value.append, self._timestamp.append
        cost, duration = self._cost.append, self._duration.append
        add = self.add
        for event in events:
            if event["kind"] != "run" or "context" in event:
                add(event)
                continue
            name = event["task_type"]
            code = task_get(name)
            if code is None:
                code = task_map[name] = len(task_map)
            task(code)
            name = event["agent_name"]
            code = agent_get(name)
            if code is None:
                code = agent_map[name] = len(agent_map)
            agent(code)
            is_run(True)
            value(1.0 if event["status"] == "success" else 0.0)
            timestamp(event["timestamp"])
            cost(event["cost"])
            duration(event["duration_ms"] / 1000.0)

    def add_row(self, task_type: str, agent_name: str, is_run: bool, value: float,
                timestamp: float, cost: float = math.nan,
                duration_seconds: float = math.nan) -> None:
        """Append one validated observation without context: a run (``value``
        1.0 for success, else 0.0, with its ``cost`` and ``duration_seconds``)
        or an accuracy record (NaN for both)."""
        task_map = self._task_map
        code = task_map.get(task_type)
        if code is None:
            code = task_map[task_type] = len(task_map)
        self._task.append(code)
        agent_map = self._agent_map
        code = agent_map.get(agent_name)
        if code is None:
            code = agent_map[agent_name] = len(agent_map)
        self._agent.append(code)
        self._is_run.append(is_run)
        self._value.append(value)
        self._timestamp.append(timestamp)
        self._cost.append(cost)
        self._duration.append(duration_seconds)

    def build(self) -> EventBatch:
        """The batch of everything added so far."""
        n = len(self._task)
        width = max((len(v) for v in self._contexts.values()), default=0)
        context = np.zeros((n, width), dtype=np.uint64)
        for row, hashes in self._contexts.items():
            context[row, : len(hashes)] = hashes
        return EventBatch(
            tuple(self._task_map),
            tuple(self._agent_map),
            np.array(self._task, dtype=np.intp),
            np.array(self._agent, dtype=np.intp),
            np.array(self._is_run, dtype=bool),
            np.array(self._value, dtype=np.float64),
            np.array(self._timestamp, dtype=np.float64),
            context,
            np.array(self._cost, dtype=np.float64),
            np.array(self._duration, dtype=np.float64),
        )
