"""Each update strategy's rule on small hand-checked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoretrain.exporter.events import accuracy_event, run_event
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.strategies import UpdateStrategy


def run(i: int, t: float, status: str, agent: str = "a", task: str = "t",
        context: dict | None = None) -> dict:
    return run_event(f"r{i}", t, agent, "llm", status, 1.0, 0, 0.0, task_type=task,
                     context=context)


def acc(i: int, t: float, value: float, agent: str = "a", task: str = "t") -> dict:
    return accuracy_event(f"c{i}", t, agent, "llm", "task", value, "human", task_type=task)


def evidence(model: AgentSelectionModel):
    m = model._rule.evidence(len(model.task_types), len(model.agents), model._task_hash,
                             model._agent_hash)
    return m


def test_bayesian_counts_and_accuracy_moments() -> None:
    model = AgentSelectionModel(UpdateStrategy.BAYESIAN)
    model.update(EventBatch.from_events([
        run(1, 0, "success"), run(2, 1, "failure"), run(3, 2, "success"),
        acc(4, 3, 0.5), acc(5, 4, 1.0),
    ]))
    ev = evidence(model)
    assert ev.runs[0, 0] == 3 and ev.success[0, 0] == pytest.approx(2 / 3)
    assert ev.acc_n[0, 0] == 2 and ev.acc_mean[0, 0] == pytest.approx(0.75)
    assert ev.acc_var[0, 0] == pytest.approx((0.25 + 1.0) / 2 - 0.75**2)
    # Posterior: Beta(2*mu + s, 2*(1-mu) + n - s) with mu = (1+2)/(2+3) from the
    # agent's aggregate; accuracy (a + 1)/(m + 1) = 2.5/3.
    post = model.posterior()
    mu = 3 / 5
    assert post.alpha[0, 0] == pytest.approx(2 * mu + 2)
    assert post.beta[0, 0] == pytest.approx(2 * (1 - mu) + 1)
    assert post.accuracy[0, 0] == pytest.approx(2.5 / 3)
    assert post.reward[0, 0] == pytest.approx((2 * mu + 2) / 5 * 2.5 / 3)
    # The aggregate row (last) has the uniform prior.
    assert post.alpha[1, 0] == pytest.approx(3) and post.beta[1, 0] == pytest.approx(2)


def test_exponential_halves_weight_per_half_life_of_event_time() -> None:
    model = AgentSelectionModel(UpdateStrategy.EXPONENTIAL, half_life_seconds=10)
    events = [run(1, 0, "success"), run(2, 10, "failure"), run(3, 20, "success")]
    model.update(EventBatch.from_events(events))
    ev = evidence(model)
    # At the clock T = 20: weights 2**-2, 2**-1, 1.
    assert ev.runs[0, 0] == pytest.approx(1.75)
    assert ev.success[0, 0] == pytest.approx(1.25 / 1.75)
    # Order and batching do not matter: the weight is a function of event time.
    other = AgentSelectionModel(UpdateStrategy.EXPONENTIAL, half_life_seconds=10)
    other.update(EventBatch.from_events(events[2:]))
    other.update(EventBatch.from_events(events[:2][::-1]))
    assert evidence(other).runs[0, 0] == pytest.approx(1.75)
    assert evidence(other).success[0, 0] == pytest.approx(1.25 / 1.75)


def test_exponential_survives_hundreds_of_half_lives() -> None:
    model = AgentSelectionModel(UpdateStrategy.EXPONENTIAL, half_life_seconds=1)
    model.update(EventBatch.from_events([run(1, 0, "success")]))
    model.update(EventBatch.from_events([run(2, 1000, "failure")]))
    model.update(EventBatch.from_events([run(3, 1001, "failure")]))
    ev = evidence(model)
    assert np.isfinite(ev.runs).all()
    assert ev.runs[0, 0] == pytest.approx(1.5)  # 2**-1 + 1 (+ 2**-1001)
    assert ev.success[0, 0] == pytest.approx(0.0, abs=1e-250)


def test_moving_average_keeps_the_last_n_per_pair_and_kind() -> None:
    events = [run(i, i, s) for i, s in enumerate(["success", "failure", "success",
                                                   "success", "failure"])]
    events += [acc(10, 10, 0.2), acc(11, 11, 0.4), acc(12, 12, 0.6), acc(13, 13, 0.8)]
    events += [run(20, 20, "success", agent="b")]
    one = AgentSelectionModel(UpdateStrategy.MOVING_AVERAGE, window_size=3)
    one.update(EventBatch.from_events(events))
    split = AgentSelectionModel(UpdateStrategy.MOVING_AVERAGE, window_size=3)
    for chunk in (events[:2], events[2:3], events[3:7], events[7:]):
        split.update(EventBatch.from_events(chunk))
    for model in (one, split):
        ev = evidence(model)
        a, b = model.agents.index("a"), model.agents.index("b")
        # window of runs: success, success, failure
        assert ev.runs[0, a] == 3 and ev.success[0, a] == pytest.approx(2 / 3)
        # window of accuracy: 0.4, 0.6, 0.8
        assert ev.acc_n[0, a] == 3 and ev.acc_mean[0, a] == pytest.approx(0.6)
        assert ev.runs[0, b] == 1 and ev.success[0, b] == 1


def test_gradient_sgd_step_by_hand() -> None:
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    model = AgentSelectionModel(UpdateStrategy.GRADIENT, learning_rate=0.5)
    model.update(EventBatch.from_events([run(1, 0, "success")]))
    # All weights 0 -> p = 0.5; each of the 4 features (bias, task, agent,
    # task x agent) moves by 0.5 * (1 - 0.5) = 0.25, so the logit is 1.0.
    assert model.posterior().success[0, 0] == pytest.approx(sigmoid(1.0))
    # Aggregate row: bias + agent only.
    assert model.posterior().success[1, 0] == pytest.approx(sigmoid(0.5))

    model = AgentSelectionModel(UpdateStrategy.GRADIENT, learning_rate=0.5)
    model.update(EventBatch.from_events([run(1, 0, "success", agent="a"),
                                         run(2, 0, "failure", agent="b")]))
    # One mini-batch: the shared bias and task features average +0.25 and
    # -0.25 to 0; each agent and pair feature moves by +-0.25.
    post = model.posterior()
    a, b = model.agents.index("a"), model.agents.index("b")
    assert post.success[0, a] == pytest.approx(sigmoid(0.5))
    assert post.success[0, b] == pytest.approx(sigmoid(-0.5))


def test_gradient_uses_context_features() -> None:
    model = AgentSelectionModel(UpdateStrategy.GRADIENT, learning_rate=0.5, seed=0)
    events = []
    for i in range(400):
        region = "eu" if i % 2 else "us"
        agent = "a" if i % 4 < 2 else "b"
        good = (region == "eu") == (agent == "a")
        events.append(run(i, i, "success" if good else "failure", agent=agent,
                          context={"region": region}))
    model.update(EventBatch.from_events(events))
    assert model.predict_best_agent("t", context={"region": "eu"}, top_k=1)[0][0] == "a"
    assert model.predict_best_agent("t", context={"region": "us"}, top_k=1)[0][0] == "b"


@pytest.mark.parametrize("strategy", list(UpdateStrategy))
def test_strategies_are_distinct(strategy: UpdateStrategy) -> None:
    rng = np.random.default_rng(3)
    events = [run(i, 100.0 * i, "success" if rng.random() < (0.9 if i < 300 else 0.1)
                  else "failure") for i in range(400)]
    results = {}
    for s in UpdateStrategy:
        model = AgentSelectionModel(s, half_life_seconds=3000, window_size=50, seed=0)
        model.update(EventBatch.from_events(events))
        results[s] = float(model.posterior().success[0, 0])
    others = [v for s, v in results.items() if s is not strategy]
    assert all(abs(results[strategy] - v) > 1e-3 for v in others), results
