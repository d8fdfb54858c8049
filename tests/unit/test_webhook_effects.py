"""Did the retrain help? The webhook's measured effects, and the retrain schedule.

A simulated clock drives the updater, the ledger, the controller and the
measurement. The outcome stream is what a platform would report: before
the retrain half the runs succeed; after a retrain that fixed routing, nine
in ten do; on a platform where no better agent exists, still half.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from servers.common import FakeClock, wait_until

from autoretrain.exporter.effect import EffectSettings
from autoretrain.exporter.events import EventIdFactory, accuracy_event, run_event
from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.alerts import parse_notification
from autoretrain.webhook.config import load_config
from autoretrain.webhook.effects import RetrainEffects, unhelpful_streak
from autoretrain.webhook.ledger import Ledger
from autoretrain.webhook.metrics import WebhookMetrics
from autoretrain.webhook.schedule import Cron, Every

WINDOW = 600.0
SETTLE = 30.0
SETTINGS = EffectSettings(window_seconds=WINDOW, min_events=20, tolerance=0.02,
                          settle_seconds=SETTLE, unhelpful_retrains=3)


@pytest.fixture
def parts(retrain_parts: Callable[..., dict[str, Any]], clock: FakeClock) -> dict[str, Any]:
    parts = retrain_parts(0)
    parts["effects"] = RetrainEffects(parts["ledger"], parts["updater"].outcomes.outcomes,
                                      parts["metrics"], SETTINGS, clock)
    return parts


_ids = EventIdFactory()


def platform(updater: RealTimeModelUpdater, clock: FakeClock, seconds: float,
             success_share: float, per_minute: int = 30) -> None:
    """``seconds`` of traffic on the simulated clock: runs and accuracy records."""
    step = 60.0 / per_minute
    for _ in range(int(seconds / step)):
        ok = (clock.now // step) % 10 < success_share * 10
        updater.ingest([
            run_event(_ids(), clock.now, "a1", "llm", "success" if ok else "failure", 10.0,
                      5, 0.01, task_type="t"),
            accuracy_event(_ids(), clock.now, "a1", "llm", "task", 0.9 if ok else 0.3,
                           "ground_truth", task_type="t"),
        ])
        clock.advance(step)


def alert_retrain(parts: dict[str, Any], fingerprint: str) -> int:
    controller = parts["controller"]
    controller.handle(parse_notification({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "SystemSuccessRateLow",
                                        "retrain": "incremental"},
         "startsAt": "2024-05-01T10:00:00Z", "fingerprint": fingerprint}]}))
    assert wait_until(controller.idle)
    rows, _ = parts["ledger"].list_retrains(1)
    return int(rows[0]["id"])


def effect_of(ledger: Ledger, retrain_id: int) -> dict[str, Any] | None:
    rows, _ = ledger.list_retrains(100)
    (row,) = [r for r in rows if r["id"] == retrain_id]
    return row["effect"]


def test_a_retrain_that_fixes_the_degradation_is_recorded_as_improved(
    parts: dict[str, Any], clock: FakeClock
) -> None:
    updater, ledger, effects, registry = (parts[k] for k in
                                          ("updater", "ledger", "effects", "registry"))
    platform(updater, clock, WINDOW, 0.5)
    retrain_id = alert_retrain(parts, "f1")
    platform(updater, clock, WINDOW, 0.9)
    # The after-window has closed but not settled: nothing is measured, nothing made up.
    assert effects.check() == [] and effect_of(ledger, retrain_id) is None
    clock.advance(SETTLE)
    ((measured_id, effect),) = effects.check()
    assert measured_id == retrain_id and effect.verdict == "improved"
    recorded = effect_of(ledger, retrain_id)
    assert recorded is not None
    assert recorded["verdict"] == "improved"
    assert recorded["before"]["success_rate"] == 0.5
    assert recorded["after"]["success_rate"] == 0.9
    assert recorded["delta"] == {"success_rate": 0.4, "accuracy": 0.24}
    assert recorded["events"]["before"] == {"success_rate": 300, "accuracy": 300}
    assert recorded["task_types"]["t"]["verdict"] == "improved"
    get = registry.get_sample_value
    assert get("autoretrain_retrain_effects_total",
               {"trigger": "alert", "verdict": "improved"}) == 1
    assert get("autoretrain_retrain_effect_delta_ratio",
               {"trigger": "alert", "figure": "success_rate"}) == pytest.approx(0.4)
    assert get("autoretrain_retrain_effect_after_ratio",
               {"trigger": "alert", "figure": "accuracy"}) == pytest.approx(0.84)
    assert get("autoretrain_retrains_unhelpful_streak") == 0
    assert get("autoretrain_retrain_last_finished_timestamp_seconds",
               {"trigger": "alert"}) is not None
    assert effects.check() == []  # measured once


def test_retrains_on_a_platform_without_a_better_agent_are_unchanged_and_counted(
    parts: dict[str, Any], clock: FakeClock
) -> None:
    updater, ledger, effects, registry = (parts[k] for k in
                                          ("updater", "ledger", "effects", "registry"))
    platform(updater, clock, WINDOW, 0.5)
    ids = []
    for n in range(3):
        ids.append(alert_retrain(parts, f"f{n}"))
        platform(updater, clock, WINDOW + SETTLE + 10, 0.5)
        effects.check()
    assert [effect_of(ledger, i)["verdict"] for i in ids] == ["unchanged"] * 3  # type: ignore[index]
    assert effect_of(ledger, ids[-1])["delta"]["success_rate"] == 0.0  # type: ignore[index]
    get = registry.get_sample_value
    assert get("autoretrain_retrain_effects_total",
               {"trigger": "alert", "verdict": "unchanged"}) == 3
    # The AutoretrainRetrainsNotHelping alert reads this (unhelpful_retrains: 3).
    assert get("autoretrain_retrains_unhelpful_streak") == 3
    # A restarted webhook exports the same streak from the ledger.
    fresh = CollectorRegistry()
    RetrainEffects(ledger, updater.outcomes.outcomes, WebhookMetrics(fresh), SETTINGS, clock)
    assert fresh.get_sample_value("autoretrain_retrains_unhelpful_streak") == 3


def test_too_few_events_give_not_enough_data_and_no_number(
    parts: dict[str, Any], clock: FakeClock
) -> None:
    updater, ledger, effects, registry = (parts[k] for k in
                                          ("updater", "ledger", "effects", "registry"))
    platform(updater, clock, WINDOW, 0.5)
    first = alert_retrain(parts, "f1")
    platform(updater, clock, WINDOW + SETTLE, 0.9)
    effects.check()
    assert effect_of(ledger, first)["verdict"] == "improved"  # type: ignore[index]
    # Traffic stops: 10 runs after the second retrain.
    second = alert_retrain(parts, "f2")
    platform(updater, clock, 20, 0.9)
    clock.advance(WINDOW + SETTLE)
    effects.check()
    effect = effect_of(ledger, second)
    assert effect is not None and effect["verdict"] == "not_enough_data"
    assert effect["delta"] == {"success_rate": None, "accuracy": None}
    assert effect["after"] == {"success_rate": None, "accuracy": None}
    assert effect["events"]["after"] == {"success_rate": 10, "accuracy": 10}
    get = registry.get_sample_value
    assert get("autoretrain_retrain_effects_total",
               {"trigger": "alert", "verdict": "not_enough_data"}) == 1
    # The first retrain's numbers are not shown as the last one's.
    assert get("autoretrain_retrain_effect_delta_ratio",
               {"trigger": "alert", "figure": "success_rate"}) is None


def test_streak_skips_not_enough_data_and_ends_at_an_improvement() -> None:
    assert unhelpful_streak(["worse", "not_enough_data", "unchanged", "improved",
                             "worse"]) == 2
    assert unhelpful_streak(["improved", "worse"]) == 0
    assert unhelpful_streak([]) == 0


def test_a_version_1_ledger_gets_the_effect_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE retrains (id INTEGER PRIMARY KEY AUTOINCREMENT, trigger TEXT NOT NULL, "
        "reason TEXT NOT NULL, retrain_type TEXT NOT NULL, requested_at REAL NOT NULL, "
        "started_at REAL NOT NULL, finished_at REAL, outcome TEXT NOT NULL, success INTEGER, "
        "promoted INTEGER, events_processed INTEGER, duration_ms REAL, candidate_score REAL, "
        "serving_score REAL, model_version INTEGER, error TEXT, alerts TEXT NOT NULL);"
        "INSERT INTO retrains (trigger, reason, retrain_type, requested_at, started_at, "
        "finished_at, outcome, alerts) VALUES ('api', 'old', 'full', 1, 1, 2, 'promoted', '[]');"
        "PRAGMA user_version=1;")
    conn.close()
    ledger = Ledger(path)
    (row,), _ = ledger.list_retrains()
    assert row["reason"] == "old" and row["effect"] is None
    assert ledger.record_effect(row["id"], {"verdict": "unchanged"})
    assert not ledger.record_effect(row["id"], {"verdict": "improved"})  # once
    assert ledger.recent_verdicts() == [("api", "unchanged")]
    ledger.close()


# -- the schedule ----------------------------------------------------------------------


class SlowUpdater:
    """Retrains until released; records how many ran at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self.calls: list[bool] = []
        self._lock = threading.Lock()

    def trigger_retraining(self, reason: str = "", force_full_retrain: bool = False,
                           model_type: str = "agent_selection") -> dict[str, Any]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.calls.append(force_full_retrain)
        self.release.wait(30)
        with self._lock:
            self.running -= 1
        return {"success": True, "promoted": True, "result": "promoted"}


def test_the_schedule_runs_full_retrains_at_the_configured_times_never_two_at_once(
    retrain_parts: Callable[..., dict[str, Any]], clock: FakeClock
) -> None:
    updater = SlowUpdater()
    start = clock.now
    parts = retrain_parts(0, updater, time_limit_seconds=10**6, schedule=Every(3600))
    registry, ledger, controller = parts["registry"], parts["ledger"], parts["controller"]
    try:
        assert controller.status()["schedule"] == "every 1 h"
        clock.advance(3599)
        controller.wake()
        assert controller.idle() and ledger.list_retrains()[1] == 0
        clock.advance(1)  # due
        controller.wake()
        assert wait_until(lambda: updater.running == 1)
        # Two more due times pass while it runs: once it returns, one more runs (not
        # two: a schedule missed is run once), never two at once.
        clock.advance(7200)
        controller.wake()
        assert updater.running == 1 and len(updater.calls) == 1
        updater.release.set()
        assert wait_until(controller.idle)
        assert updater.most_at_once == 1
        assert updater.calls == [True, True]  # full retrains
        rows, total = ledger.list_retrains(10)
        assert total == 2
        assert {r["trigger"] for r in rows} == {"schedule"}
        assert {r["retrain_type"] for r in rows} == {"full"}
        assert rows[-1]["requested_at"] == _iso(start + 3600)
        assert registry.get_sample_value(
            "autoretrain_retrain_last_finished_timestamp_seconds", {"trigger": "schedule"}
        ) == clock.now
        # The next one is one interval after the time it noticed the missed one.
        assert controller.status()["next_scheduled_retrain"] == _iso(start + 3600 + 7200 + 3600,
                                                                     "seconds")
    finally:
        updater.release.set()  # before the fixture stops the controller


def test_a_scheduled_retrain_waits_for_the_alert_cooldown(
        retrain_parts: Callable[..., dict[str, Any]], clock: FakeClock) -> None:
    updater = SlowUpdater()
    updater.release.set()
    parts = retrain_parts(600, updater, schedule=Every(1800))
    ledger, controller = parts["ledger"], parts["controller"]
    controller.handle(parse_notification({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "Low", "retrain": "incremental"},
         "startsAt": "2024-05-01T10:00:00Z", "fingerprint": "a"}]}))
    assert wait_until(controller.idle)
    clock.advance(1800)  # due, but the alert retrain's cooldown ran until +600: fine
    controller.wake()
    assert wait_until(lambda: ledger.list_retrains()[1] == 2)
    assert wait_until(controller.idle)
    # It started the cooldown: the next alert waits for it.
    plan = controller.handle(parse_notification({"version": "4", "status": "firing",
                                                 "alerts": [
        {"status": "firing", "labels": {"alertname": "Low", "retrain": "incremental"},
         "startsAt": "2024-05-01T11:00:00Z", "fingerprint": "b"}]}))
    assert [d.action.value for d in plan.decisions] == ["cooldown"]


def _iso(t: float, timespec: str = "milliseconds") -> str:
    from autoretrain.exporter.timefmt import utc_iso

    return utc_iso(t, timespec)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 3 * * *", "2023-11-14T22:13:20", "2023-11-15T03:00:00"),
        ("*/15 * * * *", "2023-11-14T22:13:20", "2023-11-14T22:15:00"),
        ("0 */6 * * *", "2023-11-14T18:00:00", "2023-11-15T00:00:00"),  # strictly after
        ("30 2 * * 0", "2023-11-14T22:13:20", "2023-11-19T02:30:00"),  # Sunday
        ("30 2 * * 7", "2023-11-14T22:13:20", "2023-11-19T02:30:00"),  # 7 is Sunday too
        ("0 0 1 1 *", "2023-11-14T22:13:20", "2024-01-01T00:00:00"),
        ("0 0 29 2 *", "2023-11-14T22:13:20", "2024-02-29T00:00:00"),
        # Both day fields restricted: either matches (13th, or a Friday).
        ("0 0 13 * 5", "2023-11-14T22:13:20", "2023-11-17T00:00:00"),
        ("0 9-17/4 * * 1-5", "2023-11-14T22:13:20", "2023-11-15T09:00:00"),
    ],
)
def test_cron_next_time(expression: str, after: str, expected: str) -> None:
    from datetime import UTC, datetime

    t = datetime.fromisoformat(after).replace(tzinfo=UTC).timestamp()
    assert _iso(Cron(expression).next_after(t), "seconds") == expected + "Z"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * *", "five fields"),
        ("60 * * * *", "outside 0-59"),
        ("* 24 * * *", "outside 0-23"),
        ("* * * * mon", "not \\*, a number"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "outside"),
        ("0 0 30 2 *", "matches no time"),
    ],
)
def test_bad_cron_expressions_are_refused(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cron(expression)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retrain_schedule_hours": 6, "retrain_schedule_cron": "0 3 * * *"}, "not both"),
        ({"retrain_schedule_cron": "0 3 * *"}, "retrain_schedule_cron \\(from config\\)"),
        ({"retrain_schedule_hours": 0}, "retrain_schedule_hours"),
        ({"effect_window_seconds": 7200}, "effect_window_seconds"),
        ({"effect_min_events": 0}, "effect_min_events"),
        ({"effect_tolerance": 1.5}, "effect_tolerance"),
    ],
)
def test_bad_effect_and_schedule_settings_fail_at_start(settings: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config({"allow_unauthenticated": True, **settings}, {})


def test_a_bad_effect_setting_is_named_with_its_variable() -> None:
    # EffectSettings checks the range, once; the message names the key and its source.
    env = {"AUTORETRAIN_WEBHOOK_EFFECT_SETTLE_SECONDS": "-1"}
    with pytest.raises(ValueError, match=r"^effect_settle_seconds \(from AUTORETRAIN_WEBHOOK_"
                                         r"EFFECT_SETTLE_SECONDS\) must be a finite number >= 0"):
        load_config({"allow_unauthenticated": True}, env)


def test_schedule_is_off_by_default_and_read_from_the_environment() -> None:
    assert load_config({"allow_unauthenticated": True}, {}).retrain_schedule() is None
    env = {"AUTORETRAIN_WEBHOOK_RETRAIN_SCHEDULE_CRON": "0 3 * * *",
           "AUTORETRAIN_WEBHOOK_EFFECT_WINDOW_SECONDS": "1200"}
    config = load_config({"allow_unauthenticated": True}, env)
    assert config.retrain_schedule() == Cron("0 3 * * *")
    assert config.effect_settings().window_seconds == 1200
    hours = load_config({"allow_unauthenticated": True, "retrain_schedule_hours": 24}, {})
    assert hours.retrain_schedule() == Every(86400)


def test_the_outcome_tally_is_bounded_and_counts_whole_buckets() -> None:
    from autoretrain.webhook.updater.batch import BatchBuilder
    from autoretrain.webhook.updater.outcomes import OutcomeTally

    tally = OutcomeTally(bucket_seconds=10, keep_seconds=100)

    def batch(start: float, n: int, task: str = "t") -> Any:
        b = BatchBuilder()
        for i in range(n):  # one event a second: runs alternate success/failure
            b.add_row(task, "a", True, float(i % 2), start + i)
        return b.build()

    tally.observe(batch(1000, 60))  # buckets 100..105
    o = tally.outcomes(1000, 1060)
    assert (o.system.runs, o.system.successes) == (60, 30)
    # Only buckets wholly inside: [1005, 1055) holds 1010..1049.
    assert tally.outcomes(1005, 1055).system.runs == 40
    assert len(tally) == 6
    tally.observe(batch(2000, 10, "u"))  # far later: everything before 1900 is dropped
    assert tally.outcomes(0, 1900).system.runs == 0
    assert tally.outcomes(2000, 2010).by_task_type["u"].runs == 10
    assert len(tally) == 1


def test_the_outcome_tally_adds_batches_into_buckets_it_already_holds() -> None:
    from autoretrain.webhook.updater.batch import BatchBuilder
    from autoretrain.webhook.updater.outcomes import OutcomeTally

    tally = OutcomeTally(bucket_seconds=10, keep_seconds=100)

    def batch(tasks: list[str], start: float) -> Any:
        b = BatchBuilder()
        for i, task in enumerate(tasks):  # a run and an accuracy record each second
            b.add_row(task, "a", True, 1.0, start + i)
            b.add_row(task, "a", False, 0.5, start + i)
        return b.build()

    tally.observe(batch(["t", "u"] * 5, 1000))  # buckets 100 (t and u)
    tally.observe(batch(["u", "t", "v"] * 3, 1000))  # the same bucket, a new task type
    tally.observe(batch(["t"] * 5, 1000))  # nothing new at all
    o = tally.outcomes(1000, 1010)
    assert {k: (f.runs, f.successes, f.accuracy_records)
            for k, f in o.by_task_type.items()} == {"t": (13, 13, 13), "u": (8, 8, 8),
                                                    "v": (3, 3, 3)}
    assert o.system.accuracy_sum == 12.0
    assert len(tally) == 3


@pytest.mark.parametrize("other_task_types", [0, 40])
def test_the_outcome_tally_counts_queued_batches_as_if_counted_one_by_one(
        other_task_types: int) -> None:
    from autoretrain.webhook.updater.batch import BatchBuilder
    from autoretrain.webhook.updater.outcomes import PENDING_EVENTS, OutcomeTally

    rng = np.random.default_rng(7)
    queued = OutcomeTally(bucket_seconds=10, keep_seconds=10**6)
    one_by_one = OutcomeTally(bucket_seconds=10, keep_seconds=10**6)
    if other_task_types:  # many task types known, few in each batch: summed sparsely
        b = BatchBuilder()
        for i in range(other_task_types):
            b.add_row(f"x{i}", "a", True, 1.0, 500.0)
        queued.observe(b.build())
        one_by_one.observe(b.build())
    t = 1000.0
    for _ in range(2 * PENDING_EVENTS // 500 + 3):  # more than the queue holds, twice
        b = BatchBuilder()
        for _ in range(500):
            t += float(rng.random())
            task = f"t{rng.integers(3)}"
            if rng.random() < 0.8:
                b.add_row(task, "a", True, float(rng.random() < 0.7), t)
            else:
                b.add_row(task, "a", False, float(rng.random()), t)
        batch = b.build()
        queued.observe(batch)
        one_by_one.observe(batch)
        one_by_one.outcomes(0, 1)  # a read counts what is queued
        # The queue never holds PENDING_EVENTS events: it is counted on reaching them.
        assert queued._pending_events < PENDING_EVENTS
    for start, end in ((1000, t + 10), (5000, 9000), (t - 300, t + 10)):
        a, b = queued.outcomes(start, end), one_by_one.outcomes(start, end)
        assert set(a.by_task_type) == set(b.by_task_type) == {"t0", "t1", "t2"}
        for task in a.by_task_type:
            fa, fb = a.by_task_type[task], b.by_task_type[task]
            assert (fa.runs, fa.successes, fa.accuracy_records) == (
                fb.runs, fb.successes, fb.accuracy_records)
            assert fa.accuracy_sum == pytest.approx(fb.accuracy_sum, rel=1e-12)
    assert len(queued) == len(one_by_one)
    assert queued.outcomes(0, 1000).system.runs == other_task_types


def test_a_cron_schedule_retrains_at_its_times(
        retrain_parts: Callable[..., dict[str, Any]], clock: FakeClock) -> None:
    updater = SlowUpdater()
    updater.release.set()
    parts = retrain_parts(0, updater, schedule=Cron("0 * * * *"))  # started at 22:13:20
    ledger, controller = parts["ledger"], parts["controller"]
    assert controller.status()["next_scheduled_retrain"] == "2023-11-14T23:00:00Z"
    clock.advance(46 * 60 + 39)  # 22:59:59
    controller.wake()
    assert controller.idle() and ledger.list_retrains()[1] == 0
    clock.advance(1)
    controller.wake()
    assert wait_until(lambda: ledger.list_retrains()[1] == 1)
    assert wait_until(controller.idle)
    (row,), _ = ledger.list_retrains()
    assert (row["trigger"], row["retrain_type"]) == ("schedule", "full")
    assert row["requested_at"] == "2023-11-14T23:00:00.000Z"
    assert row["reason"] == "schedule: cron 0 * * * *"
    assert controller.status()["next_scheduled_retrain"] == "2023-11-15T00:00:00Z"
