"""Routing for quality and cost (issue 18): learnt cost and latency, the objectives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoretrain.exporter.events import EventIdFactory, run_event
from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.serving import ModelFollower
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.objective import Objective
from autoretrain.webhook.updater.settings import UpdaterSettings
from autoretrain.webhook.updater.strategies import UpdateStrategy

QUALITY = Objective()
WEIGHTED = Objective("weighted", cost_weight=1.0, latency_weight=0.01)
CONSTRAINED = Objective("constrained", quality_tolerance=0.05)
OBJECTIVES = [QUALITY, WEIGHTED, CONSTRAINED]


def runs(agent: str, n: int, success_rate: float, cost: float, *, task: str = "t",
         start: float = 0.0, duration_ms: float = 1000.0, ids: EventIdFactory | None = None,
         ) -> list[dict[str, Any]]:
    """``n`` runs, exactly ``round(n * success_rate)`` of them successful (spread evenly)."""
    ids = ids or EventIdFactory()
    wins = round(n * success_rate)
    return [run_event(ids(), start + i, agent, "llm",
                      "success" if (i * wins) // n != ((i + 1) * wins) // n else "failure",
                      duration_ms, 10, cost, task_type=task) for i in range(n)]


def interleave(*streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((e for s in streams for e in s), key=lambda e: e["timestamp"])


def model_of(objective: Objective, events: list[dict[str, Any]],
             strategy: UpdateStrategy = UpdateStrategy.BAYESIAN) -> AgentSelectionModel:
    model = AgentSelectionModel(strategy, seed=0, objective=objective)
    model.update(EventBatch.from_events(events))
    return model


# -- the objective setting ---------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "cheapest"}, "objective must be one of quality, weighted, constrained"),
    ({"cost_weight": -1}, "cost_weight must be a finite number >= 0"),
    ({"latency_weight": float("nan")}, "latency_weight"),
    ({"quality_tolerance": 1.5}, r"quality_tolerance must be a finite number in \[0, 1\]"),
    ({"cost_weight": True}, "cost_weight"),
])
def test_bad_objective_is_refused_naming_the_setting(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Objective(**kwargs)


def test_objective_round_trips_as_dict_and_refuses_unknown_keys() -> None:
    assert Objective.from_dict(CONSTRAINED.as_dict()) == CONSTRAINED
    assert Objective.from_dict(None) == QUALITY
    with pytest.raises(ValueError, match="unknown objective setting 'price'"):
        Objective.from_dict({"mode": "weighted", "price": 1})
    assert UpdaterSettings(objective={"mode": "weighted", "cost_weight": 2}).objective == \
        Objective("weighted", cost_weight=2.0)


# -- learning cost and latency ------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(UpdateStrategy))
def test_cost_and_latency_are_learnt_per_pair(strategy: UpdateStrategy) -> None:
    ids = EventIdFactory()
    events = interleave(runs("a", 50, 0.9, 0.02, duration_ms=2000.0, ids=ids),
                        runs("b", 50, 0.9, 0.05, duration_ms=500.0, ids=ids),
                        runs("a", 50, 0.9, 0.04, task="u", ids=ids))
    model = model_of(QUALITY, events, strategy)
    est = {e.agent: e for e in model.rank_agents("t")}
    assert est["a"].cost == pytest.approx(0.02)
    assert est["b"].cost == pytest.approx(0.05)
    assert est["a"].latency_seconds == pytest.approx(2.0)
    assert est["b"].latency_seconds == pytest.approx(0.5)
    # A pair never run falls back to the agent's cost over all task types.
    assert {e.agent: e.cost for e in model.rank_agents("u")}["b"] == pytest.approx(0.05)


def test_default_objective_ranks_exactly_as_quality_alone() -> None:
    ids = EventIdFactory()
    events = interleave(runs("a", 80, 0.9, 5.0, ids=ids), runs("b", 80, 0.7, 0.01, ids=ids))
    model = model_of(QUALITY, events)
    ranking = model.predict_best_agent("t")
    post = model.posterior()
    row = model.task_types.index("t")
    assert ranking == sorted(((a, float(post.reward[row, i])) for i, a in
                              enumerate(model.agents)), key=lambda x: -x[1])
    assert [e.score for e in model.rank_agents("t")] == [s for _, s in ranking]


# -- the constrained mode ---------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.03, 0.05, 0.1, 0.15, 0.3])
def test_constrained_never_picks_outside_the_tolerance_once_well_estimated(
        tolerance: float) -> None:
    truth = {"strong": (0.90, 1.00), "near": (0.88, 0.30), "mid": (0.82, 0.20),
             "weak": (0.65, 0.05)}
    ids = EventIdFactory()
    model = model_of(Objective("constrained", quality_tolerance=tolerance),
                     interleave(*(runs(a, 4000, q, c, ids=ids) for a, (q, c) in truth.items())))
    best = max(q for q, _ in truth.values())
    chosen = model.predict_best_agent("t", top_k=1)[0][0]
    assert truth[chosen][0] >= best - tolerance
    # ... and it is the cheapest such agent.
    assert truth[chosen][1] == min(c for q, c in truth.values() if q >= best - tolerance)


def test_a_barely_tried_cheap_agent_is_not_preferred_for_being_cheap() -> None:
    ids = EventIdFactory()
    strong = runs("strong", 2000, 0.9, 1.0, ids=ids)
    lucky = runs("cheap", 3, 1.0, 0.01, start=2000.0, ids=ids)  # 3 of 3 succeeded
    model = model_of(CONSTRAINED, interleave(strong, lucky))
    assert model.predict_best_agent("t", top_k=1)[0][0] == "strong"
    # Under weighted, the cheap agent's price is worth its (uncertain) quality.
    # Once it has a record as good as the strong one's, it is trusted.
    more = runs("cheap", 2000, 0.9, 0.01, start=3000.0, ids=ids)
    model.update(EventBatch.from_events(more))
    assert model.predict_best_agent("t", top_k=1)[0][0] == "cheap"


def test_weighted_trades_quality_for_cost_by_the_weights() -> None:
    ids = EventIdFactory()
    events = interleave(runs("strong", 2000, 0.9, 0.30, ids=ids),
                        runs("cheap", 2000, 0.8, 0.01, ids=ids))
    assert model_of(Objective("weighted", cost_weight=0.1), events).predict_best_agent(
        "t", top_k=1)[0][0] == "strong"  # 0.9 - 0.03 > 0.8 - 0.001
    ranking = model_of(Objective("weighted", cost_weight=1.0), events).predict_best_agent("t")
    assert ranking[0][0] == "cheap"  # 0.8 - 0.01 > 0.9 - 0.3
    assert ranking[0][1] == pytest.approx(0.8 - 0.01, abs=0.01)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: str(o.mode))
def test_explore_works_under_every_objective(objective: Objective) -> None:
    ids = EventIdFactory()
    events = interleave(runs("strong", 200, 0.9, 0.3, ids=ids), runs("cheap", 5, 0.8, 0.01,
                                                                      ids=ids))
    model = model_of(objective, events)
    picks = {model.predict_best_agent("t", top_k=1, explore=True)[0][0] for _ in range(300)}
    assert picks == {"strong", "cheap"}  # the uncertain one gets tried
    assert [e.agent for e in model.rank_agents("t", explore=True, top_k=2)] != []


# -- price drift -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(UpdateStrategy))
@pytest.mark.parametrize("objective", [WEIGHTED, CONSTRAINED], ids=lambda o: str(o.mode))
def test_an_agent_whose_price_doubles_loses_first_place_within_bounded_runs(
        strategy: UpdateStrategy, objective: Objective) -> None:
    ids = EventIdFactory()
    model = model_of(objective, interleave(runs("a", 500, 0.9, 0.20, ids=ids),
                                           runs("b", 500, 0.9, 0.30, ids=ids)), strategy)
    assert model.predict_best_agent("t", top_k=1)[0][0] == "a"
    t, k = 1000.0, 0
    while k < 200:  # a's price doubles: 0.40 per run from now on, 10 runs a batch
        model.update(EventBatch.from_events(runs("a", 10, 0.9, 0.40, start=t, ids=ids)))
        t, k = t + 10.0, k + 10
        if model.predict_best_agent("t", top_k=1)[0][0] == "b":
            break
    assert model.predict_best_agent("t", top_k=1)[0][0] == "b"
    assert k <= 30, f"{strategy}: still first after {k} runs at the new price"


# -- persistence, retraining, exactly-once ------------------------------------------------


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: str(o.mode))
def test_every_objective_survives_save_load_and_a_full_retrain(
        tmp_path: Path, objective: Objective) -> None:
    def updater() -> RealTimeModelUpdater:
        return RealTimeModelUpdater(model_storage_path=str(tmp_path), seed=1,
                                    objective=objective, batch_size=1000, buffer_size=5000)

    first = updater()
    ids = EventIdFactory()
    first.ingest(interleave(runs("strong", 600, 0.9, 0.30, ids=ids),
                            runs("cheap", 600, 0.88, 0.01, ids=ids),
                            runs("weak", 600, 0.5, 0.001, ids=ids)))
    before = first.rank_agents("t")
    result = first.trigger_retraining("test", force_full_retrain=True)
    assert result["success"] and result["promoted"], result
    after = first.rank_agents("t")
    assert [e.agent for e in after] == [e.agent for e in before]
    for old, new in zip(before, after, strict=True):
        assert new.cost == pytest.approx(old.cost)
        assert new.latency_seconds == pytest.approx(old.latency_seconds)
    before = after
    first.save()
    assert first.get_metrics()["objective"] == objective.as_dict()

    second = updater()
    assert second.rank_agents("t") == before
    assert second.model.metadata()["objective"] == objective.as_dict()
    # A follower ranks by the trainer's objective, recorded in the version.
    follower = ModelFollower(str(tmp_path), seed=1)
    follower.refresh()
    assert follower.model is not None and follower.model.objective == objective
    assert [e.agent for e in follower.rank_agents("t")] == [e.agent for e in before]


def test_a_model_saved_before_costs_were_learnt_loads_with_cost_unknown() -> None:
    ids = EventIdFactory()
    model = model_of(WEIGHTED, interleave(runs("a", 100, 0.9, 0.2, ids=ids),
                                          runs("b", 100, 0.6, 0.01, ids=ids)))
    arrays = {k: v for k, v in model.to_arrays().items()
              if not k.startswith(("cost__", "latency__"))}
    metadata = model.metadata()
    del metadata["objective"]
    old = AgentSelectionModel.from_metadata(metadata)
    old.load(arrays, metadata)
    assert old.objective == QUALITY  # saved before objectives: quality alone
    assert [(e.cost, e.latency_seconds) for e in old.rank_agents("t")] == [(None, None)] * 2
    # Cost-aware objectives rank by quality until costs are learnt ...
    weighted = AgentSelectionModel(UpdateStrategy.BAYESIAN, objective=WEIGHTED)
    weighted.load(arrays, metadata)
    assert weighted.predict_best_agent("t", top_k=1)[0][0] == "a"
    # ... and learn them from the next runs.
    weighted.update(EventBatch.from_events(runs("a", 3, 0.9, 0.2, start=500.0, ids=ids)))
    assert {e.agent: e.cost for e in weighted.rank_agents("t")}["a"] == pytest.approx(0.2)


def test_cost_state_after_a_restart_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """A restart from a saved version and the events after it give the costs of
    an uninterrupted run (the cost state is saved with the model and its
    stream position, as quality is: what Kafka exactly-once rests on)."""
    ids = EventIdFactory()
    events = interleave(runs("a", 300, 0.9, 0.2, ids=ids, duration_ms=900.0),
                        runs("b", 300, 0.8, 0.05, ids=ids))
    chunks = [events[i:i + 100] for i in range(0, len(events), 100)]

    straight = RealTimeModelUpdater(model_storage_path=str(tmp_path / "one"), seed=1)
    for k, chunk in enumerate(chunks):
        straight.ingest(chunk, offsets={0: (k + 1) * 100})

    crashed = RealTimeModelUpdater(model_storage_path=str(tmp_path / "two"), seed=1)
    for k, chunk in enumerate(chunks[:3]):
        crashed.ingest(chunk, offsets={0: (k + 1) * 100})
    crashed.save()
    restarted = RealTimeModelUpdater(model_storage_path=str(tmp_path / "two"), seed=1)
    for k, chunk in enumerate(chunks[3:], start=3):
        restarted.ingest(chunk, offsets={0: (k + 1) * 100})
    m1, m2 = straight.model.measures(), restarted.model.measures()
    np.testing.assert_allclose(m2.cost, m1.cost)
    np.testing.assert_allclose(m2.cost_n, m1.cost_n)
    np.testing.assert_allclose(m2.latency, m1.latency)


# -- one setting for the webhook and the selector ------------------------------------------


def test_webhook_config_builds_the_updaters_objective() -> None:
    from autoretrain.webhook.config import load_config

    config = load_config({"allow_unauthenticated": True}, {
        "AUTORETRAIN_WEBHOOK_OBJECTIVE": "constrained",
        "AUTORETRAIN_WEBHOOK_QUALITY_TOLERANCE": "0.1"})
    expected = Objective("constrained", quality_tolerance=0.1)
    assert config.updater_settings().objective == expected
    assert config.updater_kwargs()["objective"] == expected
    assert "objective" not in load_config({"allow_unauthenticated": True}).updater_kwargs()
    with pytest.raises(ValueError, match=r"objective .* must be one of quality, weighted"):
        load_config({"allow_unauthenticated": True, "objective": "cheapest"})
    with pytest.raises(ValueError, match=r"cost_weight .* must be a finite number >= 0"):
        load_config({"allow_unauthenticated": True, "cost_weight": -1})


def test_selector_follows_the_trainers_objective_unless_it_sets_its_own() -> None:
    from autoretrain.webhook.serving.selector import load_selector_config

    base = {"model_storage_path": "/m"}
    assert load_selector_config(base).selection_objective() is None
    config = load_selector_config(base, {"AUTORETRAIN_SELECTOR_OBJECTIVE": "weighted",
                                         "AUTORETRAIN_SELECTOR_COST_WEIGHT": "3"})
    assert config.selection_objective() == Objective("weighted", cost_weight=3.0)
    with pytest.raises(ValueError, match="cost_weight need objective to be set"):
        load_selector_config({**base, "cost_weight": 1})
    with pytest.raises(ValueError, match="objective must be one of"):
        load_selector_config({**base, "objective": "cheapest"})


def test_a_follower_with_its_own_objective_ranks_by_it(tmp_path: Path) -> None:
    trainer = RealTimeModelUpdater(model_storage_path=str(tmp_path), seed=1)
    ids = EventIdFactory()
    trainer.ingest(interleave(runs("strong", 600, 0.9, 0.30, ids=ids),
                              runs("cheap", 600, 0.89, 0.01, ids=ids)))
    trainer.save()
    follower = ModelFollower(str(tmp_path), seed=1, objective=CONSTRAINED)
    follower.refresh()
    assert trainer.predict_best_agent("t", top_k=1)[0][0] == "strong"
    assert follower.predict_best_agent("t", top_k=1)[0][0] == "cheap"


def test_the_standalone_updater_takes_the_objective_on_its_command_line(tmp_path: Path) -> None:
    from autoretrain.webhook.updater.__main__ import build_parser, build_updater

    args = build_parser().parse_args(["--kafka-servers", "localhost:1", "--model-dir",
                                      str(tmp_path), "--objective", "constrained",
                                      "--quality-tolerance", "0.1"])
    updater = build_updater(args)
    assert updater.objective == Objective("constrained", quality_tolerance=0.1)
    assert build_updater(build_parser().parse_args(
        ["--kafka-servers", "localhost:1", "--model-dir", str(tmp_path)])).objective == QUALITY


def test_the_ranking_api_returns_each_agents_quality_cost_and_latency(tmp_path: Path) -> None:
    from autoretrain.webhook.serving.selector import create_selector_app

    trainer = RealTimeModelUpdater(model_storage_path=str(tmp_path), seed=1,
                                   objective=Objective("weighted", cost_weight=1.0))
    ids = EventIdFactory()
    trainer.ingest(interleave(runs("strong", 600, 0.9, 0.30, ids=ids, duration_ms=4000.0),
                              runs("cheap", 600, 0.8, 0.01, ids=ids, duration_ms=500.0)))
    trainer.save()
    follower = ModelFollower(str(tmp_path), seed=1)
    follower.refresh()
    client = create_selector_app({"model_storage_path": str(tmp_path)},
                                 follower=follower).test_client()
    body = client.get("/api/model/ranking?task_type=t&top_k=2").get_json()
    assert body["objective"] == Objective("weighted", cost_weight=1.0).as_dict()
    strong, cheap = sorted(body["ranking"], key=lambda e: e["agent"], reverse=True)
    assert [e["agent"] for e in body["ranking"]] == ["cheap", "strong"]
    assert cheap["cost"] == pytest.approx(0.01) and strong["cost"] == pytest.approx(0.30)
    assert cheap["latency_seconds"] == pytest.approx(0.5)
    assert strong["latency_seconds"] == pytest.approx(4.0)
    assert strong["quality"] > cheap["quality"]
    assert cheap["score"] == pytest.approx(cheap["quality"] - 0.01)
    assert strong["score"] == pytest.approx(strong["quality"] - 0.30)


@pytest.mark.parametrize("strategy", ["exponential", "bayesian", "moving_average"])
def test_cost_and_latency_in_one_pass_equal_learning_them_one_by_one(strategy: str) -> None:
    from dataclasses import replace

    from autoretrain.webhook.updater.strategies import Observations, make_rule
    from autoretrain.webhook.updater.strategies.bayesian import update_measures

    rng = np.random.default_rng(3)
    prototype = make_rule(strategy)
    fused = [prototype.measure_rule() for _ in range(2)]
    alone = [prototype.measure_rule() for _ in range(2)]
    t = 1_000.0
    for size in (1, 50, 400, 3):  # pairs pass the evidence cap on the way
        rows, cols = rng.integers(3, size=size), rng.integers(4, size=size)
        t += 100.0
        obs = Observations(rows, cols, np.zeros(size, dtype=bool), np.zeros(size),
                           t + rng.uniform(0, 50, size), np.ones(size),
                           np.zeros(size, dtype=np.uint64), np.zeros(size, dtype=np.uint64),
                           np.zeros((size, 0), dtype=np.uint64))
        values = (rng.uniform(0.001, 0.01, size), rng.uniform(0.1, 3.0, size))
        for rule in fused + alone:
            rule.resize(3, 4)
        update_measures(fused, obs, values)
        for rule, v in zip(alone, values, strict=True):
            rule.update_measure(replace(obs, value=v))
    for a, b in zip(fused, alone, strict=True):
        arrays_a, arrays_b = a.arrays(3, 4), b.arrays(3, 4)
        assert arrays_a.keys() == arrays_b.keys()
        for name in arrays_a:
            np.testing.assert_array_equal(arrays_a[name], arrays_b[name])
