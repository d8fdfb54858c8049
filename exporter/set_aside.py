"""Pairs the agent-selection model set aside, as the monitor's checker sees them.

When the model finds an agent clearly worse than its history on a task type
it routes around it (the pair is *set aside* until a retry finds it well
again). Routing then moves away from the agent, its runs leave the monitor's
window, and its per-agent threshold alerts stop: the window no longer holds
enough of its runs to judge. A deployment with Prometheus has the
``AgentSetAside`` alert for that; a platform that embeds the monitor as a
library learns it from here: :class:`SetAsideWatch` polls what the model
holds set aside (a callable the orchestrator injects, e.g.
``RealTimeModelUpdater.set_aside_pairs``; this package never imports the
updater) and remembers since when and how often each pair was set aside.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .timefmt import utc_iso

__all__ = ["SetAsidePair", "SetAsideSource", "SetAsideWatch"]

log = logging.getLogger(__name__)

#: Returns the ``(task_type, agent)`` pairs the selection model holds set aside now.
SetAsideSource = Callable[[], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class SetAsidePair:
    """One pair set aside now: since when (Unix seconds, first seen by a
    check) and how many times it was set aside since the watch started."""

    task_type: str
    agent: str
    since: float
    times: int

    def as_dict(self) -> dict[str, object]:
        return {"task_type": self.task_type, "agent": self.agent,
                "since": utc_iso(self.since), "times": self.times}


class SetAsideWatch:
    """Polls a :data:`SetAsideSource`; reports the pairs newly set aside and restored.

    A source that raises or returns something other than ``(task_type,
    agent)`` string pairs is counted in :attr:`errors` and logged; the
    watch then keeps what it knew, so a broken source neither stops the
    checker's pass nor reports every pair as restored.
    """

    def __init__(self, source: SetAsideSource) -> None:
        if not callable(source):
            raise ValueError(f"set_aside must be a callable returning (task_type, agent) "
                             f"pairs, got {source!r}")
        self._source = source
        self._lock = threading.Lock()
        self._since: dict[tuple[str, str], float] = {}
        self._times: dict[tuple[str, str], int] = {}
        self.errors = 0

    def _read(self) -> set[tuple[str, str]] | None:
        try:
            pairs = {(t, a) for t, a in self._source()}
        except Exception:  # the orchestrator's callable: its failure must not stop the check
            log.exception("the set-aside source raised; keeping the pairs last read")
            self.errors += 1
            return None
        if not all(isinstance(t, str) and isinstance(a, str) for t, a in pairs):
            log.error("the set-aside source returned non-string pairs; keeping the pairs last read")
            self.errors += 1
            return None
        return pairs

    def poll(self, now: float) -> tuple[list[SetAsidePair], list[tuple[str, str]]]:
        """Read the source: the pairs set aside since the last poll, and those restored."""
        pairs = self._read()
        with self._lock:
            if pairs is None:
                return [], []
            new = sorted(pairs - self._since.keys())
            gone = sorted(self._since.keys() - pairs)
            for key in gone:
                del self._since[key]
            for key in new:
                self._since[key] = now
                self._times[key] = self._times.get(key, 0) + 1
            return [self._pair(key) for key in new], gone

    def _pair(self, key: tuple[str, str]) -> SetAsidePair:
        return SetAsidePair(key[0], key[1], self._since[key], self._times[key])

    def current(self) -> list[SetAsidePair]:
        """The pairs set aside at the last poll, oldest first."""
        with self._lock:
            return sorted((self._pair(k) for k in self._since), key=lambda p: (p.since, p.agent))

    def agents(self) -> dict[str, list[str]]:
        """Agent -> the task types it is set aside on (at the last poll)."""
        out: dict[str, list[str]] = {}
        for p in self.current():
            out.setdefault(p.agent, []).append(p.task_type)
        return out

    @property
    def total(self) -> int:
        """Pairs set aside since the watch started (each time counted)."""
        with self._lock:
            return sum(self._times.values())
