"""Retraining: incremental never double counts, full equals fresh, scoring, promotion."""

from __future__ import annotations

import numpy as np
import pytest

from autoretrain.exporter.events import run_event
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.retrain import (
    full_retrain,
    incremental_retrain,
    recency_weights,
    retrain,
    score_model,
)
from autoretrain.webhook.updater.strategies import UpdateStrategy


def run(i: int, t: float, ok: bool, agent: str = "a", task: str = "t") -> dict:
    return run_event(f"e{i}", t, agent, "llm", "success" if ok else "failure", 1.0, 0, 0.0,
                     task_type=task)


def counts(model: AgentSelectionModel) -> tuple[float, float]:
    ev = model._rule.evidence(len(model.task_types), len(model.agents), model._task_hash,
                              model._agent_hash)
    return float(ev.runs[0, 0]), float(ev.runs[0, 0] * ev.success[0, 0])


def test_recency_weights() -> None:
    np.testing.assert_allclose(recency_weights(4, 2.0), [1.25, 1.5, 1.75, 2.0])
    with pytest.raises(ValueError, match="recency_weight"):
        recency_weights(3, 0.5)


def test_incremental_bayesian_closed_form_and_no_double_count() -> None:
    history = [run(i, i, ok) for i, ok in enumerate([True, True, True, False])]
    buffer = EventBatch.from_events([run(10, 10, False), run(11, 11, False)])
    model = AgentSelectionModel(UpdateStrategy.BAYESIAN)
    model.update(EventBatch.from_events(history))
    model.update(buffer)
    candidate, weights = incremental_retrain(model, buffer, np.ones(2), discount=0.5,
                                             recency_weight=2.0)
    np.testing.assert_allclose(weights, [1.5, 2.0])
    # 0.5 * (4 runs, 3 successes) + (1.5 + 2.0) failures
    assert counts(candidate) == pytest.approx((5.5, 1.5))
    assert counts(model) == (6.0, 3.0)  # the serving model is untouched
    # Again, with the weights the buffer now carries: the buffer is removed at
    # (1.5, 2.0), the rest (2 runs, 1.5 successes) halved, the buffer re-added.
    again, _ = incremental_retrain(candidate, buffer, weights, discount=0.5, recency_weight=2.0)
    assert counts(again) == pytest.approx((1.0 + 3.5, 0.75))


def test_incremental_exponential_closed_form() -> None:
    model = AgentSelectionModel(UpdateStrategy.EXPONENTIAL, half_life_seconds=10)
    model.update(EventBatch.from_events([run(1, 0, True), run(2, 10, True)]))
    buffer = EventBatch.from_events([run(3, 20, False)])
    model.update(buffer)
    candidate, _ = incremental_retrain(model, buffer, np.ones(1), discount=0.5,
                                       recency_weight=3.0)
    # At T = 20: old successes weigh 0.25 + 0.5, halved; the failure weighs 3.
    assert counts(candidate) == pytest.approx((0.375 + 3.0, 0.375))


def test_incremental_moving_average_reweights_window_slots() -> None:
    model = AgentSelectionModel(UpdateStrategy.MOVING_AVERAGE, window_size=3)
    model.update(EventBatch.from_events([run(i, i, ok) for i, ok in
                                         enumerate([True, True, True])]))
    buffer = EventBatch.from_events([run(5, 5, False), run(6, 6, False)])
    model.update(buffer)
    candidate, _ = incremental_retrain(model, buffer, np.ones(2), discount=0.5,
                                       recency_weight=2.0)
    # window: success (halved), failure x1.5, failure x2.0
    assert counts(candidate) == pytest.approx((4.0, 0.5))


@pytest.mark.parametrize("strategy", list(UpdateStrategy))
def test_full_retrain_equals_fresh_model_fed_the_buffer(strategy: UpdateStrategy) -> None:
    rng = np.random.default_rng(7)
    events = [run(i, float(i), bool(rng.random() < 0.6), agent=f"a{rng.integers(3)}",
                  task=f"t{rng.integers(2)}") for i in range(600)]
    model = AgentSelectionModel(strategy, seed=3, window_size=10)
    model.update(EventBatch.from_events(events[:400]))
    buffer = EventBatch.from_events(events[400:])
    model.update(buffer)
    candidate = full_retrain(model, buffer)
    fresh = AgentSelectionModel(strategy, seed=3, window_size=10)
    fresh.update(EventBatch.from_events(events[400:]))
    assert candidate.metadata() == fresh.metadata()
    for name, array in fresh.to_arrays().items():
        np.testing.assert_array_equal(candidate.to_arrays()[name], array)
    assert candidate.events_seen == 200 and model.events_seen == 600


def test_score_prefers_the_model_that_predicts_the_holdout() -> None:
    good_events = [run(i, i, i % 10 < 9, agent="a") for i in range(100)]
    good_events += [run(100 + i, i, i % 10 < 2, agent="b") for i in range(100)]
    bad_events = [run(i, i, i % 10 < 2, agent="a") for i in range(100)]
    bad_events += [run(100 + i, i, i % 10 < 9, agent="b") for i in range(100)]
    holdout = EventBatch.from_events([run(1000 + i, 1000 + i, i % 10 < 9, agent="a")
                                      for i in range(20)]
                                     + [run(2000 + i, 1000 + i, i % 10 < 2, agent="b")
                                        for i in range(20)])
    good, bad = AgentSelectionModel(), AgentSelectionModel()
    good.update(EventBatch.from_events(good_events))
    bad.update(EventBatch.from_events(bad_events))
    g, b = score_model(good, holdout), score_model(bad, holdout)
    assert g.selection_reward == pytest.approx(0.9)  # it picks "a", which won 90%
    assert b.selection_reward == pytest.approx(0.2)
    assert g.log_loss < b.log_loss and g.score > b.score


def test_worse_candidate_is_rejected() -> None:
    # Long stable history: "a" is good. The buffer's older part is an anomaly
    # (a fails), its newest part (the holdout) is back to normal; a full
    # retrain learns only the anomaly and must lose on the holdout.
    history = [run(i, i, i % 10 < 9, agent="a") for i in range(300)]
    history += [run(1000 + i, i, i % 10 < 5, agent="b") for i in range(300)]
    anomaly = [run(2000 + i, 400 + i, False, agent="a") for i in range(30)]
    anomaly += [run(3000 + i, 400 + i, True, agent="b") for i in range(30)]
    normal = [run(4000 + i, 500 + i, i % 10 < 9, agent="a") for i in range(20)]
    normal += [run(5000 + i, 500 + i, i % 10 < 5, agent="b") for i in range(20)]
    serving = AgentSelectionModel(UpdateStrategy.BAYESIAN)
    serving.update(EventBatch.from_events(history + anomaly))
    baseline = serving.copy()
    serving.update(EventBatch.from_events(normal))
    buffer = EventBatch.from_events(anomaly + normal)
    outcome = retrain(serving, buffer, np.ones(len(buffer)), baseline=baseline,
                      holdout_start=len(anomaly), full=True, discount=0.25,
                      recency_weight=2.0)
    assert not outcome.promoted and outcome.model is None
    assert outcome.candidate_score.score < outcome.serving_score.score
    assert outcome.retrain_type == "full"


def test_retrain_refits_on_the_whole_buffer_when_promoted() -> None:
    history = [run(i, i, True) for i in range(50)]
    drift = [run(100 + i, 100 + i, False) for i in range(40)]
    serving = AgentSelectionModel(UpdateStrategy.BAYESIAN)
    serving.update(EventBatch.from_events(history + drift[:30]))
    baseline = serving.copy()
    serving.update(EventBatch.from_events(drift[30:]))
    buffer = EventBatch.from_events(drift)
    outcome = retrain(serving, buffer, np.ones(40), baseline=baseline, holdout_start=30,
                      full=False, discount=0.5, recency_weight=2.0)
    assert outcome.promoted and outcome.model is not None
    expected, _ = incremental_retrain(serving, buffer, np.ones(40), discount=0.5,
                                      recency_weight=2.0)
    assert counts(outcome.model) == pytest.approx(counts(expected))
    # 50 successes, then 40 failures: a change point, so the pair restarts
    # from the buffer alone; the sum of the weights 1 + i/40 for i = 1..40 is 40 + 41/2
    assert counts(outcome.model) == pytest.approx((40 + 41 / 2, 0))
