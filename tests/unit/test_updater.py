"""RealTimeModelUpdater on the embedded bus: ingest, metrics, retrain, persistence."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servers.common import FakeClock, wait_until

import autoretrain.webhook.updater.retrainer as retrainer_module
from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.webhook import RealTimeModelUpdater, UpdateStrategy
from autoretrain.webhook.updater.strategies.exponential import HALF_LIFE_SECONDS


def events(
    n: int,
    seed: int = 0,
    start: float = 1000.0,
    ids: EventIdFactory | None = None,
    p: Callable[[str, str], float] | None = None,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    ids = ids or EventIdFactory()
    p = p or (lambda task, agent: {"a0": 0.9, "a1": 0.5, "a2": 0.2}[agent])
    out = []
    for i in range(n):
        task, agent = f"t{rng.integers(2)}", f"a{rng.integers(3)}"
        ok = rng.random() < p(task, agent)
        out.append(
            run_event(
                ids(),
                start + i,
                agent,
                "llm",
                "success" if ok else "failure",
                10.0,
                5,
                0.01,
                task_type=task,
            )
        )
    return out


def make(tmp_path: Path, **kwargs: Any) -> RealTimeModelUpdater:
    kwargs.setdefault("model_storage_path", str(tmp_path / "models"))
    kwargs.setdefault("batch_size", 10)
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("clock", FakeClock())
    return RealTimeModelUpdater(**kwargs)


def sample(u: RealTimeModelUpdater, name: str, **labels: str) -> float | None:
    return u.registry.get_sample_value(name, labels)


def test_process_pending_applies_and_counts(tmp_path: Path) -> None:
    u = make(tmp_path)
    assert u.event_bus is not None
    batch = events(100)
    for e in batch:
        assert u.event_bus.publish(e)
    u.event_bus.publish(batch[0])  # a duplicate
    assert u.process_pending() == 100
    m = u.get_metrics()
    assert (m["events_consumed"], m["events_applied"], m["duplicates"], m["invalid"]) == (
        101,
        100,
        1,
        0,
    )
    assert m["event_buffer_size"] == 100  # default buffer: 10 x batch_size
    assert m["batches"] == 1 and m["model_version"] == 0 and not m["running"]
    assert m["last_update_timestamp"] == "2023-11-14T22:13:20.000Z"
    assert sample(u, "autoretrain_model_updater_events_total", result="applied") == 100
    assert sample(u, "autoretrain_model_updater_events_total", result="duplicate") == 1
    assert sample(u, "autoretrain_model_updater_buffer_events") == 100
    assert u.predict_best_agent("t0", top_k=1)[0][0] == "a0"


def test_invalid_events_are_counted_by_fault_and_skipped(tmp_path: Path, caplog) -> None:
    u = make(tmp_path)
    good = events(3)
    bad_type = dict(good[0], event_id="x1", duration_ms="slow")
    missing = {k: v for k, v in good[0].items() if k != "agent_name"} | {"event_id": "x2"}
    values: list[Any] = [
        b"not json",
        good[0],
        {"schema": 99},
        bad_type,
        encode_event(good[1]),
        missing,
        b"{also not json",
        None,
        good[2],
    ]
    with caplog.at_level("WARNING"):
        assert u.ingest(values) == 3
    m = u.get_metrics()
    assert m["invalid"] == 6
    assert m["invalid_by_fault"] == {
        "not_json": 2,
        "schema": 1,
        "field:duration_ms": 1,
        "field:agent_name": 1,
        "empty": 1,
    }
    assert sample(u, "autoretrain_model_updater_events_total", result="invalid") == 6
    # Logged once per kind of fault.
    assert sum("not_json" in r.getMessage() for r in caplog.records) == 1


def test_name_capacity_bounds_the_model(tmp_path: Path) -> None:
    u = make(tmp_path, max_agents=2)
    assert u.ingest(events(50)) < 50
    assert len(u.model.agents) == 2
    assert u.get_metrics()["invalid_by_fault"]["capacity:agent_name"] > 0


def test_thread_applies_full_batches_and_times_out_partial_ones(tmp_path: Path) -> None:
    u = make(tmp_path, batch_size=50, batch_timeout_seconds=0.2)
    assert u.event_bus is not None
    u.start()
    try:
        assert u.get_metrics()["running"]
        batch = events(53)
        for e in batch[:50]:  # a full batch
            u.event_bus.publish(e)
        assert wait_until(lambda: u.get_metrics()["events_applied"] == 50)
        for e in batch[50:]:  # a partial one, applied when its timeout expires
            u.event_bus.publish(e)
        assert wait_until(lambda: u.get_metrics()["events_applied"] == 53)
        assert u.get_metrics()["batches"] == 2
    finally:
        u.stop()
    assert not u.get_metrics()["running"]


def test_stop_drains_and_saves_and_restart_loads(tmp_path: Path) -> None:
    u = make(tmp_path, batch_timeout_seconds=60)
    assert u.event_bus is not None
    u.start()
    for e in events(37):
        u.event_bus.publish(e)
    u.stop()
    assert u.get_metrics()["events_applied"] == 37
    again = make(tmp_path)
    assert again.predict_best_agent("t0") == u.predict_best_agent("t0")
    m = again.get_metrics()
    assert m["model_loaded"] and m["model_version"] == 1 and m["events_seen"] == 37
    meta = json.loads((tmp_path / "models" / "model-00000001.json").read_text())
    assert meta["strategy"] == "exponential"
    assert meta["hyperparameters"]["half_life_seconds"] == HALF_LIFE_SECONDS
    assert meta["hyperparameters"]["buffer_size"] == 100


def test_retrain_result_and_metrics(tmp_path: Path) -> None:
    u = make(tmp_path, update_strategy=UpdateStrategy.BAYESIAN)
    u.ingest(events(300))
    result = u.trigger_retraining(reason="accuracy below 0.7")
    expected = {
        "success",
        "model_type",
        "retrain_type",
        "events_processed",
        "duration_ms",
        "reason",
        "timestamp",
        "promoted",
        "candidate_score",
        "serving_score",
        "model_version",
        "scores",
        "result",
    }
    # A promoted model is saved: its result also says whether the save worked.
    assert set(result) - {"save_ms", "saved"} == expected
    assert ("saved" in result) == result["promoted"]
    assert result["result"] == ("promoted" if result["promoted"] else "rejected")
    assert result["success"] and result["model_type"] == "agent_selection"
    assert result["retrain_type"] == "incremental" and result["events_processed"] == 100
    assert result["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert result["reason"] == "accuracy below 0.7"
    assert result["scores"]["holdout_events"] >= 10
    outcome = "promoted" if result["promoted"] else "rejected"
    assert (
        sample(
            u,
            "autoretrain_model_retrains_total",
            model_type="agent_selection",
            retrain_type="incremental",
            result=outcome,
        )
        == 1
    )
    assert sample(
        u, "autoretrain_model_retrain_duration_seconds_count", retrain_type="incremental"
    ) == 1
    assert sample(u, "autoretrain_model_retrain_events_processed") == 100
    if result["promoted"]:
        assert result["model_version"] == 1 and sample(u, "autoretrain_model_version") == 1
        assert sample(u, "autoretrain_model_last_retrain_timestamp_seconds") == 1_700_000_000.0
    assert u.get_metrics()["last_retrain"] == result


def test_retrain_on_empty_buffer_and_unknown_model_type(tmp_path: Path) -> None:
    u = make(tmp_path)
    empty = u.trigger_retraining(reason="r")
    assert not empty["success"] and "no buffered events" in empty["error"]
    assert (
        sample(
            u,
            "autoretrain_model_retrains_total",
            model_type="agent_selection",
            retrain_type="incremental",
            result="skipped",
        )
        == 1
    )
    unknown = u.trigger_retraining(reason="r", force_full_retrain=True, model_type="ranker")
    assert not unknown["success"] and "ranker" in unknown["error"]
    assert (
        sample(
            u, "autoretrain_model_retrains_total",
            model_type="invalid", retrain_type="full", result="failed",
        )
        == 1
    )


def test_retrain_right_after_promotion_is_skipped_until_new_events(tmp_path: Path) -> None:
    u = make(tmp_path, update_strategy=UpdateStrategy.BAYESIAN)
    ids = EventIdFactory()
    u.ingest(events(300, ids=ids))
    first = u.trigger_retraining(reason="r", force_full_retrain=True)
    assert first["success"]
    if first["promoted"]:
        again = u.trigger_retraining(reason="r")
        assert not again["success"] and "min_holdout_events" in again["error"]
    u.ingest(events(30, seed=1, start=5000, ids=ids))
    assert u.trigger_retraining(reason="r")["success"]


def test_retrains_are_serialised(tmp_path: Path, monkeypatch) -> None:
    u = make(tmp_path)
    u.ingest(events(300))
    active, overlaps = [0], []
    real = retrainer_module.retrain

    def slow_retrain(*args: Any, **kwargs: Any):
        active[0] += 1
        overlaps.append(active[0])
        time.sleep(0.05)  # widen the window in which a second retrain could overlap
        try:
            return real(*args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(retrainer_module, "retrain", slow_retrain)
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(u.trigger_retraining(reason="x", force_full_retrain=True))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and max(overlaps) == 1


def test_events_arriving_during_a_retrain_reach_the_promoted_model(
    tmp_path: Path, monkeypatch
) -> None:
    u = make(tmp_path, update_strategy=UpdateStrategy.BAYESIAN, promotion_tolerance=1e9)
    ids = EventIdFactory()
    u.ingest(events(300, ids=ids))
    late = events(7, seed=5, start=9000, ids=ids)
    real = retrainer_module.retrain

    def retrain_with_arrivals(*args: Any, **kwargs: Any):
        outcome = real(*args, **kwargs)
        assert u.ingest(late) == 7  # arrives while the retrain is in progress
        return outcome

    monkeypatch.setattr(retrainer_module, "retrain", retrain_with_arrivals)
    result = u.trigger_retraining(reason="x", force_full_retrain=True)
    assert result["promoted"]
    # Full retrain: fresh model on the 100 buffered events, plus the 7 late ones.
    assert u.model.events_seen == 107
    assert u.get_metrics()["event_buffer_size"] == 100


def test_rollback_serves_an_old_version(tmp_path: Path) -> None:
    u = make(tmp_path, update_strategy=UpdateStrategy.BAYESIAN)
    ids = EventIdFactory()
    u.ingest(events(50, ids=ids))
    v1 = u.save()
    before = u.predict_best_agent("t0")
    u.ingest(events(50, seed=9, ids=ids, p=lambda t, a: {"a0": 0.0, "a1": 1.0, "a2": 0.0}[a]))
    u.save()
    assert u.predict_best_agent("t0") != before
    v3 = u.rollback(v1)
    assert v3 == 3 and u.predict_best_agent("t0") == before
    assert u.get_metrics()["model_version"] == 3 and sample(u, "autoretrain_model_version") == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_timeout_seconds": -1}, "batch_timeout_seconds"),
        ({"update_strategy": "random"}, "random"),
        ({"save_interval_seconds": 0}, "save_interval_seconds"),
        ({"buffer_size": 1}, "buffer_size"),
        ({"half_life_seconds": 0}, "half_life_seconds"),
        ({"window_size": 0}, "window_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"retrain_discount": 2}, "retrain_discount"),
        ({"recency_weight": 0.5}, "recency_weight"),
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
        ({"kafka_topic": ""}, "kafka_topic"),
    ],
)
def test_constructor_rejects_bad_values(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(tmp_path, **kwargs)


def test_hyperparameters_are_stored_under_their_names(tmp_path: Path) -> None:
    u = make(
        tmp_path,
        update_strategy="moving_average",
        window_size=7,
        half_life_seconds=60,
        learning_rate=0.3,
        buffer_size=55,
    )
    assert u.update_strategy is UpdateStrategy.MOVING_AVERAGE
    assert (u.window_size, u.buffer_size) == (7, 55)
    # The moving-average rule owns only its window: the other strategies'
    # hyperparameters are checked (a bad one is refused) and have no effect.
    assert u.rule.hyperparameters() == {"window_size": 7}
    # Another rule's hyperparameter is no attribute of this updater; settings are read-only.
    assert not hasattr(u, "half_life_seconds") and u.max_agents == u.settings.max_agents
    with pytest.raises(AttributeError):
        u.buffer_size = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="learning_rate"):
        make(tmp_path, update_strategy="moving_average", learning_rate=-1.0)
    assert u.event_bus is not None and u.registry is not make(tmp_path).registry


def test_process_pending_reports_the_consumer_lag(tmp_path: Path) -> None:
    # Unknown (NaN) until the source was read; then what is left behind, as the loop reports.
    u = make(tmp_path)
    lag = sample(u, "autoretrain_model_updater_consumer_lag_events")
    assert lag is not None and lag != lag
    assert u.event_bus is not None
    for e in events(30):
        u.event_bus.publish(e)
    u.process_pending()
    assert sample(u, "autoretrain_model_updater_consumer_lag_events") == 0


def test_corrupt_newest_model_is_skipped_at_start(tmp_path: Path) -> None:
    u = make(tmp_path)
    u.ingest(events(20))
    u.save()
    u.ingest(events(20, seed=2))
    u.save()
    npz = tmp_path / "models" / "model-00000002.npz"
    npz.write_bytes(b"garbage")
    again = make(tmp_path)
    assert again.get_metrics()["model_version"] == 1
    again.process_pending()
    assert again.get_metrics()["events_seen"] == 20


def test_ingest_fast_path_learns_exactly_what_the_general_path_learns(tmp_path):
    """Bytes of common run events take the fast path; the same events in other
    shapes (int durations, an empty context) take the general one."""
    import random

    from autoretrain.exporter.events import encode_event, run_event

    rng = random.Random(5)
    events = [
        run_event(
            f"e{i}",
            1000.0 + i,
            f"agent-{rng.randrange(4)}",
            "llm",
            rng.choice(["success", "failure", "error"]),
            10.0,
            1,
            0.5,
            task_type=f"task-{rng.randrange(3)}",
        )
        for i in range(500)
    ]
    fast = RealTimeModelUpdater(model_storage_path=str(tmp_path / "a"), enable_auto_save=False)
    slow = RealTimeModelUpdater(model_storage_path=str(tmp_path / "b"), enable_auto_save=False)
    raw = [encode_event(e) for e in events]
    assert fast.ingest(raw + raw[:7] + [b"not json"]) == 500
    assert slow.ingest([{**e, "duration_ms": 10, "context": {}} for e in events]) == 500
    for task in ("task-0", "task-1", "task-2", None):
        assert fast.predict_best_agent(task, top_k=4) == slow.predict_best_agent(task, top_k=4)
    m = fast.get_metrics()
    assert (m["events_applied"], m["duplicates"], m["invalid"]) == (500, 7, 1)
    assert m["invalid_by_fault"] == {"not_json": 1}
