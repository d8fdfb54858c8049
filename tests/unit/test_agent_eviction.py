"""The agent limit evicts idle agents instead of filling up for good (issue 13, item 10)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from autoretrain.exporter.events import EventIdFactory, accuracy_event, encode_event, run_event
from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.strategies import UpdateStrategy

DAY = 86_400.0
T0 = 1_700_000_000.0


def updater(path: Path, **kwargs) -> RealTimeModelUpdater:
    kwargs.setdefault("max_agents", 5)
    return RealTimeModelUpdater(model_storage_path=str(path), batch_size=1000, seed=0,
                                buffer_size=20, **kwargs)


def runs(ids: EventIdFactory, agents: list[str], t: float, n: int = 1,
         task: str = "t") -> list[dict]:
    return [run_event(ids(), t + i, a, "llm", "success" if i % 2 else "failure", 5.0, 1, 0.0,
                      task_type=task)
            for a in agents for i in range(n)]


def test_forged_agents_do_not_fill_the_limit_for_good_across_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids = EventIdFactory()
    u = updater(tmp_path)
    u.start()
    # Two real agents with plenty of evidence, three forged names seen once, long ago.
    u.ingest(runs(ids, ["forged-1", "forged-2", "forged-3"], T0))
    u.ingest(runs(ids, ["real-a", "real-b"], T0 + 2 * DAY, n=30))
    u.stop()  # saves

    u = updater(tmp_path)  # restart: the model holds five agents, the limit
    u.start()
    try:
        ratio = u.registry.get_sample_value("autoretrain_model_updater_capacity_used_ratio",
                                            {"kind": "agent"})
        assert ratio == 1.0
        with caplog.at_level(logging.INFO, logger="autoretrain.webhook.updater.ingest"):
            assert u.ingest(runs(ids, ["new-agent"], T0 + 2 * DAY + 100)) == 1
        assert "agent limit reached" in caplog.text
        m = u.get_metrics()
        assert m["invalid_by_fault"].get("capacity:agent_name", 0) == 0
        agents = {a for a, _ in u.predict_best_agent("t", top_k=10)}
        assert agents == {"real-a", "real-b", "new-agent", "forged-2", "forged-3"}
        assert u.registry.get_sample_value("autoretrain_model_updater_agents_evicted_total") == 1
        # The two real agents kept their evidence exactly.
        ranking = dict(u.predict_best_agent("t", top_k=10))
        assert ranking["real-a"] == pytest.approx(ranking["real-b"])
        u.save()
    finally:
        u.stop()
    # What was saved after the eviction loads and serves the same agents.
    again = updater(tmp_path)
    again.start()
    try:
        assert {a for a, _ in again.predict_best_agent("t", top_k=10)} == agents
    finally:
        again.stop()


def test_agents_with_recent_evidence_are_never_evicted(tmp_path: Path) -> None:
    ids = EventIdFactory()
    u = updater(tmp_path, max_agents=3)
    u.start()
    try:
        u.ingest(runs(ids, ["a", "b", "c"], T0))
        # Idle by time, but "a" is still among the buffered recent events.
        u.ingest(runs(ids, ["b", "c"], T0 + 2 * DAY, n=4))
        assert u.ingest(runs(ids, ["new-1"], T0 + 2 * DAY + 10)) == 0  # "a" is buffered
        assert u.get_metrics()["invalid_by_fault"]["capacity:agent_name"] == 1
        u.ingest(runs(ids, ["b", "c"], T0 + 2 * DAY + 20, n=10))  # "a" leaves the buffer
        assert u.ingest(runs(ids, ["new-2"], T0 + 2 * DAY + 50)) == 1
        assert {a for a, _ in u.predict_best_agent("t", top_k=10)} == {"b", "c", "new-2"}
        # Now nobody is idle: the next new agent is refused, as before.
        assert u.ingest(runs(ids, ["new-3"], T0 + 2 * DAY + 60)) == 0
        assert u.get_metrics()["invalid_by_fault"]["capacity:agent_name"] == 2
    finally:
        u.stop()


def test_an_agent_named_later_in_the_batch_is_not_evicted_for_a_newcomer(
        tmp_path: Path) -> None:
    ids = EventIdFactory()
    u = updater(tmp_path, max_agents=3)
    u.start()
    try:
        u.ingest(runs(ids, ["a"], T0))
        u.ingest(runs(ids, ["b", "c"], T0 + DAY, n=10))  # "a" leaves the 20-event buffer
        # Idle by time and out of the buffer, "a" is the one agent eviction could
        # take, but its own run follows the newcomer's in this batch (as bytes).
        values = [encode_event(e) for e in runs(ids, ["new", "a"], T0 + 3 * DAY)]
        assert u.ingest(values) == 1
        assert u.get_metrics()["invalid_by_fault"] == {"capacity:agent_name": 1}
        assert {a for a, _ in u.predict_best_agent("t", top_k=10)} == {"a", "b", "c"}
        assert u.registry.get_sample_value("autoretrain_model_updater_agents_evicted_total") == 0
    finally:
        u.stop()


def _events(ids: EventIdFactory) -> list[dict]:
    rng = np.random.default_rng(3)
    out: list[dict] = []
    for i in range(400):
        agent = f"a{rng.integers(4)}"
        task = f"t{rng.integers(2)}"
        if i % 5 == 4:
            out.append(accuracy_event(ids(), T0 + i, agent, "llm", f"k{i}",
                                      float(rng.random()), "human", task_type=task))
        else:
            out.append(run_event(ids(), T0 + i, agent, "llm",
                                 "success" if rng.random() < 0.6 else "failure", 5.0, 1, 0.0,
                                 task_type=task, context={"k": int(rng.integers(3))}))
    return out


@pytest.mark.parametrize("strategy", list(UpdateStrategy))
def test_dropping_an_agent_keeps_the_others_exactly_and_the_model_loadable(
        strategy: UpdateStrategy) -> None:
    ids = EventIdFactory()
    events = _events(ids)
    full = AgentSelectionModel(strategy, seed=0)
    full.update(EventBatch.from_events(events))
    dropped = full.copy()
    assert dropped.drop_agents({"a1"}) == ["a1"]
    assert dropped.agents == [a for a in full.agents if a != "a1"]
    for task in ("t0", "t1", None):
        before = {a: s for a, s in full.predict_best_agent(task, top_k=10) if a != "a1"}
        after = dict(dropped.predict_best_agent(task, top_k=10))
        if strategy is UpdateStrategy.BAYESIAN or strategy is UpdateStrategy.EXPONENTIAL:
            # The pair prior is centred on the agent's own aggregate: unchanged.
            assert after == pytest.approx(before)
        else:
            assert set(after) == set(before)
    # Saved arrays load into a fresh model of the same kind.
    again = AgentSelectionModel.from_metadata(dropped.metadata(), seed=0)
    again.load(dropped.to_arrays(), dropped.metadata())
    assert again.predict_best_agent("t0", top_k=10) == dropped.predict_best_agent("t0", top_k=10)
    assert again.agent_last_seen() == dropped.agent_last_seen()
    # It keeps learning, also the dropped name as a new agent.
    again.update(EventBatch.from_events(events[:50]))
    assert "a1" in again.agents
