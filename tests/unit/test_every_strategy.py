"""Properties every update rule has (one test over all of them, as river checks its policies).

Each rule learns a seeded stream deterministically, survives a save and load
of its arrays with identical rankings, clones into an empty rule with the
same hyperparameters, and refuses a bad hyperparameter with a ValueError
naming the value.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoretrain.exporter.events import accuracy_event, run_event
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.strategies import (
    RULES,
    BayesianRule,
    ExponentialRule,
    GradientRule,
    MovingAverageRule,
    Rule,
    UpdateStrategy,
)

# A non-default instance of every rule (hyperparameters given by the caller).
RULE_INSTANCES: dict[UpdateStrategy, Rule] = {
    UpdateStrategy.BAYESIAN: BayesianRule(),
    UpdateStrategy.EXPONENTIAL: ExponentialRule(half_life_seconds=120.0,
                                                retry_after_seconds=60.0, detect_drops=True),
    UpdateStrategy.MOVING_AVERAGE: MovingAverageRule(window_size=7),
    UpdateStrategy.GRADIENT: GradientRule(learning_rate=0.2, hash_bits=10, minibatch_size=16),
}

# One bad value per hyperparameter of each rule.
BAD_VALUES = [
    (ExponentialRule, "half_life_seconds", 0),
    (ExponentialRule, "half_life_seconds", -3.5),
    (ExponentialRule, "retry_after_seconds", float("inf")),
    (ExponentialRule, "detect_drops", "yes"),
    (MovingAverageRule, "window_size", 0),
    (MovingAverageRule, "window_size", 2.5),
    (GradientRule, "learning_rate", 11.0),
    (GradientRule, "hash_bits", 30),
    (GradientRule, "minibatch_size", 0),
]


def stream(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    quality = {"a": 0.8, "b": 0.5, "c": 0.2}
    out = []
    for i in range(n):
        agent = str(rng.choice(list(quality)))
        task = f"t{rng.integers(3)}"
        if i % 5 == 4:
            out.append(accuracy_event(f"c{i}", float(i), agent, "llm", "task",
                                      float(rng.uniform(0.5, 1.0)), "human", task_type=task))
        else:
            status = "success" if rng.random() < quality[agent] else "failure"
            out.append(run_event(f"r{i}", float(i), agent, "llm", status, 1.0, 0, 0.0,
                                 task_type=task))
    return out


def test_every_strategy_has_a_rule_instance_here() -> None:
    assert set(RULE_INSTANCES) == set(UpdateStrategy) == set(RULES)


@pytest.mark.parametrize("strategy", list(UpdateStrategy), ids=str)
def test_each_rule_learns_a_seeded_stream_deterministically(strategy: UpdateStrategy) -> None:
    def learnt() -> list[tuple[str, float]]:
        model = AgentSelectionModel(RULE_INSTANCES[strategy].clone(), seed=0)
        batch = EventBatch.from_events(stream(600, seed=3))
        model.update(batch.take(slice(0, 300)))
        model.update(batch.take(slice(300, None)))
        return model.predict_best_agent("t1")

    first = learnt()
    assert first == learnt()
    # The best agent of the stream (success 0.8) ranks first.
    assert first[0][0] == "a" and [name for name, _ in first] == ["a", "b", "c"]


@pytest.mark.parametrize("strategy", list(UpdateStrategy), ids=str)
def test_each_rule_survives_save_and_load(strategy: UpdateStrategy) -> None:
    model = AgentSelectionModel(RULE_INSTANCES[strategy], seed=1)
    model.update(EventBatch.from_events(stream(400, seed=5)))
    arrays = model.to_arrays()
    # The metadata goes through JSON, as in the model store.
    metadata = json.loads(json.dumps(model.metadata()))
    loaded = AgentSelectionModel.from_metadata(metadata, seed=1)
    loaded.load(arrays, metadata)
    assert loaded.hyperparameters() == RULE_INSTANCES[strategy].hyperparameters()
    for task in ("t0", "t1", "t2", None):
        assert loaded.predict_best_agent(task) == model.predict_best_agent(task)
    for name, array in model.to_arrays().items():
        np.testing.assert_array_equal(loaded.to_arrays()[name], array)


@pytest.mark.parametrize("strategy", list(UpdateStrategy), ids=str)
def test_each_rule_clones_empty_with_its_hyperparameters(strategy: UpdateStrategy) -> None:
    rule = RULE_INSTANCES[strategy]
    model = AgentSelectionModel(rule)
    model.update(EventBatch.from_events(stream(50, seed=7)))
    clone = rule.clone()
    assert type(clone) is type(rule) and clone.hyperparameters() == rule.hyperparameters()
    assert set(rule.hyperparameters()) == set(type(rule).hyperparameter_names())
    # The rule passed in is a prototype: learning happens on the model's own copy.
    assert AgentSelectionModel(rule).predict_best_agent("t0") == []


@pytest.mark.parametrize(("rule_class", "name", "value"), BAD_VALUES,
                         ids=[f"{c.__name__}-{n}-{v}" for c, n, v in BAD_VALUES])
def test_each_rule_refuses_bad_hyperparameters_naming_the_value(
        rule_class: type[Rule], name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{name} .*{value!r}"):
        rule_class(**{name: value})
    # The keyword form names the same value, whatever the strategy asked for.
    with pytest.raises(ValueError, match=name):
        AgentSelectionModel(UpdateStrategy.BAYESIAN, **{name: value})
