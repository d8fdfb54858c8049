"""Every query of every Grafana dashboard returns data from a real Prometheus.

One Prometheus (1 s scrapes and evaluations) scrapes two in-process
endpoints, as in docker-compose: the exporter's (a ``PerformanceMonitor``)
and the webhook's (its ``RealTimeModelUpdater`` on the embedded bus). A
simulated platform records runs and accuracy, healthy first and then
degraded (three of four agents fail, time out, slow down and lose
accuracy), while the updater learns and retrains (incremental and full) and
sees duplicate and invalid events. The rules are the committed thresholds
with a short ``for`` and rate window, so alerts fire within the test.

Then every panel target, template variable and annotation query runs with
its Grafana variables substituted, over the recorded time range, and must
return at least one series with a finite value.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from servers import PrometheusServer, ServerStartError
from servers.common import http_get_json, poll_until

from autoretrain.exporter import PerformanceMonitor, load_thresholds
from autoretrain.exporter.events import SCHEMA_VERSION
from autoretrain.exporter.http import metrics_app, serve
from autoretrain.exporter.rules import render_rules
from autoretrain.exporter.standalone import StandaloneExporter
from autoretrain.exporter.thresholds import AlertSettings, EscalationSettings, ThresholdsConfig
from autoretrain.webhook import create_app
from autoretrain.webhook.updater import RealTimeModelUpdater

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))

# name -> (agent_type, degraded in the second phase)
AGENTS = {
    "planner": ("llm", True),
    "researcher": ("llm", True),
    "coder": ("tool", True),
    "analyst": ("llm", False),
}
TASK_TYPES = ("forecast", "summarize", "code")
STATUSES = ("success", "failure", "error", "timeout")
# What the $agent variable is set to: one agent that degrades, one that does not.
SELECTED = ("analyst", "coder")
SCRAPE_SECONDS = 1
TICK_SECONDS = 0.1
RETRAIN_EVERY_TICKS = 20
LAYOUT_PANELS = {"row", "text"}
TOKEN = "dashboard-test-token"


# -- the simulated platform ---------------------------------------------------------


class SimulatedPlatform:
    """Records a run and an accuracy record per agent every tick, in a thread.

    Healthy: 94 % success, accuracy about 0.9, 0.3-2 s. Degraded agents:
    50 % success, 35 % error or timeout, accuracy about 0.3, 3-9 s. The
    updater applies the events each tick and retrains every
    ``RETRAIN_EVERY_TICKS`` ticks, alternating incremental and full.
    """

    def __init__(
        self, monitor: PerformanceMonitor, updater: RealTimeModelUpdater, seed: int
    ) -> None:
        self.monitor = monitor
        self.updater = updater
        self.rng = random.Random(seed)
        self.degraded = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulated-platform", daemon=True)
        self._runs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; re-raise what it died of, if anything."""
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError("the simulated platform failed") from self.error

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError("the simulated platform failed") from self.error

    def _run(self) -> None:
        try:
            tick = 0
            while not self._stop.wait(TICK_SECONDS):
                self._tick(tick)
                tick += 1
        except BaseException as exc:  # reported by check() and stop()
            self.error = exc

    def _status(self, bad: bool) -> str:
        # Cumulative probabilities of success, failure, error (the rest: timeout).
        bounds = (0.5, 0.65, 0.85) if bad else (0.94, 0.97, 0.99)
        r = self.rng.random()
        return next((s for s, b in zip(STATUSES, bounds, strict=False) if r < b), "timeout")

    def _tick(self, tick: int) -> None:
        rng = self.rng
        for agent, (agent_type, degrades) in AGENTS.items():
            bad = degrades and self.degraded.is_set()
            task_type = rng.choice(TASK_TYPES)
            tokens = rng.randint(200, 1500)
            self._runs += 1
            self.monitor.record_agent_run(
                run_id=f"run-{self._runs}",
                agent_name=agent,
                agent_type=agent_type,
                status=self._status(bad),
                duration_ms=rng.uniform(3000, 9000) if bad else rng.uniform(300, 2000),
                tokens_used=tokens,
                cost=tokens * 2e-5,
                task_type=task_type,
            )
            accuracy = rng.gauss(0.3 if bad else 0.9, 0.05)
            self.monitor.record_accuracy(
                agent_name=agent,
                task_id=f"task-{self._runs}",
                accuracy=min(1.0, max(0.0, accuracy)),
                task_type=task_type,
                feedback_source="ground_truth",
            )
        if tick % RETRAIN_EVERY_TICKS == 0:
            bus = self.updater.event_bus
            assert bus is not None
            event = {
                "schema": SCHEMA_VERSION, "event_id": f"replayed-{tick}", "kind": "run",
                "timestamp": time.time(), "agent_name": "analyst", "agent_type": "llm",
                "task_type": "forecast", "status": "success", "duration_ms": 500.0,
                "tokens_used": 300, "cost": 0.006,
            }  # fmt: skip
            bus.publish(event)
            bus.publish(dict(event))  # the same event_id again: a duplicate
            bus.publish({"schema": SCHEMA_VERSION, "kind": "run"})  # invalid: fields missing
        self.updater.process_pending()
        if tick % RETRAIN_EVERY_TICKS == RETRAIN_EVERY_TICKS - 1:
            full = (tick // RETRAIN_EVERY_TICKS) % 2 == 1
            self.updater.trigger_retraining(reason="dashboard test", force_full_retrain=full)


# -- the stack ------------------------------------------------------------------------


@dataclass
class Stack:
    prometheus: PrometheusServer
    started: float  # Unix time before the first scrape: the start of range queries


def _prometheus_config(rules: Path, exporter_ports: list[int], webhook_port: int) -> str:
    def job(name: str, *ports: int) -> dict[str, Any]:
        targets = [f"127.0.0.1:{port}" for port in ports]
        return {"job_name": name, "static_configs": [{"targets": targets}]}

    return yaml.safe_dump(
        {
            "global": {
                "scrape_interval": f"{SCRAPE_SECONDS}s",
                "evaluation_interval": f"{SCRAPE_SECONDS}s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                job("autoretrain-exporter", *exporter_ports),
                job("autoretrain-webhook", webhook_port),
            ],
        },
        sort_keys=False,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards")
    committed = load_thresholds(REPO / "prometheus" / "thresholds.yml")
    # The committed thresholds (the ones the panels draw), with a window and a
    # `for` short enough for alerts to fire within seconds.
    config = ThresholdsConfig(
        thresholds=committed.thresholds,
        hysteresis=committed.hysteresis,
        alerts=AlertSettings(for_="2s", rate_window="10s"),
        # Retrains that did not help call a person after 2 s, not 30 min.
        escalation=EscalationSettings(grace="2s"),
    )
    rules = tmp / "autoretrain.rules.yml"
    rules.write_text(render_rules(config))

    updater = RealTimeModelUpdater(
        model_storage_path=str(tmp / "models"),
        registry=CollectorRegistry(),
        enable_auto_save=False,
        seed=7,
    )
    monitor = PerformanceMonitor(
        model_updater=updater, enable_auto_retraining=False, registry=CollectorRegistry()
    )
    exporter_http, _ = serve(monitor.wsgi_app(), "127.0.0.1", 0)  # fast path, OpenMetrics
    # The webhook app around the updater: its request and rejection metrics,
    # on the updater's registry, as python -m autoretrain.webhook serves them.
    webhook = create_app(
        {"token": TOKEN, "ledger_path": str(tmp / "ledger.sqlite3"), "cooldown_seconds": 0,
         # Effects measured within the test: 20 s windows (two of the updater's
         # 10 s buckets of event time), no settle time.
         "effect_window_seconds": 20, "effect_settle_seconds": 0, "effect_min_events": 5},
        updater=updater, registry=updater.registry,
    )
    webhook_http, _ = serve(webhook, "127.0.0.1", 0)
    # A standalone (Kafka-fed) exporter beside the embedded monitor, as a second
    # target of the exporter job: Kafka connectivity and invalid events by fault.
    # Fed directly (no broker); only invalid events, so the agent series stay the monitor's.
    standalone = StandaloneExporter("127.0.0.1:9", registry=CollectorRegistry())
    for value in (b"{oops", b'{"schema": 9}', b'{"schema": 1, "kind": "run"}'):
        standalone.handle(value)
    standalone_http, _ = serve(
        metrics_app(standalone.registry, standalone.ready, fast=[standalone.metrics]),
        "127.0.0.1", 0,
    )
    platform = SimulatedPlatform(monitor, updater, seed=7)
    config_path = tmp / "prometheus.yml"
    config_path.write_text(
        _prometheus_config(
            rules, [exporter_http.server_port, standalone_http.server_port],
            webhook_http.server_port,
        )
    )
    prometheus = PrometheusServer(tmp / "prometheus", config_path)
    try:
        platform.start()  # series exist at the first scrape: rate() has a baseline
        started = time.time()
        try:
            prometheus.start()
        except ServerStartError as exc:
            pytest.fail(str(exc), pytrace=False)  # an error, never a skip

        def wait_for(expr: str, timeout: float) -> None:
            platform.check()
            prometheus.wait_for(expr, lambda result: len(result) > 0, timeout)

        # healthy
        wait_for("system:autoretrain_agent_prediction_accuracy_ratio:mean > 0.85", timeout=30)
        # Requests the webhook answers, and one it refuses (no token).
        client = webhook.test_client()
        assert client.get("/healthz").status_code == 200
        assert client.post("/alerts", json={}).status_code == 401
        platform.degraded.set()
        # A retrain alert, a per-agent alert of a selected agent, and a
        # promotion that Prometheus saw happen.
        # Firing for several evaluations, not one: on a loaded machine an alert
        # can fire for a single 1 s evaluation and resolve, and a range query's
        # 1 s grid may then miss it.
        wait_for('count_over_time(ALERTS{alertstate="firing", retrain!=""}[1m]) >= 3', timeout=40)
        wait_for(
            f'count_over_time(ALERTS{{alertstate="firing", agent="{SELECTED[1]}"}}[1m]) >= 3',
            timeout=30,
        )
        wait_for("changes(autoretrain_model_last_retrain_timestamp_seconds[1m]) > 0", timeout=30)
        # The degraded agents' pairs set aside by the model (the drop detector,
        # within a few runs), scraped several times: the set-aside panels.
        wait_for("count_over_time(autoretrain_model_pair_set_aside[1m]) >= 3", timeout=30)
        # Alertmanager's part, played by the test: the firing retrain alert reaches
        # the webhook, which retrains (trigger alert) on a platform that stays
        # degraded. Its effect is measured once its 20 s after-window closed,
        # and the retrain alert still firing 2 s after it escalates to a person.
        notification = {
            "version": "4", "status": "firing", "receiver": "autoretrain-webhook",
            "groupKey": "{}:{}", "alerts": [{
                "status": "firing", "fingerprint": "da5b0a4d7e570001",
                "startsAt": "2024-05-01T10:00:00Z",
                "labels": {"alertname": "SystemSuccessRateLow", "retrain": "incremental"}}],
        }  # fmt: skip
        response = client.post("/alerts", json=notification,
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 202, response.get_data(as_text=True)
        wait_for('ALERTS{alertname="AutoretrainRetrainDidNotRecover"}', timeout=40)
        # Both figures, before and after, scraped several times: a range query's
        # 1 s grid can end before a series' first sample, which an instant
        # query (5 min lookback) already shows.
        for side in ("before", "after"):
            for figure in ("success_rate", "accuracy"):
                wait_for(f'count_over_time(autoretrain_retrain_effect_{side}_ratio'
                         f'{{figure="{figure}"}}[1m]) >= 3', timeout=90)
        yield Stack(prometheus, started)
    finally:
        try:
            platform.stop()
        finally:
            prometheus.stop()
            for server in (exporter_http, webhook_http, standalone_http):
                server.shutdown()
                server.server_close()
            webhook.extensions["autoretrain"].close()
            monitor.close()
            updater.stop()


# -- queries as Grafana sends them ----------------------------------------------------


def rate_interval(step: float) -> str:
    """Grafana's $__rate_interval: max(4 x scrape interval, step + scrape interval)."""
    return f"{max(4 * SCRAPE_SECONDS, step + SCRAPE_SECONDS):g}s"


def substitute(expr: str, step: float) -> str:
    """``expr`` with the dashboard variables as Grafana would fill them in.

    ``$agent`` is the multi-value selection ``SELECTED`` (Grafana's regex
    format for the Prometheus datasource: ``(a|b)``); ``$job`` and
    ``$webhook_job`` the stack's two jobs, ``$cluster`` "All" (``.*``);
    ``$__range`` is the dashboards' default range, 1h.
    """
    values = {
        "agent": "(" + "|".join(re.escape(a) for a in SELECTED) + ")",
        # The jobs of this stack, and "All" of the optional cluster (no such label here).
        "job": "autoretrain-exporter",
        "webhook_job": "autoretrain-webhook",
        "cluster": ".*",
        "__rate_interval": rate_interval(step),
        "__interval": f"{step:g}s",
        "__range": "1h",
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"{expr!r}: no test value for variable ${name}")
        return values[name]

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", replace, expr)


def query(stack: Stack, expr: str, *, instant: bool, step: float = 1.0) -> list[dict[str, Any]]:
    """Run ``expr`` like Grafana: an instant query now, or a range query since the start."""
    now = time.time()
    if instant:
        params = {"query": expr, "time": f"{now:.3f}"}
        path = "query"
    else:
        params = {"query": expr, "start": f"{stack.started:.3f}", "end": f"{now:.3f}",
                  "step": f"{step:g}"}  # fmt: skip
        path = "query_range"
    body = http_get_json(
        f"{stack.prometheus.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10
    )
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    samples = [s["value"] for s in result if "value" in s]
    samples += [v for s in result for v in s.get("values", [])]
    return [float(v) for _, v in samples if math.isfinite(float(v))]


def check_result(expr: str, result: list[dict[str, Any]]) -> None:
    assert result, f"no data for {expr!r}"
    assert finite_values(result), f"only NaN or Inf for {expr!r}: {result[:3]}"
    if "$agent" in expr or "${agent}" in expr:
        shown = {s["metric"]["agent"] for s in result if "agent" in s["metric"]}
        assert shown <= set(SELECTED), f"{expr!r} ignores the $agent selection: {shown}"


# -- the cases -------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def _panels() -> Iterator[Any]:
    for path in DASHBOARDS:
        dashboard = _load(path)
        for panel in dashboard["panels"]:
            for p in (panel, *panel.get("panels", [])):
                if p["type"] not in LAYOUT_PANELS:
                    slug = re.sub(r"[^a-z0-9]+", "-", p["title"].lower()).strip("-")
                    yield pytest.param(p, id=f"{path.stem}-{p['id']}-{slug}")


def _annotations() -> Iterator[Any]:
    for path in DASHBOARDS:
        for a in _load(path)["annotations"]["list"]:
            if not a.get("builtIn"):
                slug = re.sub(r"[^a-z0-9]+", "-", a["name"].lower()).strip("-")
                yield pytest.param(a, id=f"{path.stem}-{slug}")


def test_there_are_panels_to_check() -> None:
    assert len(list(_panels())) >= 20


@pytest.mark.parametrize("panel", list(_panels()))
def test_panel_queries_return_data(stack: Stack, panel: dict[str, Any]) -> None:
    assert panel["targets"], f"panel {panel['title']!r} has no query"
    for target in panel["targets"]:
        instant = bool(target.get("instant")) and not target.get("range", True)
        expr = substitute(target["expr"], step=1.0)
        check_result(target["expr"], query(stack, expr, instant=instant))


@pytest.mark.parametrize("annotation", list(_annotations()))
def test_annotation_queries_return_data(stack: Stack, annotation: dict[str, Any]) -> None:
    """Annotations are evaluated every ``step`` (15 s) from the start of the range.

    Evaluation points that fall after the alert fired may not exist yet
    (Grafana shows them one step later too): poll until they do.
    """
    step = float(annotation["step"].removesuffix("s"))
    expr = substitute(annotation["expr"], step)

    def evaluated() -> list[dict[str, Any]] | None:
        return query(stack, expr, instant=False, step=step) or None

    check_result(annotation["expr"], poll_until(evaluated, 2 * step + 5, 0.5, repr(expr)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("job", ["autoretrain-exporter"]),
        ("webhook_job", ["autoretrain-webhook"]),
        ("cluster", []),  # no cluster label here: "All" (.*) is what is left
        ("agent", sorted(AGENTS)),
    ],
)
def test_query_variables_list_their_values(stack: Stack, name: str, expected: list[str]) -> None:
    variables = {v["name"]: v for path in DASHBOARDS for v in _load(path)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    variable = variables[name]
    # A string, or {"query": ...} as newer Grafana versions save it.
    query_text = variable["query"]
    if isinstance(query_text, dict):
        query_text = query_text["query"]
    # label_values(selector, label): Grafana asks the series API for the label's values.
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(query_text, 1.0))
    assert match, query_text
    selector, label = match.groups()
    params = urllib.parse.urlencode(
        {"match[]": selector, "start": f"{stack.started:.3f}", "end": f"{time.time():.3f}"}
    )
    body = http_get_json(f"{stack.prometheus.url}/api/v1/label/{label}/values?{params}")
    assert body["status"] == "success", body
    assert sorted(body["data"]) == expected


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query, variables substituted, as a recording rule: promtool parses it offline.

    Fails with promtool's message naming the rule (the panel) whose PromQL is wrong.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/install-test-deps", pytrace=False)
    rules = [
        {"record": f"dashboard:{param.id.replace('-', '_')}:{target['refId']}",
         "expr": substitute(target["expr"], step=1.0)}
        for param in _panels()
        for target in param.values[0]["targets"]
    ]  # fmt: skip
    rules += [
        {"record": f"dashboard:{param.id.replace('-', '_')}", "expr": substitute(a["expr"], 15)}
        for param in _annotations()
        for a in param.values
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
