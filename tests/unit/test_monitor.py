import logging
import threading
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from servers.common import FakeClock

from autoretrain.exporter import (
    EmbeddedBus,
    PerformanceMonitor,
    get_performance_monitor,
    init_performance_monitor,
    validate_event,
)


class FakeUpdater:
    """Records retrain calls; optionally raises. Has an embedded bus like the real one."""

    def __init__(self, raises=None):
        self.calls = []
        self.raises = raises
        self.event_bus = EmbeddedBus()

    def trigger_retraining(self, reason, force_full_retrain=False):
        self.calls.append((reason, force_full_retrain))
        if self.raises:
            raise self.raises
        return {
            "success": True,
            "model_type": "agent_selection",
            "retrain_type": "full" if force_full_retrain else "incremental",
            "events_processed": 42,
            "duration_ms": 1.5,
            "reason": reason,
            "timestamp": "2023-11-14T22:13:20.000Z",
            "promoted": True,
        }


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry():
    return CollectorRegistry()


def make(clock, registry, **kw):
    kw.setdefault("min_runs", 10)
    kw.setdefault("cooldown_seconds", 60)
    kw.setdefault("full_retrain_grace_seconds", 120)
    return PerformanceMonitor(registry=registry, clock=clock, **kw)


def feed(monitor, n, accuracy, status="success", agent="a1", duration_ms=100.0, task_type="t"):
    for i in range(n):
        monitor.record_agent_run(
            f"r{i}", agent, "llm", status, duration_ms, 10, 0.5, task_type=task_type
        )
        monitor.record_accuracy(agent, f"task{i}", accuracy=accuracy, task_type=task_type)


# -- recording and metrics ----------------------------------------------------


def test_record_agent_run_exports_counters_histogram_tokens_and_cost(clock, registry):
    m = make(clock, registry)
    m.record_agent_run("r1", "planner", "llm", "success", 1200, tokens_used=150, cost=0.02)
    m.record_agent_run("r2", "planner", "llm", "timeout", 6000, tokens_used=50, cost=0.01)
    get = registry.get_sample_value
    assert (
        get(
            "autoretrain_agent_runs_total",
            {"agent": "planner", "agent_type": "llm", "status": "success"},
        )
        == 1
    )
    assert (
        get(
            "autoretrain_agent_runs_total",
            {"agent": "planner", "agent_type": "llm", "status": "timeout"},
        )
        == 1
    )
    assert (
        get(
            "autoretrain_agent_runs_total",
            {"agent": "planner", "agent_type": "llm", "status": "error"},
        )
        == 0
    )
    labels = {"agent": "planner", "agent_type": "llm"}
    assert get("autoretrain_agent_run_duration_seconds_bucket", {**labels, "le": "5.0"}) == 1
    assert get("autoretrain_agent_run_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 2
    assert get("autoretrain_agent_run_duration_seconds_sum", labels) == pytest.approx(7.2)
    assert get("autoretrain_agent_run_duration_seconds_count", labels) == 2
    assert get("autoretrain_agent_tokens_total", {"agent": "planner"}) == 200
    assert get("autoretrain_agent_cost_total", {"agent": "planner"}) == pytest.approx(0.03)


def test_record_accuracy_computes_or_takes_accuracy(clock, registry):
    m = make(clock, registry)
    got = m.record_accuracy("fc", "t1", {"sales": 10000}, {"sales": 9500}, "human")
    assert got == pytest.approx(0.947, abs=1e-3)
    assert m.record_accuracy("fc", "t2", accuracy=0.5) == 0.5
    get = registry.get_sample_value
    assert get("autoretrain_agent_prediction_accuracy_ratio_count", {"agent": "fc"}) == 2
    assert get("autoretrain_agent_prediction_accuracy_ratio_sum", {"agent": "fc"}) == pytest.approx(
        got + 0.5
    )
    assert (
        get("autoretrain_agent_prediction_accuracy_ratio_bucket", {"agent": "fc", "le": "0.5"}) == 1
    )
    assert (
        get("autoretrain_agent_accuracy_records_total", {"agent": "fc", "feedback_source": "human"})
        == 1
    )
    assert (
        get(
            "autoretrain_agent_accuracy_records_total",
            {"agent": "fc", "feedback_source": "ground_truth"},
        )
        == 1
    )


def test_agent_labels_are_bounded(clock, registry):
    m = make(clock, registry, max_agents=2)
    for name in ("a", "b", "c", "d"):
        m.record_agent_run("r", name, "llm", "success", 1)
    get = registry.get_sample_value
    assert (
        get(
            "autoretrain_agent_runs_total", {"agent": "a", "agent_type": "llm", "status": "success"}
        )
        == 1
    )
    assert (
        get(
            "autoretrain_agent_runs_total", {"agent": "c", "agent_type": "llm", "status": "success"}
        )
        is None
    )
    assert (
        get(
            "autoretrain_agent_runs_total",
            {"agent": "other", "agent_type": "llm", "status": "success"},
        )
        == 2
    )
    assert get("autoretrain_agent_series_collapsed_total") == 2
    assert m.get_stats()["agent_series_collapsed"] == 2


STATUS_MSG = "status must be one of success, failure, error, timeout"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "ok"}, STATUS_MSG),
        ({"status": None}, STATUS_MSG),
        ({"agent_name": ""}, "agent_name must be a non-empty string"),
        ({"agent_name": 5}, "agent_name must be a non-empty string"),
        ({"agent_type": ""}, "agent_type must be a non-empty string"),
        ({"run_id": ""}, "run_id must be a non-empty string"),
        ({"duration_ms": -1}, "duration_ms must be a finite number >= 0"),
        ({"duration_ms": float("nan")}, "duration_ms must be a finite number >= 0"),
        ({"duration_ms": float("inf")}, "duration_ms must be a finite number >= 0"),
        ({"duration_ms": "12"}, "duration_ms must be a number >= 0"),
        ({"tokens_used": -3}, "tokens_used must be an integer >= 0"),
        ({"tokens_used": 1.5}, "tokens_used must be an integer >= 0"),
        ({"cost": -0.01}, "cost must be a finite number >= 0"),
        ({"task_type": ""}, "task_type must be a non-empty string"),
        ({"context": {"nested": {"a": 1}}}, "context values must be scalars"),
        ({"context": ["a"]}, "context must be an object"),
    ],
)
def test_bad_run_input_raises_and_records_nothing(clock, registry, kwargs, message):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    args = {
        "run_id": "r1",
        "agent_name": "a",
        "agent_type": "llm",
        "status": "success",
        "duration_ms": 10.0,
        "tokens_used": 1,
        "cost": 0.1,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        m.record_agent_run(**args)
    assert m.get_stats()["runs_recorded"] == 0
    assert m.get_system_metrics().total_runs == 0
    assert len(updater.event_bus) == 0
    assert (
        registry.get_sample_value(
            "autoretrain_agent_runs_total", {"agent": "a", "agent_type": "llm", "status": "success"}
        )
        is None
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accuracy": 1.5}, r"accuracy must be a number in \[0, 1\]"),
        ({"accuracy": -0.1}, r"accuracy must be a number in \[0, 1\]"),
        ({"accuracy": True}, r"accuracy must be a number in \[0, 1\]"),
        ({"accuracy": None}, "pass accuracy=, or both"),
        ({"agent_name": ""}, "agent_name must be a non-empty string"),
        ({"feedback_source": ""}, "feedback_source must be a non-empty string"),
        (
            {"accuracy": None, "predicted_outcome": {"a": 1}, "actual_outcome": {}},
            "at least one key",
        ),
    ],
)
def test_bad_accuracy_input_raises_and_records_nothing(clock, registry, kwargs, message):
    m = make(clock, registry)
    args = {"agent_name": "a", "task_id": "t", "accuracy": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        m.record_accuracy(**args)
    assert m.get_stats()["accuracy_records"] == 0
    assert m.get_system_metrics().accuracy_records == 0


def test_status_enum_is_accepted(clock, registry):
    import enum

    class AgentStatus(enum.Enum):
        SUCCESS = "success"

    m = make(clock, registry)
    m.record_agent_run("r", "a", "llm", AgentStatus.SUCCESS, 5)
    assert m.get_system_metrics().successful_runs == 1


# -- the window ---------------------------------------------------------------


def test_system_metrics_over_the_window(clock, registry):
    m = make(clock, registry)
    for i, status in enumerate(["success"] * 6 + ["failure", "error", "timeout", "success"]):
        m.record_agent_run(
            f"r{i}", "a" if i % 2 else "b", "llm", status, float(100 * (i + 1)), 10, 0.1
        )
    m.record_accuracy("a", "t", accuracy=0.8)
    m.record_accuracy("b", "t", accuracy=0.6)
    s = m.get_system_metrics()
    assert s.total_runs == 10
    assert s.success_rate == pytest.approx(0.7)
    assert s.error_rate == pytest.approx(0.2)  # error + timeout
    assert s.failed_runs == 3
    assert s.avg_accuracy == pytest.approx(0.7)
    assert s.latency_p95_ms == pytest.approx(955.0)  # numpy linear percentile of 100..1000
    assert s.total_tokens == 100
    assert s.total_cost == pytest.approx(1.0)
    assert set(s.agents) == {"a", "b"}
    assert s.agents["a"].total_runs == 5
    assert s.agents["a"].avg_accuracy == pytest.approx(0.8)
    assert m.get_agent_metrics("b").avg_accuracy == pytest.approx(0.6)
    assert m.get_agent_metrics("zzz") is None


def test_old_records_leave_the_window(clock, registry):
    m = make(clock, registry, window_size_minutes=10)
    feed(m, 5, 0.2)
    clock.advance(5 * 60)
    feed(m, 3, 0.9)
    assert m.get_system_metrics().total_runs == 8
    clock.advance(5 * 60 + 1)  # the first five are now older than 10 minutes
    s = m.get_system_metrics()
    assert s.total_runs == 3
    assert s.avg_accuracy == pytest.approx(0.9)
    clock.advance(10 * 60)
    s = m.get_system_metrics()
    assert (s.total_runs, s.avg_accuracy, s.success_rate) == (0, None, None)


# -- alerts and the retrain policy ----------------------------------------------


def test_checker_alerts_once_and_retrains_incremental_then_full(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    feed(m, 20, 0.65)  # below 0.70, above the critical 0.50
    alerts = m.check()
    assert updater.calls == [(updater.calls[0][0], False)]
    assert "accuracy degraded to 65.0%" in updater.calls[0][0]
    assert any(
        a.level == "warning" and a.message == "System accuracy degraded to 65.0% (threshold 70.0%)"
        for a in alerts
    )
    assert alerts[-1].message == "Retraining (incremental) completed"

    # Within the cooldown: no second retrain, no repeated alert.
    clock.advance(30)
    feed(m, 20, 0.65)
    assert m.check() == []
    assert len(updater.calls) == 1

    # Past the cooldown, still degraded since the retrain, before the grace period: incremental.
    clock.advance(40)
    feed(m, 20, 0.65)
    m.check()
    assert [full for _, full in updater.calls] == [False, False]

    # Past the grace period after the first incremental: full.
    clock.advance(61)
    feed(m, 20, 0.65)
    m.check()
    assert [full for _, full in updater.calls] == [False, False, True]
    assert "still degraded" in updater.calls[-1][0]


def test_critical_accuracy_retrains_full_at_once(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    feed(m, 20, 0.3)
    m.check()
    assert updater.calls[0][1] is True
    assert "critical" in updater.calls[0][0]


def test_recovery_after_retrain_ends_the_episode_and_logs_it(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater, window_size_minutes=60)
    feed(m, 20, 0.6)
    m.check()
    clock.advance(10)
    # Only records after the retrain are judged: the old bad ones do not count.
    feed(m, 20, 0.95)
    alerts = m.check()
    assert any("back within its threshold" in a.message for a in alerts)
    clock.advance(600)
    feed(m, 20, 0.95)
    m.check()
    assert len(updater.calls) == 1


def test_not_enough_data_is_no_verdict(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater, min_runs=50)
    feed(m, 20, 0.1)
    assert m.check() == []
    assert updater.calls == []
    assert m.generate_report()["status"] == "no_data"


def test_auto_retraining_off_alerts_but_does_not_retrain(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater, enable_auto_retraining=False)
    feed(m, 20, 0.6)
    alerts = m.check()
    assert alerts and updater.calls == []


def test_latency_alerts_but_does_not_retrain(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    feed(m, 20, 0.95, duration_ms=9000)
    alerts = m.check()
    assert [a.message for a in alerts if a.details.get("agent") is None] == [
        "System p95 latency degraded to 9000 ms (threshold 5000 ms)"
    ]
    assert updater.calls == []


def test_updater_that_raises_is_reported_not_raised(clock, registry):
    updater = FakeUpdater(raises=RuntimeError("disk full"))
    m = make(clock, registry, model_updater=updater)
    feed(m, 20, 0.6)
    alerts = m.check()
    assert alerts[-1].level == "error"
    assert alerts[-1].details["result"]["error"] == "RuntimeError: disk full"
    result = m.trigger_retraining("manual")
    assert result["success"] is False and "disk full" in result["error"]


def test_checker_thread_survives_an_exception(registry):
    m = PerformanceMonitor(registry=registry, check_interval_seconds=0.01)
    calls = []
    done = threading.Event()

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) >= 3:
            done.set()
        return []

    m.check = flaky
    m.start()
    try:
        assert done.wait(5), "checker stopped after an exception"
        assert m.get_stats()["checker_errors"] == 1
        assert registry.get_sample_value("autoretrain_monitor_checker_errors_total") == 1
        assert m.get_stats()["running"] is True
    finally:
        m.stop()
    assert m.get_stats()["running"] is False


def test_get_alerts_newest_first_with_limit(clock, registry):
    m = make(clock, registry, model_updater=FakeUpdater())
    feed(m, 20, 0.3, status="error")
    raised = m.check()
    newest = m.get_alerts(limit=2)
    assert newest == raised[::-1][:2]
    assert m.get_alerts(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        m.get_alerts(limit=-1)
    for a in newest:
        assert a.level and a.message and isinstance(a.details, dict) and a.timestamp.endswith("Z")


# -- manual retraining, stats and reports -----------------------------------------


def test_trigger_retraining_without_updater(clock, registry):
    result = make(clock, registry).trigger_retraining("manual", force_full_retrain=True)
    assert result["success"] is False
    assert result["error"] == "no model updater connected to this monitor"
    assert result["retrain_type"] == "full"
    assert result["timestamp"].endswith("Z")


def test_trigger_retraining_returns_the_updaters_result_and_starts_cooldown(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    result = m.trigger_retraining(reason="operator", force_full_retrain=True)
    assert result["events_processed"] == 42 and result["reason"] == "operator"
    assert updater.calls == [("operator", True)]
    feed(m, 20, 0.6)
    m.check()  # degraded, but the manual retrain started the cooldown
    assert len(updater.calls) == 1
    assert (
        registry.get_sample_value(
            "autoretrain_monitor_retrains_triggered_total",
            {"retrain_type": "full", "trigger": "manual"},
        )
        == 1
    )


def test_get_stats(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    feed(m, 3, 0.9)
    stats = m.get_stats()
    assert stats["auto_retraining_enabled"] is True
    assert stats["model_updater_connected"] is True
    assert stats["runs_recorded"] == 3 and stats["accuracy_records"] == 3
    assert stats["event_sink"] == "embedded"
    assert stats["events_published"] == 6 and stats["events_dropped"] == 0
    assert make(clock, CollectorRegistry()).get_stats()["model_updater_connected"] is False


def test_report_health_score_and_recommendations(clock, registry):
    m = make(clock, registry)
    feed(m, 20, 0.95, agent="good", task_type="forecast")
    feed(m, 20, 0.40, agent="bad", status="error", task_type="triage")
    report = m.generate_report()
    assert report["status"] == "degraded"  # system accuracy 0.675: below 0.70, above critical 0.50
    assert 0 <= report["health_score"] < 60
    assert report["agents"]["good"]["health_score"] > 90
    assert report["agents"]["bad"]["health_score"] < report["agents"]["good"]["health_score"]
    recs = " ".join(report["recommendations"])
    assert "Agent bad accuracy degraded to 40.0% (threshold 70.0%) (task types: triage)" in recs
    assert "Agent bad error rate" in recs
    assert "Agent good" not in recs
    assert "agents" not in m.generate_report(include_agents=False)


def test_report_health_formula_on_a_healthy_system(clock, registry):
    m = make(clock, registry)
    feed(m, 20, 0.9, duration_ms=100)
    # 100 * (0.4*0.9 + 0.3*1 + 0.15*1 + 0.15*1) / 1.0 = 96.0, no violation
    report = m.generate_report()
    assert report["health_score"] == 96.0
    assert report["status"] == "healthy"
    assert report["recommendations"] == ["All figures within thresholds: no action needed."]


def test_thresholds_merge_over_defaults_and_are_validated(clock, registry, tmp_path):
    m = make(clock, registry, alert_thresholds={"accuracy_min": 0.9})
    assert m.alert_thresholds["accuracy_min"] == 0.9
    assert m.alert_thresholds["success_rate_min"] == 0.80
    with pytest.raises(ValueError, match="alert_thresholds: unknown key"):
        make(clock, CollectorRegistry(), alert_thresholds={"acc": 0.9})
    f = tmp_path / "t.yml"
    f.write_text("thresholds:\n  error_rate_max: 0.05\nmonitor:\n  min_runs: 3\n")
    m2 = PerformanceMonitor(registry=CollectorRegistry(), thresholds_file=f)
    assert m2.alert_thresholds["error_rate_max"] == 0.05 and m2.settings.min_runs == 3


# -- events ------------------------------------------------------------------------


def test_events_reach_the_updaters_bus_with_the_contract_fields(clock, registry):
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    m.record_agent_run(
        "r1", "a", "llm", "failure", 12, 5, 0.25, task_type="sql", context={"tier": "gold"}
    )
    m.record_accuracy("a", "t9", accuracy=0.75, feedback_source="human", task_type="sql")
    run, acc = updater.event_bus.drain()
    assert validate_event(run) == run and validate_event(acc) == acc
    assert (
        run["kind"] == "run" and run["status"] == "failure" and run["context"] == {"tier": "gold"}
    )
    assert run["timestamp"] == clock.now and run["task_type"] == "sql"
    assert acc["agent_type"] == "llm"  # remembered from the agent's runs
    assert acc["accuracy"] == 0.75 and acc["task_id"] == "t9" and acc["feedback_source"] == "human"
    assert run["event_id"] != acc["event_id"]


def test_a_sink_that_raises_never_reaches_the_caller(clock, registry):
    class Broken:
        def publish(self, event):
            raise OSError("gone")

        def stats(self):
            return {}

        def close(self, timeout=5.0):
            pass

    m = make(clock, registry, event_sink=Broken())
    m.record_agent_run("r", "a", "llm", "success", 1)
    m.record_accuracy("a", "t", accuracy=1.0)
    assert m.get_stats()["events_dropped"] == 2
    assert registry.get_sample_value("autoretrain_monitor_events_total", {"result": "dropped"}) == 2


def test_full_embedded_bus_counts_drops(clock, registry):
    class U(FakeUpdater):
        def __init__(self):
            super().__init__()
            self.event_bus = EmbeddedBus(maxsize=2)

    m = make(clock, registry, model_updater=U())
    for i in range(5):
        m.record_agent_run(f"r{i}", "a", "llm", "success", 1)
    stats = m.get_stats()
    assert (stats["events_published"], stats["events_dropped"], stats["runs_recorded"]) == (2, 3, 5)


# -- the default instance and serving ----------------------------------------------------


def test_init_performance_monitor_uses_the_global_registry_and_replaces():
    first = init_performance_monitor(window_size_minutes=5)
    try:
        first.record_agent_run("r", "global-agent", "llm", "success", 1)
        labels = {"agent": "global-agent", "agent_type": "llm", "status": "success"}
        assert REGISTRY.get_sample_value("autoretrain_agent_runs_total", labels) == 1
        second = init_performance_monitor()
        assert get_performance_monitor() is second
        assert REGISTRY.get_sample_value("autoretrain_agent_runs_total", labels) is None
    finally:
        get_performance_monitor().close()


def test_serve_metrics_and_health(clock, registry):
    m = make(clock, registry)
    m.record_agent_run("r", "served", "llm", "success", 1)
    server = m.serve_metrics(port=0, addr="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
        }
        key = (
            "autoretrain_agent_runs_total",
            (("agent", "served"), ("agent_type", "llm"), ("status", "success")),
        )
        assert samples[key] == 1
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/nope", timeout=5)
        assert info.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_constructor_validation(registry):
    with pytest.raises(ValueError, match="window_size_minutes"):
        PerformanceMonitor(window_size_minutes=0, registry=registry)
    with pytest.raises(ValueError, match="trigger_retraining"):
        PerformanceMonitor(model_updater=object(), registry=registry)


def test_concurrent_recording_loses_nothing(clock, registry):
    """Runs are queued by the callers and applied in batches: all of them count."""
    updater = FakeUpdater()
    m = make(clock, registry, model_updater=updater)
    per_thread, threads = 5000, 8

    def work(k):
        for i in range(per_thread):
            m.record_agent_run(f"r{k}-{i}", f"agent-{k % 3}", "llm", "success", 1.0, 2, 0.5)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    scraper_done = threading.Event()

    def scrape():  # reads race the writers, as a scrape would
        while not scraper_done.is_set():
            registry.get_sample_value("autoretrain_agent_tokens_total", {"agent": "agent-0"})

    scraper = threading.Thread(target=scrape)
    scraper.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    scraper_done.set()
    scraper.join()
    total = sum(
        registry.get_sample_value(
            "autoretrain_agent_runs_total",
            {"agent": f"agent-{a}", "agent_type": "llm", "status": "success"},
        )
        for a in range(3)
    )
    assert total == per_thread * threads
    assert m.get_system_metrics().total_runs == per_thread * threads
    assert m.get_stats()["runs_recorded"] == per_thread * threads
    assert len(updater.event_bus) == per_thread * threads


# -- explicit wiring: event_sink= and retrainer= -------------------------------------------


def test_retrainer_and_event_sink_are_wired_explicitly(clock, registry):
    retrainer, bus = FakeUpdater(), EmbeddedBus()
    del retrainer.event_bus  # a retrainer needs no bus
    m = make(clock, registry, retrainer=retrainer, event_sink=bus)
    feed(m, 20, 0.6)
    m.check()
    assert len(retrainer.calls) == 1
    assert len(bus) == 40 and m.event_sink is bus
    assert m.get_stats()["model_updater_connected"] is True


def test_explicit_retrainer_wins_over_the_model_updater_shortcut(clock, registry):
    updater, retrainer = FakeUpdater(), FakeUpdater()
    m = make(clock, registry, model_updater=updater, retrainer=retrainer)
    m.trigger_retraining("operator")
    assert retrainer.calls == [("operator", False)] and updater.calls == []
    m.record_agent_run("r", "a", "llm", "success", 1)
    assert len(updater.event_bus) == 1  # the shortcut still supplies the sink


def test_a_retrainer_without_trigger_retraining_is_refused(registry):
    with pytest.raises(ValueError, match="retrainer must have a trigger_retraining"):
        PerformanceMonitor(retrainer=object(), registry=registry)


def test_wsgi_app_negotiates_openmetrics(clock, registry):
    m = make(clock, registry)
    m.record_agent_run("r", "served", "llm", "success", 1)
    environ = {
        "PATH_INFO": "/metrics",
        "QUERY_STRING": "",
        "HTTP_ACCEPT": "application/openmetrics-text; version=1.0.0",
    }
    got = {}
    body = b"".join(m.wsgi_app()(environ, lambda s, h: got.update(headers=dict(h)))).decode()
    assert got["headers"]["Content-Type"].startswith("application/openmetrics-text")
    assert (
        'autoretrain_agent_runs_total{agent="served",agent_type="llm",status="success"} 1' in body
    )
    assert "autoretrain_monitor_events_total" in body and body.endswith("# EOF\n")


def test_a_skipped_retrain_is_reported_as_skipped_not_as_a_failure(
        clock, registry, tmp_path, caplog):
    from autoretrain.webhook.updater import RealTimeModelUpdater

    # The monitor's first check comes before the updater has applied any event
    # (nothing buffered): the retrain is skipped. That is a normal start, not
    # an error an operator should be paged or grep'd for.
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=CollectorRegistry(), clock=clock)
    m = make(clock, registry, model_updater=updater)
    feed(m, 20, 0.6)
    with caplog.at_level(logging.INFO, logger="autoretrain.exporter.checker"):
        alerts = m.check()
    retrain = alerts[-1]
    assert retrain.details["result"]["result"] == "skipped", retrain.details
    assert retrain.level == "info"
    assert retrain.message == "Retraining (incremental) skipped"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("Retraining skipped: no buffered events" in r.getMessage()
               for r in caplog.records)
