"""Did the retrain help? exporter.effect, and the monitor measuring its own retrains.

Everything runs on a simulated clock: the windows close when the test moves it.
"""

import pytest
from prometheus_client import CollectorRegistry
from servers.common import FakeClock

from autoretrain.exporter import EmbeddedBus, PerformanceMonitor
from autoretrain.exporter.effect import (
    EffectSettings,
    EffectTracker,
    Figures,
    Outcomes,
    measure,
)

SETTINGS = EffectSettings(window_seconds=600, min_events=20, tolerance=0.02, settle_seconds=30)


def outcomes(runs, successes, acc_n=0, acc_sum=0.0, task_type="t"):
    f = Figures(runs, successes, acc_n, acc_sum)
    return Outcomes(f, {task_type: f})


def effect(before, after, settings=SETTINGS):
    return measure(before, after, settings, before_start=0, after_end=1200, measured_at=1230)


def test_a_retrain_that_fixes_the_degradation_is_improved_with_the_measured_delta():
    e = effect(outcomes(100, 60, 100, 55.0), outcomes(100, 90, 100, 85.0))
    assert e.verdict == "improved"
    d = e.as_dict()
    assert d["before"] == {"success_rate": 0.6, "accuracy": 0.55}
    assert d["after"] == {"success_rate": 0.9, "accuracy": 0.85}
    assert d["delta"] == {"success_rate": 0.3, "accuracy": 0.3}
    assert d["events"] == {"before": {"success_rate": 100, "accuracy": 100},
                           "after": {"success_rate": 100, "accuracy": 100}}
    assert d["task_types"]["t"]["verdict"] == "improved"


@pytest.mark.parametrize(
    ("before", "after", "verdict"),
    [
        (outcomes(100, 60), outcomes(100, 61), "unchanged"),  # +0.01 within the tolerance
        (outcomes(100, 60), outcomes(100, 62), "unchanged"),  # exactly the tolerance
        (outcomes(100, 60), outcomes(100, 40), "worse"),
        # one rose, the other fell: it did not clearly help
        (outcomes(100, 60, 100, 80.0), outcomes(100, 90, 100, 50.0), "unchanged"),
    ],
)
def test_verdicts(before, after, verdict):
    assert effect(before, after).verdict == verdict


def test_too_few_events_give_not_enough_data_and_no_number():
    e = effect(outcomes(19, 5), outcomes(500, 490)).as_dict()
    assert e["verdict"] == "not_enough_data"
    assert e["before"] == {"success_rate": None, "accuracy": None}
    assert e["after"] == {"success_rate": None, "accuracy": None}
    assert e["delta"] == {"success_rate": None, "accuracy": None}
    assert e["events"]["before"]["success_rate"] == 19  # what was counted is said


def test_a_figure_with_enough_events_is_compared_alone():
    # Accuracy has 3 records: only the success rate decides.
    e = effect(outcomes(50, 25, 3, 0.3), outcomes(50, 45, 3, 2.9)).as_dict()
    assert e["verdict"] == "improved"
    assert e["delta"]["accuracy"] is None
    assert e["delta"]["success_rate"] == 0.4


@pytest.mark.parametrize(
    "kwargs",
    [{"window_seconds": 0}, {"min_events": 0}, {"tolerance": 1.0}, {"settle_seconds": -1},
     {"unhelpful_retrains": 0}, {"window_seconds": float("nan")}],
)
def test_bad_settings_are_refused_naming_the_key(kwargs):
    (key,) = kwargs
    with pytest.raises(ValueError, match=key):
        EffectSettings(**kwargs)


def test_tracker_measures_only_after_the_after_window_and_the_settle_time():
    clock = FakeClock(10_000)
    spans = []

    def source(start, end):
        spans.append((start, end))
        return outcomes(100, 60 if end <= 10_000 else 90)

    t = EffectTracker(source, SETTINGS, clock)
    started = t.retrain_started()
    clock.advance(5)
    t.retrain_finished(started, trigger="monitor", retrain_type="full")
    assert spans == [(9_400, 10_000)]
    clock.advance(600 + 29)
    assert t.check() == [] and t.pending == 1
    clock.advance(1)
    (done,) = t.check()
    assert spans[-1] == (10_005, 10_605)
    assert done["trigger"] == "monitor" and done["effect"]["verdict"] == "improved"
    assert t.pending == 0 and t.counts["improved"] == 1


def test_streak_of_unhelpful_retrains_and_its_recommendation():
    clock = FakeClock(0)
    t = EffectTracker(lambda s, e: outcomes(100, 60), SETTINGS, clock)
    for _ in range(3):
        t.retrain_finished(t.retrain_started(), trigger="monitor")
        clock.advance(700)
        t.check()
    assert t.unhelpful_streak == 3
    assert "a person should look" in t.recommendation()


# -- the monitor ------------------------------------------------------------------


class NoBetterAgent:
    """An updater whose retrains change nothing: every agent is as bad as the other."""

    def __init__(self):
        self.event_bus = EmbeddedBus()
        self.calls = 0

    def trigger_retraining(self, reason, force_full_retrain=False):
        self.calls += 1
        return {"success": True, "promoted": True, "result": "promoted",
                "retrain_type": "full" if force_full_retrain else "incremental"}


def run_minutes(monitor, clock, minutes, success_share, per_minute=30):
    """``per_minute`` runs each simulated minute, ``success_share`` of them successful."""
    for _ in range(minutes):
        for i in range(per_minute):
            ok = i < round(per_minute * success_share)
            monitor.record_agent_run(f"r{clock.now}-{i}", "a1", "llm",
                                     "success" if ok else "failure", 100.0, task_type="t")
            monitor.record_accuracy("a1", f"x{clock.now}-{i}", accuracy=0.9 if ok else 0.3,
                                    task_type="t")
            clock.advance(60 / per_minute)
        monitor.check()


def make_monitor(clock, updater, **kw):
    return PerformanceMonitor(
        window_size_minutes=60, model_updater=updater, registry=CollectorRegistry(),
        clock=clock, min_runs=20, cooldown_seconds=900, full_retrain_grace_seconds=600,
        retrain_effect=EffectSettings(window_seconds=600, settle_seconds=30,
                                      unhelpful_retrains=2), **kw)


def test_monitor_records_an_improving_retrain_with_its_delta():
    clock = FakeClock()
    updater = NoBetterAgent()
    m = make_monitor(clock, updater)
    run_minutes(m, clock, 2, 0.5)  # degraded: the monitor retrains
    assert updater.calls == 1
    run_minutes(m, clock, 12, 0.95)  # the retrain fixed it
    (entry,) = m.get_stats()["retrain_effects"]
    assert entry["trigger"] == "monitor"
    effect = entry["effect"]
    assert effect["verdict"] == "improved"
    # Retrained after minute 1 (0.5); the after-window holds minute 2 (still 0.5) and
    # 9 minutes at 28/30: (15 + 9 * 28) / 300 = 0.89.
    assert effect["before"]["success_rate"] == 0.5
    assert effect["after"]["success_rate"] == pytest.approx(0.89)
    assert effect["delta"]["success_rate"] == pytest.approx(0.39)
    assert m.get_stats()["retrain_effect_counts"]["improved"] == 1
    report = m.generate_report()
    assert report["retrain_effects"][0]["effect"]["verdict"] == "improved"
    assert not any("stopped helping" in r for r in report["recommendations"])


def test_monitor_on_a_platform_without_a_better_agent_recommends_a_person():
    clock = FakeClock()
    updater = NoBetterAgent()
    m = make_monitor(clock, updater)
    run_minutes(m, clock, 60, 0.5)  # stays degraded whatever is retrained
    stats = m.get_stats()
    verdicts = [e["effect"]["verdict"] for e in stats["retrain_effects"]]
    assert len(verdicts) >= 2 and set(verdicts) == {"unchanged"}
    assert stats["retrains_unhelpful_streak"] >= 2
    report = m.generate_report()
    assert report["recommendations"][0].startswith("Retrains stopped helping")
    assert any(a["message"].startswith("Retrains stopped helping") for a in report["recent_alerts"])
    assert m.registry.get_sample_value(
        "autoretrain_monitor_retrain_effects_total", {"verdict": "unchanged"}) >= 2


def test_monitor_with_too_few_events_says_not_enough_data():
    clock = FakeClock()
    m = make_monitor(clock, NoBetterAgent())
    m.trigger_retraining("manual")
    clock.advance(700)
    m.check()
    (entry,) = m.get_stats()["retrain_effects"]
    assert entry["trigger"] == "manual"
    assert entry["effect"]["verdict"] == "not_enough_data"
    assert entry["effect"]["delta"] == {"success_rate": None, "accuracy": None}


def test_monitor_refuses_an_effect_window_longer_than_its_own():
    with pytest.raises(ValueError, match="must fit in the monitor's window"):
        PerformanceMonitor(window_size_minutes=10, registry=CollectorRegistry(),
                           retrain_effect=EffectSettings(window_seconds=600))


def test_a_change_within_the_noise_of_few_events_is_unchanged():
    # 30 runs a window: 0.6 -> 0.5 is within two standard errors (0.26) of no change.
    e = effect(outcomes(30, 18), outcomes(30, 15)).as_dict()
    assert e["verdict"] == "unchanged"
    assert e["delta"]["success_rate"] == -0.1
    assert e["standard_error"]["success_rate"] == pytest.approx(0.1277, abs=1e-3)
    # The same shares over 3000 runs a window are a clear fall.
    assert effect(outcomes(3000, 1800), outcomes(3000, 1500)).verdict == "worse"
