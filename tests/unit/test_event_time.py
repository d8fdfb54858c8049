"""Decision quality under one poisoned timestamp (issue 13, item 1).

The exponential rule forgets in event time and its clock is the newest
timestamp it has seen. One event from the far future (milliseconds sent as
seconds, or a producer's clock years ahead) used to move that clock, age all
real evidence to nothing and leave the poisoning agent ranked first for good.
With the consumer's clock bounding event time (``max_event_skew_seconds``),
a seeded stream with one poisoned event early on ends with the same ranking
as the clean stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from servers.common import FakeClock

from autoretrain.exporter.events import EventIdFactory, run_event
from autoretrain.webhook import RealTimeModelUpdater

START = 1_700_000_000.0
P_SUCCESS = {"good": 0.9, "fair": 0.6, "poisoner": 0.2}


def stream(tmp_path: Path, poison: float | None) -> list[str]:
    """Feed 600 seeded runs one second apart, the wall clock following; with
    ``poison``, one success of the worst agent at that timestamp after 20 runs.
    Return the final ranking (no exploration)."""
    clock = FakeClock(START)
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "m"), seed=0,
                                   clock=clock)
    rng = np.random.default_rng(7)
    ids = EventIdFactory()
    agents = sorted(P_SUCCESS)
    for i in range(600):
        clock.now = START + i
        agent = agents[int(rng.integers(len(agents)))]
        ok = rng.random() < P_SUCCESS[agent]
        events = [run_event(ids(), clock.now, agent, "llm", "success" if ok else "failure",
                            10.0, 5, 0.01, task_type="code")]
        if i == 20 and poison is not None:
            events.append(run_event(ids(), poison, "poisoner", "llm", "success", 10.0, 5,
                                    0.01, task_type="code"))
        updater.ingest(events)
    ranking = [agent for agent, _ in updater.predict_best_agent("code", None, 3, False)]
    updater.stop()
    return ranking


@pytest.mark.parametrize("poison", [
    (START + 20) * 1000.0,          # milliseconds instead of seconds
    START + 5 * 365 * 86400.0,      # a producer's clock five years ahead
])
def test_one_poisoned_timestamp_does_not_change_the_ranking(tmp_path: Path,
                                                            poison: float) -> None:
    clean = stream(tmp_path / "clean", None)
    assert clean[0] == "good" and clean[-1] == "poisoner"
    assert stream(tmp_path / "poisoned", poison) == clean
