"""The committed Prometheus and Alertmanager configuration, checked by the real tools.

promtool and amtool must be installed (scripts/install-test-deps): a missing
tool fails these tests, it never skips them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from servers import PrometheusFactory
from servers.common import http_get_json, poll_until

from autoretrain.exporter.http import metrics_app, serve
from autoretrain.exporter.metrics import AgentMetrics
from autoretrain.exporter.rules import render_rules
from autoretrain.exporter.thresholds import (
    AlertSettings,
    Thresholds,
    ThresholdsConfig,
    load_thresholds,
)

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "prometheus"
RULES = PROMETHEUS / "rules" / "autoretrain.rules.yml"
RULE_TESTS = sorted((PROMETHEUS / "rules" / "tests").glob("*.yml"))
ALERTMANAGER_FILES = [PROMETHEUS / "alertmanager.yml", PROMETHEUS / "alertmanager.test.yml"]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/install-test-deps", pytrace=False)
    return path


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    command[0] = tool(command[0])
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def committed_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


# -- rules --------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    done = run("promtool", "check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(committed_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 7, RULE_TESTS
    done = run("promtool", "test", "rules", *RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


def test_every_rule_has_promtool_tests() -> None:
    tests = "\n".join(path.read_text() for path in RULE_TESTS)
    for rule in committed_rules():
        if "alert" in rule:
            # Fired (a non-empty exp_alerts) and checked quiet somewhere.
            assert re.search(
                rf"alertname: {rule['alert']}\n\s+eval_time: \w+\n\s+exp_alerts:\n", tests
            ), f"no test sees {rule['alert']} fire"
            assert f"{{alertname: {rule['alert']}, " in tests, f"no quiet check of {rule['alert']}"
        else:
            assert f"expr: {rule['record']}\n" in tests, f"no test of {rule['record']}"


def test_promtool_runs_rules_of_a_custom_config(tmp_path: Path) -> None:
    """Custom thresholds and the traffic floor take effect in the evaluated rules.

    min_runs_per_second 0.5: "idle" (0.1 runs/s, all failing) is ignored; the
    custom success threshold 0.6 passes "fine" (0.7, below the default 0.8)
    and catches "busy" (0.5).
    """
    config = ThresholdsConfig(
        thresholds=Thresholds(success_rate_min=0.6),
        alerts=AlertSettings(for_="1m", rate_window="5m", min_runs_per_second=0.5),
    )
    rules_text = render_rules(config)
    (tmp_path / "rules.yml").write_text(rules_text)
    alerts = {r["alert"]: r for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"]
              if "alert" in r}  # fmt: skip

    def expected(name: str, value: str, **labels: str) -> dict[str, Any]:
        rule = alerts[name]
        return {
            "exp_labels": {**rule["labels"], **labels},
            "exp_annotations": {
                key: text.replace("{{ $value | humanizePercentage }}", value).replace(
                    "{{ $labels.agent }}", labels.get("agent", "")
                )
                for key, text in rule["annotations"].items()
            },
        }

    def runs(agent: str, status: str, per_minute: int) -> dict[str, str]:
        return {
            "series": (
                f'autoretrain_agent_runs_total{{job="autoretrain-exporter", agent="{agent}", '
                f'agent_type="llm", status="{status}"}}'
            ),
            "values": f"0+{per_minute}x20",
        }

    unit_test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    runs("busy", "success", 30),
                    runs("busy", "failure", 30),
                    runs("fine", "success", 42),
                    runs("fine", "failure", 18),
                    runs("idle", "failure", 6),
                ],
                "alert_rule_test": [
                    {
                        "alertname": "AgentSuccessRateLow",
                        "eval_time": "10m",
                        "exp_alerts": [expected("AgentSuccessRateLow", "50%", agent="busy")],
                    },
                    # System: (30 + 42) / (60 + 60 + 6) = 57.14%.
                    {
                        "alertname": "SystemSuccessRateLow",
                        "eval_time": "10m",
                        "exp_alerts": [expected("SystemSuccessRateLow", "57.14%")],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(unit_test, sort_keys=False))
    done = run("promtool", "test", "rules", "test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# -- prometheus.yml -------------------------------------------------------------


def test_promtool_checks_the_prometheus_config() -> None:
    done = run("promtool", "check", "config", PROMETHEUS / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_prometheus_scrapes_exporter_webhook_and_itself_and_alerts_alertmanager() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    ports = {name: [t.rsplit(":", 1)[1] for t in ts] for name, ts in targets.items()}
    assert sorted(ports.values()) == [["9090"], ["9093"], ["9108"], ["9109"]]
    # Alertmanager is scraped under the job the rules' scope names.
    scope = load_thresholds(PROMETHEUS / "thresholds.yml").scope
    assert scope.alertmanager == 'job="alertmanager"' and ports["alertmanager"] == ["9093"]
    assert scope.exporter == 'job="autoretrain-exporter"' and ports["autoretrain-exporter"]
    assert scope.webhook == 'job="autoretrain-webhook"' and ports["autoretrain-webhook"]
    assert config["global"]["scrape_interval"] == "15s"
    assert (PROMETHEUS / config["rule_files"][0]).resolve() == RULES
    (am,) = config["alerting"]["alertmanagers"]
    assert [t.rsplit(":", 1)[1] for sc in am["static_configs"] for t in sc["targets"]] == ["9093"]


# -- alertmanager ---------------------------------------------------------------


@pytest.mark.parametrize("path", ALERTMANAGER_FILES, ids=lambda p: p.name)
def test_amtool_checks_the_alertmanager_config(path: Path) -> None:
    done = run("amtool", "check-config", path)
    assert done.returncode == 0, done.stdout + done.stderr


def _alert_label_sets() -> Iterator[tuple[str, dict[str, str], str]]:
    for rule in committed_rules():
        if "alert" in rule:
            labels = {"alertname": rule["alert"], **rule["labels"]}
            if rule["alert"].startswith("Agent"):
                labels["agent"] = "planner"
            # Critical alerts reach a person and go on; retrain alerts reach the webhook.
            receivers = [
                *(["human"] if labels["severity"] == "critical" else []),
                *(["autoretrain-webhook"] if "retrain" in labels else []),
            ]
            yield rule["alert"], labels, ",".join(receivers) or "null"


@pytest.mark.parametrize("path", ALERTMANAGER_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("alertname", "labels", "receiver"),
    list(_alert_label_sets()),
    ids=[name for name, _, _ in _alert_label_sets()],
)
def test_alerts_route_to_the_webhook_by_retrain_label_and_to_a_person_by_severity(
    path: Path, alertname: str, labels: dict[str, str], receiver: str
) -> None:
    done = run(
        "amtool", "config", "routes", "test", f"--config.file={path}",
        f"--verify.receivers={receiver}", *(f"{k}={v}" for k, v in labels.items()),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver


@pytest.mark.parametrize("path", ALERTMANAGER_FILES, ids=lambda p: p.name)
def test_every_grouping_and_inhibition_keeps_the_deployments_apart(path: Path) -> None:
    """Alertmanager keeps the labels the rules keep (scope.keep_labels).

    Otherwise the two environments' alerts, kept apart by the rules, would
    meet in one group: one notification, one retrain for both.
    """
    kept = load_thresholds(PROMETHEUS / "thresholds.yml").scope.keep_labels
    assert kept
    config = yaml.safe_load(path.read_text())

    def routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield route
        for child in route.get("routes", []):
            yield from routes(child)

    for route in routes(config["route"]):
        if "group_by" in route:
            assert set(kept) <= set(route["group_by"]), route
    for rule in config["inhibit_rules"]:
        assert set(kept) <= set(rule["equal"]), rule


@pytest.mark.parametrize("path", ALERTMANAGER_FILES, ids=lambda p: p.name)
def test_webhook_receiver_uses_bearer_credentials_file_and_sends_resolved(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {"null", "human", "autoretrain-webhook"}
    assert set(receivers["null"]) == {"name"}  # drops
    # The place to plug in a pager: empty as shipped (shown in Alertmanager's UI only).
    assert set(receivers["human"]) == {"name"}
    (hook,) = receivers["autoretrain-webhook"]["webhook_configs"]
    assert hook["url"].endswith(":9109/alerts")
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    assert auth["credentials_file"]
    assert "credentials" not in auth  # never a token in the config file


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", duration))


def test_test_variant_differs_from_production_only_in_intervals_and_addresses() -> None:
    production, test = (yaml.safe_load(p.read_text()) for p in ALERTMANAGER_FILES)
    timing = ("group_wait", "group_interval", "repeat_interval")

    def strip(route: dict[str, Any]) -> dict[str, Any]:
        return {
            k: ([strip(r) for r in v] if k == "routes" else v)
            for k, v in route.items()
            if k not in timing
        }

    assert strip(production["route"]) == strip(test["route"])
    assert production["inhibit_rules"] == test["inhibit_rules"]
    # Every route that sets its own timing (the human route inherits the root's).
    for route in (test["route"], *test["route"]["routes"]):
        if "group_wait" in route:
            assert _seconds(route["group_wait"]) <= 1
            assert _seconds(route["group_interval"]) <= 1
    (hook,) = [r for r in test["route"]["routes"] if r["receiver"] == "autoretrain-webhook"]
    assert 1 < _seconds(hook["repeat_interval"]) <= 10  # repeats happen within a test
    for route in (production["route"], *production["route"]["routes"]):
        if "group_wait" in route:
            assert _seconds(route["group_wait"]) >= 10
            assert _seconds(route["repeat_interval"]) >= 3600


@pytest.mark.parametrize("path", ALERTMANAGER_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        # A critical retrain alert: a person is told, and the webhook still retrains.
        ({"alertname": "SystemAccuracyCritical", "severity": "critical", "retrain": "full",
          "model_type": "agent_selection", "env": "prod"}, "human,autoretrain-webhook"),
        # A critical alert about the loop: a person only, never the webhook.
        ({"alertname": "AutoretrainExporterDown", "severity": "critical",
          "job": "autoretrain-exporter", "instance": "e1:9108"}, "human"),
        ({"alertname": "AnyOtherCritical", "severity": "critical"}, "human"),
        # A warning about the loop: neither a person nor the webhook, as shipped.
        ({"alertname": "AutoretrainConsumerLagHigh", "severity": "warning"}, "null"),
        # Retrains that did not help: a person, never another retrain.
        ({"alertname": "AutoretrainRetrainDidNotRecover", "severity": "critical",
          "app": "autoretrain", "env": "prod"}, "human"),
        ({"alertname": "AutoretrainRetrainsNotHelping", "severity": "critical",
          "app": "autoretrain"}, "human"),
    ],
    ids=["critical-retrain", "critical-loop", "critical-other", "warning-loop",
         "escalation-not-recovered", "escalation-not-helping"],
)
def test_amtool_routes_critical_alerts_to_a_person_as_well(
    path: Path, labels: dict[str, str], receivers: str
) -> None:
    done = run(
        "amtool", "config", "routes", "test", f"--config.file={path}",
        f"--verify.receivers={receivers}", *(f"{k}={v}" for k, v in labels.items()),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receivers


# -- a real Prometheus ------------------------------------------------------------


def test_real_prometheus_sums_two_exporter_instances(
    prometheus_factory: PrometheusFactory, tmp_path: Path
) -> None:
    """The committed rules, evaluated by Prometheus over two scraped exporters.

    Each exporter records one run and one accuracy record per series before
    the first scrape (so the series exist), then the measured batch, in
    these proportions:

    - exporter 1: planner 9 success, 1 failure; coder 10 success;
      planner accuracy 4 x 0.9
    - exporter 2: planner 20 success, 60 error, 20 timeout; accuracy 12 x 0.5

    System success = 39 / 120, planner success = 29 / 110, system errors
    = 80 / 120, mean accuracy = (3.6 + 6) / 16. rate() extrapolates each
    series a little differently, so the values converge as scrapes accumulate.
    """
    registries = [CollectorRegistry(), CollectorRegistry()]
    exporters = [AgentMetrics(registry) for registry in registries]
    # The fast collector's own rendering, in the format Prometheus negotiates (OpenMetrics).
    servers = [
        serve(metrics_app(registry, fast=[metrics]), "127.0.0.1", 0)[0]
        for registry, metrics in zip(registries, exporters, strict=True)
    ]
    try:
        for metrics, agents in zip(exporters, (("planner", "coder"), ("planner",)), strict=True):
            for agent in agents:
                metrics.record_run(agent, "llm", "success", 0.2)
                metrics.record_accuracy(agent, "human", 0.7)

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "autoretrain-exporter",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{s.server_port}" for s in servers]}
                    ],
                }
            ],
        }
        prometheus = prometheus_factory(yaml.safe_dump(config, sort_keys=False))
        # Both targets scraped at least once with the initial values.
        prometheus.wait_for(
            'count(autoretrain_agent_runs_total{status="success"} == 1)',
            lambda r: _value(r) == 3,
            30,
        )

        # Ten times the figures of the docstring: the one initial record per
        # series then skews rate()'s extrapolation by about 1% only.
        first, second = exporters
        batches = [
            (first, "planner", "success", 90),
            (first, "planner", "failure", 10),
            (first, "coder", "success", 100),
            (second, "planner", "success", 200),
            (second, "planner", "error", 600),
            (second, "planner", "timeout", 200),
        ]
        for metrics, agent, status, n in batches:
            for _ in range(n):
                metrics.record_run(agent, "llm", status, 0.5)
        for metrics, accuracy, n in ((first, 0.9, 40), (second, 0.5, 120)):
            for _ in range(n):
                metrics.record_accuracy("planner", "human", accuracy)

        def near(expected: float) -> Any:
            # Wrong aggregations miss by far more: the mean of the two
            # exporters' success ratios is 0.575, exporter 2 alone 0.2.
            return lambda r: abs(_value(r) - expected) < 0.01

        for expr, expected in [
            ("system:autoretrain_agent_runs_success:ratio_rate", 39 / 120),
            ('agent:autoretrain_agent_runs_success:ratio_rate{agent="planner"}', 29 / 110),
            ('agent:autoretrain_agent_runs_success:ratio_rate{agent="coder"}', 1.0),
            ("system:autoretrain_agent_runs_error:ratio_rate", 80 / 120),
            ("system:autoretrain_agent_prediction_accuracy_ratio:mean", 9.6 / 16),
            ('agent:autoretrain_agent_prediction_accuracy_ratio:mean{agent="planner"}', 0.6),
        ]:
            prometheus.wait_for(expr, near(expected), timeout=60)
        # One series per level: instance and job are summed away.
        assert [r["metric"] for r in prometheus.query("system:autoretrain_agent_runs:rate")] == [
            {"__name__": "system:autoretrain_agent_runs:rate"}
        ]
        assert sorted(
            r["metric"]["agent"]
            for r in prometheus.query("agent:autoretrain_agent_runs_success:ratio_rate")
        ) == ["coder", "planner"]
        # Every rule, alerts with their ALERTS self-reference included, evaluates cleanly.
        rules = _rules(prometheus.url)
        assert len(rules) == len(committed_rules())
        assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if len(result) == 1 else float("nan")


def _rules(url: str) -> list[dict[str, Any]]:
    """Every rule from /api/v1/rules, once each has been evaluated (health known)."""

    def evaluated() -> list[dict[str, Any]] | None:
        body = http_get_json(f"{url}/api/v1/rules")
        rules = [r for g in body["data"]["groups"] for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else None

    return poll_until(evaluated, timeout=10, what="every rule evaluated")
