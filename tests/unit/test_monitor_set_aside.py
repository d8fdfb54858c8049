"""Library mode: the monitor learns which agents the selection model set aside.

Without Prometheus there is no ``AgentSetAside`` alert; an orchestrator that
embeds ``PerformanceMonitor`` beside an in-process ``RealTimeModelUpdater``
passes ``set_aside=updater.set_aside_pairs`` and the monitor's own alerts,
``get_stats()`` and ``generate_report()`` say which agents are set aside,
even after routing moved away from them and their windows emptied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from servers.common import FakeClock

from autoretrain.exporter import PerformanceMonitor
from autoretrain.webhook.updater import RealTimeModelUpdater


class Pairs:
    """A set-aside source the test sets; ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.now: list[tuple[str, str]] = []
        self.fail = False

    def __call__(self) -> list[tuple[str, str]]:
        if self.fail:
            raise RuntimeError("model unavailable")
        return list(self.now)


def make(clock: FakeClock, source: object) -> PerformanceMonitor:
    return PerformanceMonitor(registry=CollectorRegistry(), clock=clock, min_runs=10,
                              enable_auto_retraining=False, set_aside=source)  # type: ignore[arg-type]


def messages(alerts: list) -> list[tuple[str, str]]:
    return [(a.level, a.message) for a in alerts]


def test_set_aside_and_restored_pairs_are_alerted_listed_and_counted() -> None:
    clock, pairs = FakeClock(), Pairs()
    monitor = make(clock, pairs)
    assert monitor.check() == []
    stats = monitor.get_stats()
    assert (stats["set_aside"], stats["set_aside_total"]) == ([], 0)

    pairs.now = [("triage", "bot"), ("forecast", "bot")]
    raised = monitor.check()
    assert [(a.level, a.details["event"], a.details["task_type"]) for a in raised] == [
        ("warning", "set_aside", "forecast"), ("warning", "set_aside", "triage")]
    assert raised[0].message.startswith("Agent bot set aside on task type forecast")
    set_at = clock.now
    clock.advance(60)
    assert monitor.check() == []  # still set aside: no new alert
    stats = monitor.get_stats()
    assert [(p["task_type"], p["agent"], p["times"]) for p in stats["set_aside"]] == [
        ("forecast", "bot", 1), ("triage", "bot", 1)]
    assert stats["set_aside"][0]["since"] == monitor.get_alerts(1)[0].timestamp
    report = monitor.generate_report()
    assert [p["task_type"] for p in report["set_aside"]] == ["forecast", "triage"]
    assert report["recommendations"][0].startswith(
        "Agent bot is set aside by the selection model on forecast, triage (since ")

    pairs.now = [("forecast", "bot")]
    raised = monitor.check()
    assert messages(raised) == [
        ("info", "Agent bot back on task type triage: the selection model's retry found it "
                 "well again")]
    pairs.now = [("forecast", "bot"), ("triage", "bot")]
    clock.advance(60)
    monitor.check()
    stats = monitor.get_stats()
    by_type = {p["task_type"]: p for p in stats["set_aside"]}
    assert by_type["triage"]["times"] == 2 and by_type["forecast"]["times"] == 1
    assert stats["set_aside_total"] == 3
    assert set_at < clock.now


def test_an_alert_that_ends_while_its_agent_is_set_aside_does_not_say_recovered() -> None:
    clock, pairs = FakeClock(), Pairs()
    monitor = make(clock, pairs)
    for i in range(20):
        monitor.record_agent_run(f"r{i}", "bot", "llm", "error", 100.0, task_type="triage")
    pairs.now = [("triage", "bot")]
    assert ("warning", "Agent bot success rate degraded to 0.0% (threshold 80.0%)") in messages(
        monitor.check())
    clock.advance(3601)  # routed away: its runs leave the window, another agent's fill it
    for i in range(20):
        monitor.record_agent_run(f"s{i}", "backup", "llm", "success", 100.0, task_type="triage")
    ended = [a for a in monitor.check()
             if a.details.get("metric") == "success_rate" and a.details.get("agent") == "bot"]
    assert messages(ended) == [
        ("info", "Agent bot success rate no longer judged or back within its threshold; "
                 "the selection model still holds it set aside on triage")]
    assert ended[0].details["set_aside_on"] == ["triage"]


def test_a_source_that_raises_is_counted_and_the_pairs_are_kept() -> None:
    clock, pairs = FakeClock(), Pairs()
    monitor = make(clock, pairs)
    pairs.now = [("triage", "bot")]
    monitor.check()
    pairs.fail = True
    assert monitor.check() == []  # no "restored" for a source that failed
    stats = monitor.get_stats()
    assert stats["set_aside_source_errors"] == 1
    assert [p["agent"] for p in stats["set_aside"]] == ["bot"]
    assert stats["checks"] == 2


def test_without_a_source_nothing_is_watched() -> None:
    monitor = PerformanceMonitor(registry=CollectorRegistry(), clock=FakeClock())
    stats, report = monitor.get_stats(), monitor.generate_report()
    assert stats["set_aside"] is None and stats["set_aside_total"] is None
    assert report["set_aside"] is None


@pytest.mark.parametrize("source", [42, "updater"])
def test_a_source_that_is_not_callable_is_refused(source: object) -> None:
    with pytest.raises(ValueError, match="set_aside must be a callable"):
        make(FakeClock(), source)


def test_an_agent_routed_away_from_is_still_reported_broken(tmp_path: Path) -> None:
    """The real pair: an in-process updater and a monitor on the same clock.

    Agent ``bot`` breaks; the model's drop detector sets it aside within a
    few runs; the platform routes to ``backup`` as the model says, ``bot``'s
    runs leave the window and its per-agent alert goes quiet. The monitor
    still says ``bot`` is set aside.
    """
    clock = FakeClock()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=CollectorRegistry(), clock=clock, seed=0)
    monitor = PerformanceMonitor(model_updater=updater, set_aside=updater.set_aside_pairs,
                                 registry=CollectorRegistry(), clock=clock, min_runs=10,
                                 window_size_minutes=5, enable_auto_retraining=False,
                                 check_interval_seconds=30)
    run = 0

    def record(agent: str, ok: bool) -> None:
        nonlocal run
        run += 1
        monitor.record_agent_run(f"r{run}", agent, "llm", "success" if ok else "error", 100.0,
                                 task_type="triage")
        clock.advance(2)

    for i in range(200):  # both healthy; bot the better
        record("bot", True)
        record("backup", i % 10 != 0)
    updater.process_pending()
    assert updater.predict_best_agent("triage", top_k=1)[0][0] == "bot"
    monitor.check()
    for _ in range(12):  # bot breaks
        record("bot", False)
    updater.process_pending()
    assert updater.set_aside_pairs() == [("triage", "bot")]
    raised = monitor.check()
    assert ("warning", "set_aside") in [(a.level, a.details.get("event")) for a in raised]

    # Routing follows the model: bot gets nothing; its runs leave the 5-minute window.
    for _ in range(200):
        assert updater.predict_best_agent("triage", top_k=1)[0][0] == "backup"
        record("backup", True)
        if run % 20 == 0:
            updater.process_pending()
            monitor.check()
    assert monitor.get_agent_metrics("bot") is None  # nothing left to judge it by
    stats, report = monitor.get_stats(), monitor.generate_report()
    assert [(p["task_type"], p["agent"]) for p in stats["set_aside"]] == [("triage", "bot")]
    assert report["status"] == "healthy"  # the system is fine: traffic moved away
    assert any(r.startswith("Agent bot is set aside") for r in report["recommendations"])
    updater.stop()
    monitor.close()
