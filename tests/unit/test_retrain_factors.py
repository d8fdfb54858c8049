"""Incremental retrain per pair: unobserved pairs keep their evidence, change points restart."""

from __future__ import annotations

import numpy as np
import pytest

from autoretrain.exporter.events import accuracy_event, run_event
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.retrain import incremental_retrain
from autoretrain.webhook.updater.strategies import UpdateStrategy, retrain_factors


def run(i: int, t: float, ok: bool, agent: str, task: str = "t") -> dict:
    return run_event(f"e{i}", t, agent, "llm", "success" if ok else "failure", 1.0, 0, 0.0,
                     task_type=task)


def acc(i: int, t: float, value: float, agent: str, task: str = "t") -> dict:
    return accuracy_event(f"c{i}", t, agent, "llm", "task", value, "human", task_type=task)


def evidence(model: AgentSelectionModel, agent: str, task: str = "t") -> tuple[float, ...]:
    ev = model._rule.evidence(len(model.task_types), len(model.agents), model._task_hash,
                              model._agent_hash)
    r, c = model.task_types.index(task), model.agents.index(agent)
    return (float(ev.runs[r, c]), float(ev.runs[r, c] * ev.success[r, c]),
            float(ev.acc_n[r, c]), float(ev.acc_n[r, c] * ev.acc_mean[r, c]))


def sums(n: float, s: float, m: float = 0.0, a: float = 0.0, q: float = 0.0) -> list[np.ndarray]:
    return [np.array([[x]]) for x in (n, s, m, a, q)]


@pytest.mark.parametrize(
    ("older", "buffered", "restart", "factor"),
    [
        (sums(50, 48), sums(0, 0), True, 1.0),  # not observed: kept
        (sums(50, 48), sums(10, 9), True, 0.25),  # consistent: discounted
        (sums(50, 48), sums(10, 1), True, 0.0),  # success 0.96 -> 0.1: restarted
        (sums(50, 48), sums(10, 1), False, 0.25),  # BAYESIAN: plain discount
        (sums(50, 48), sums(2, 0), True, 0.25),  # too little buffered evidence to judge
        # accuracy 0.9 -> 0.5 over 6 records (variance floored at 0.01): restarted
        (sums(0, 0, 50, 45, 40.5), sums(0, 0, 6, 3, 1.5), True, 0.0),
        (sums(0, 0, 50, 45, 40.5), sums(0, 0, 6, 5.1, 4.34), True, 0.25),
    ],
)
def test_retrain_factors(older: list[np.ndarray], buffered: list[np.ndarray], restart: bool,
                         factor: float) -> None:
    assert retrain_factors(older, buffered, 0.25, restart)[0, 0] == factor


def history_and_buffer() -> tuple[list[dict], list[dict]]:
    # Three agents on one task type, an hour of history (one event a second):
    # "good" succeeds, "bad" fails (tried rarely), "drifts" succeeds then fails.
    history = []
    for i in range(300):
        history.append(run(i, float(i), True, "good"))
        history.append(run(1000 + i, float(i), True, "drifts"))
        if i % 30 == 0:
            history.append(run(2000 + i, float(i), False, "bad"))
    buffer = [run(3000 + i, 300.0 + i, i % 10 != 0, "good") for i in range(20)]
    buffer += [run(4000 + i, 300.0 + i, False, "drifts") for i in range(20)]
    return history, buffer


@pytest.mark.parametrize("strategy", [UpdateStrategy.EXPONENTIAL, UpdateStrategy.BAYESIAN])
def test_incremental_retrain_keeps_unobserved_pairs_and_restarts_changed_ones(
        strategy: UpdateStrategy) -> None:
    history, buffered = history_and_buffer()
    model = AgentSelectionModel(strategy, half_life_seconds=1e6)
    model.update(EventBatch.from_events(history))
    buffer = EventBatch.from_events(buffered)
    model.update(buffer)
    before = {a: evidence(model, a) for a in ("good", "bad", "drifts")}
    candidate, weights = incremental_retrain(model, buffer, np.ones(len(buffer)),
                                             discount=0.25, recency_weight=2.0)
    after = {a: evidence(candidate, a) for a in ("good", "bad", "drifts")}
    # "bad" is not in the buffer: what the model knew about it is kept exactly.
    assert after["bad"] == pytest.approx(before["bad"])
    # "good" is in the buffer and consistent with its history: discounted.
    good_w = weights[:20]
    old_runs = before["good"][0] - 20
    assert after["good"][0] == pytest.approx(0.25 * old_runs + good_w.sum(), rel=1e-4)
    # "drifts" fails every buffered run after 300 successes: a change point.
    drift_w = weights[20:]
    # Both restart the pair (BAYESIAN too since issue 14: with the default
    # discount of 1 a restart is how a retrain moves counts that never forget).
    assert after["drifts"] == pytest.approx((drift_w.sum(), 0.0, 0.0, 0.0), rel=1e-4)
    assert candidate.predict_best_agent("t", top_k=3)[-1][0] == "drifts"
    assert {a: evidence(model, a) for a in before} == before  # the serving model is untouched


def test_moving_average_restart_and_keep() -> None:
    events = [run(i, float(i), True, "drifts") for i in range(30)]
    events += [acc(100 + i, float(i), 0.9, "kept") for i in range(30)]
    model = AgentSelectionModel(UpdateStrategy.MOVING_AVERAGE, window_size=40)
    model.update(EventBatch.from_events(events))
    buffer = EventBatch.from_events([run(200 + i, 40.0 + i, False, "drifts") for i in range(8)])
    model.update(buffer)
    kept_before = evidence(model, "kept")
    candidate, weights = incremental_retrain(model, buffer, np.ones(8), discount=0.5,
                                             recency_weight=2.0)
    assert evidence(candidate, "kept") == pytest.approx(kept_before)
    # 30 successes then 8 failures: a change point; the successes' slots drop
    # to weight 0, the failures carry the recency weights.
    assert evidence(candidate, "drifts")[:2] == pytest.approx((weights.sum(), 0.0))
