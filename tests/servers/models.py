"""Seeded outcome streams that teach an updater a known best agent (unit and process tests)."""

from __future__ import annotations

from typing import Any

import numpy as np

from autoretrain.exporter.events import EventIdFactory, run_event

__all__ = ["TASKS", "teach"]

TASKS = ("t0", "t1")


def teach(updater: Any, best: str, n: int = 120, seed: int = 0, agents: int = 3,
          start: float = 1000.0) -> None:
    """Ingest ``n`` runs over :data:`TASKS` among ``agents`` agents ``a0``.. where
    ``best`` succeeds 90 % of the time and the others 30 %."""
    rng = np.random.default_rng(seed)
    ids = EventIdFactory()
    events = []
    for i in range(n):
        agent = f"a{rng.integers(agents)}"
        ok = rng.random() < (0.9 if agent == best else 0.3)
        events.append(run_event(ids(), start + i, agent, "llm", "success" if ok else "failure",
                                10.0, 5, 0.01, task_type=TASKS[i % len(TASKS)]))
    updater.ingest(events)
