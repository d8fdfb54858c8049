"""A seeded drift scenario: the best agent of some task types becomes poor halfway."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoretrain.exporter.events import EventIdFactory, run_event
from autoretrain.webhook import RealTimeModelUpdater, UpdateStrategy

AGENTS = ("a0", "a1", "a2", "a3")
TASKS = ("t0", "t1", "t2")
BEFORE = {"t0": (0.9, 0.6, 0.5, 0.4), "t1": (0.4, 0.85, 0.6, 0.5), "t2": (0.5, 0.5, 0.8, 0.4)}
AFTER = {"t0": (0.1, 0.8, 0.5, 0.4), "t1": (0.4, 0.1, 0.6, 0.8), "t2": BEFORE["t2"]}
OLD_BEST = {"t0": "a0", "t1": "a1", "t2": "a2"}
NEW_BEST = {"t0": "a1", "t1": "a3", "t2": "a2"}


def feed(u: RealTimeModelUpdater, rng: np.random.Generator, ids: EventIdFactory,
         probs: dict[str, tuple[float, ...]], n: int, start: float) -> None:
    assert u.event_bus is not None
    for i in range(n):
        task = TASKS[rng.integers(len(TASKS))]
        k = int(rng.integers(len(AGENTS)))
        ok = rng.random() < probs[task][k]
        u.event_bus.publish(run_event(ids(), start + i, AGENTS[k], "llm",
                                      "success" if ok else "failure", 100.0, 10, 0.001,
                                      task_type=task))
        if i % 100 == 99:
            u.process_pending()
    u.process_pending()


def best(u: RealTimeModelUpdater) -> dict[str, str]:
    return {t: u.predict_best_agent(t, top_k=1)[0][0] for t in TASKS}


def drifted(tmp_path: Path, strategy: UpdateStrategy) -> RealTimeModelUpdater:
    u = RealTimeModelUpdater(model_storage_path=str(tmp_path), batch_size=100,
                             buffer_size=1500, update_strategy=strategy, seed=1)
    rng, ids = np.random.default_rng(2024), EventIdFactory()
    feed(u, rng, ids, BEFORE, 6000, start=0.0)
    assert best(u) == OLD_BEST
    feed(u, rng, ids, AFTER, 1200, start=6000.0)
    return u


def test_bayesian_needs_the_retrain(tmp_path: Path) -> None:
    u = drifted(tmp_path, UpdateStrategy.BAYESIAN)
    assert best(u) == OLD_BEST  # no forgetting: the long history still wins
    result = u.trigger_retraining(reason="accuracy alert")
    assert result["success"] and result["promoted"], result
    assert result["candidate_score"] > result["serving_score"]
    assert best(u) == NEW_BEST


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("strategy", list(UpdateStrategy))
def test_after_drift_and_retrain_the_new_best_ranks_first(tmp_path: Path,
                                                          strategy: UpdateStrategy,
                                                          full: bool) -> None:
    u = drifted(tmp_path, strategy)
    result = u.trigger_retraining(reason="drift", force_full_retrain=full)
    assert result["success"], result
    assert best(u) == NEW_BEST, (result, [u.predict_best_agent(t) for t in TASKS])
