"""End to end: degraded accuracy -> Prometheus alert -> Alertmanager -> webhook -> one retrain.

Real Prometheus and Alertmanager processes (fixtures); in this process: the
updater on its embedded bus, a PerformanceMonitor publishing to that bus and
serving the exporter's /metrics, and the webhook app on waitress.

Rules: the committed generator (:func:`exporter.rules.render_rules`) with a
test ThresholdsConfig whose ``for`` is 2s and rate window 10s (production:
2m and 5m); thresholds and hysteresis are the defaults. Alertmanager: the
committed ``prometheus/alertmanager.test.yml`` with the webhook URL and the
token file rewritten (group_wait/group_interval 1s, repeat_interval 5s).
Cooldown is 0, so only the episode ledger stands between Alertmanager's
repeats and a second retrain.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import waitress
import yaml
from prometheus_client import CollectorRegistry
from servers import AlertmanagerFactory, PrometheusFactory, PrometheusServer
from waitress import wasyncore

from autoretrain.exporter import PerformanceMonitor, ThresholdsConfig
from autoretrain.exporter.rules import render_rules
from autoretrain.exporter.thresholds import AlertSettings
from autoretrain.webhook import RealTimeModelUpdater, create_app

REPO = Path(__file__).parents[2]
TOKEN = "loop-token-0123456789abcdef"
AGENTS = ("planner", "researcher", "writer")
HEALTHY, DEGRADED = 0.95, 0.60  # accuracy_min 0.70, critical 0.50, clears above 0.73


class Feeder:
    """Records runs (90% success) and accuracy records at ``accuracy`` until stopped."""

    def __init__(self, monitor: PerformanceMonitor) -> None:
        self.monitor = monitor
        self.accuracy = HEALTHY
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._rng = random.Random(0)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.05):
            for agent in AGENTS:
                n += 1
                ok = self._rng.random() < 0.9
                self.monitor.record_agent_run(f"run-{n}", agent, "llm",
                                              "success" if ok else "failure", 120.0, 50, 0.001)
                value = min(1.0, max(0.0, self.accuracy + self._rng.uniform(-0.03, 0.03)))
                self.monitor.record_accuracy(agent, f"task-{n}", accuracy=value,
                                             feedback_source="ground_truth")

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[int]:
    """Serve ``app`` with waitress on a free port in a thread; yields the port."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield server.effective_port  # type: ignore[union-attr]
    finally:
        # Closed from inside the loop thread: closing its sockets from here
        # would pull them out from under its select().
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(10)
        server.task_dispatcher.shutdown()


def scalar(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if result else None


def equals(value: float) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda result: scalar(result) == value


def at_least(value: float) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda result: (scalar(result) or 0.0) >= value


def alertmanager_config(webhook_port: int, token_file: Path) -> str:
    config = yaml.safe_load((REPO / "prometheus" / "alertmanager.test.yml").read_text())
    hooks = [hook for receiver in config["receivers"]
             for hook in receiver.get("webhook_configs", [])]
    assert len(hooks) == 1, "alertmanager.test.yml should have one webhook receiver"
    hooks[0]["url"] = f"http://127.0.0.1:{webhook_port}/alerts"
    hooks[0]["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return str(yaml.safe_dump(config, sort_keys=False))


def prometheus_config(rules: Path, alertmanager_port: int, exporter_port: int,
                      webhook_port: int) -> str:
    return f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['{rules}']
alerting:
  alertmanagers:
    - static_configs: [{{targets: ['127.0.0.1:{alertmanager_port}']}}]
scrape_configs:
  - job_name: autoretrain-exporter
    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]
  - job_name: autoretrain-webhook
    static_configs: [{{targets: ['127.0.0.1:{webhook_port}']}}]
"""


def test_degraded_accuracy_retrains_once_and_resolves_without_retraining(
    tmp_path: Path, prometheus_factory: PrometheusFactory,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    started = time.monotonic()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), batch_size=10,
                                   batch_timeout_seconds=0.5, seed=0)
    monitor = PerformanceMonitor(enable_auto_retraining=False, model_updater=updater,
                                 registry=CollectorRegistry())
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "ledger.sqlite3"),
                      "cooldown_seconds": 0}, updater=updater, registry=updater.registry)
    service = app.extensions["autoretrain"]
    updater.start()
    exporter = monitor.serve_metrics(port=0, addr="127.0.0.1")
    try:
        with serve(app) as webhook_port:
            token_file = tmp_path / "webhook-token"
            token_file.write_text(TOKEN + "\n")
            alertmanager = alertmanager_factory(alertmanager_config(webhook_port, token_file))
            rules = tmp_path / "autoretrain.rules.yml"
            rules.write_text(render_rules(ThresholdsConfig(
                alerts=AlertSettings(for_="2s", rate_window="10s"))))
            prometheus = prometheus_factory(prometheus_config(
                rules, alertmanager.port, exporter.server_port, webhook_port))
            with Feeder(monitor) as feeder:
                run_loop(prometheus, feeder, service)
    finally:
        exporter.shutdown()
        service.close()
        updater.stop()
        monitor.close()
    # The loop's budget (server starts included); not a timing assertion on the retrain.
    print(f"\nalert loop end to end: {time.monotonic() - started:.1f} s")


def run_loop(prometheus: PrometheusServer, feeder: Feeder, service: Any) -> None:
    registry = service.registry
    retrains_seen = (
        'sum(autoretrain_model_retrains_total{job="autoretrain-webhook",result=~"promoted|rejected"})'
    )
    retrains_all = 'sum(autoretrain_model_retrains_total{job="autoretrain-webhook"})'

    # Healthy: Prometheus sees the exporter's accuracy and the webhook's counters.
    prometheus.wait_for("system:autoretrain_agent_prediction_accuracy_ratio:mean",
                        lambda r: (scalar(r) or 0.0) > 0.9, timeout=30)
    prometheus.wait_for(retrains_all, equals(0), timeout=10)

    # Degraded: the accuracy alert fires, Alertmanager posts it, the updater retrains.
    degraded_at = time.monotonic()
    feeder.accuracy = DEGRADED
    prometheus.wait_for('ALERTS{alertname="SystemAccuracyLow",alertstate="firing"}',
                        lambda r: len(r) == 1, timeout=40)
    prometheus.wait_for(
        'autoretrain_webhook_alerts_total{alertname="SystemAccuracyLow",status="firing",'
        'action="queued_incremental"}', equals(1), timeout=30)
    prometheus.wait_for(retrains_seen, equals(1), timeout=30)
    print(f"\ndegradation to retrain visible in Prometheus: "
          f"{time.monotonic() - degraded_at:.1f} s")
    (entry,), total = service.ledger.list_retrains()
    assert total == 1 and entry["trigger"] == "alert"
    assert entry["outcome"] in ("promoted", "rejected") and entry["retrain_type"] == "incremental"
    assert [a["alertname"] for a in entry["alerts"]] == ["SystemAccuracyLow"]

    # Alertmanager repeats the firing notification (repeat_interval 5s): deduplicated.
    prometheus.wait_for('autoretrain_webhook_alerts_total{alertname="SystemAccuracyLow",status="firing",'
                        'action="duplicate_episode"}', at_least(1), timeout=30)
    assert scalar(prometheus.query(retrains_all)) == 1

    # Recovered: the resolved notification arrives and nothing retrains.
    feeder.accuracy = HEALTHY
    prometheus.wait_for('sum(autoretrain_webhook_alerts_total{alertname="SystemAccuracyLow",'
                        'status="resolved"})', at_least(1), timeout=40)
    assert scalar(prometheus.query(retrains_all)) == 1
    assert scalar(prometheus.query(retrains_seen)) == 1
    assert service.ledger.list_retrains()[1] == 1
    assert registry.get_sample_value("autoretrain_webhook_alerts_total", {
        "alertname": "SystemAccuracyLow", "status": "resolved", "action": "resolved"}) >= 1
    assert service.controller.idle()
