"""The stack demo (scripts/stack-demo) tells its story against the real servers.

One run of :func:`examples.stack_demo.play` on a started
:class:`~examples.stack_demo.Stack` (Kafka, the exporter and the webhook as
processes, Prometheus and Alertmanager); while the servers still run, the
story is checked from Prometheus's API and the webhook's ledger, not from
what the demo printed. A second test interrupts the script itself and
checks that nothing it started is left listening.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers.common import poll_until

from autoretrain.exporter.thresholds import load_thresholds
from examples.platform_sim import default_scenario
from examples.stack_demo import ACCURACY, ALERT, WEBHOOK_JOB, Stack, StackSettings, play

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "stack-demo"
THRESHOLDS = load_thresholds(REPO / "prometheus" / "thresholds.yml")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, Any]]]:
    """The demo played to completion; the stack still running for the assertions."""
    lines: list[str] = []
    stack = Stack(tmp_path_factory.mktemp("stack"), StackSettings(duration_scale=0.5))
    with stack:
        try:
            summary = play(stack, lines.append)
        except BaseException:
            print("\n".join(lines))  # the story so far, in the failure report
            raise
        print("\n".join(lines))
        yield stack, summary
    for server in (stack.kafka, stack.exporter, stack.webhook, stack.alertmanager,
                   stack.prometheus):
        assert not server.running(), f"{server.name} still running after the stack stopped"


def value(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, f"expected one series, got {result}"
    return float(result[0]["value"][1])


def test_the_accuracy_alert_fired_in_prometheus(demo: tuple[Stack, dict[str, Any]]) -> None:
    stack, summary = demo
    # Over the whole run (the live part is under two minutes with scale 0.5).
    fired = stack.query(f'max_over_time(ALERTS{{alertname="{ALERT}",alertstate="firing"}}[10m])')
    assert value(fired) == 1
    # It fired because of the systemic drop: the healthy phase was well above
    # the threshold, and the accuracy fell below it before the alert fired.
    phases = summary["phases"]
    assert phases["healthy"]["prometheus_accuracy_min"] >= 0.85
    assert phases["systemic"]["prometheus_accuracy_min"] < THRESHOLDS.thresholds.accuracy_min
    # Pending, then firing, only once the systemic drop began (not at the drift).
    assert summary["alert_path"]["alerts"][0]["t_s"] >= phases["systemic"]["start_s"]
    assert "firing" in [a["state"] for a in summary["alert_path"]["alerts"]]
    # Only the incremental one: accuracy never fell below the critical level.
    critical = stack.query('max_over_time(ALERTS{alertname="SystemAccuracyCritical"}[10m])')
    assert critical == []


def test_the_webhook_retrained_once_for_the_alert(demo: tuple[Stack, dict[str, Any]]) -> None:
    stack, _ = demo
    retrains = stack.query(
        f'sum(autoretrain_model_retrains_total{{job="{WEBHOOK_JOB}",result=~"promoted|rejected"}})')
    assert value(retrains) >= 1
    received = stack.query(
        f'sum(autoretrain_webhook_alerts_total{{job="{WEBHOOK_JOB}",alertname="{ALERT}",status="firing"}})')
    assert value(received) >= 1
    # The ledger: exactly one retrain for the one episode (Alertmanager
    # repeats the firing notification every 5 s; repeats are deduplicated).
    ledger = [r for r in stack.retrains() if r["trigger"] == "alert"]
    assert len(ledger) == 1, ledger
    (entry,) = ledger
    assert entry["outcome"] in ("promoted", "rejected")
    assert entry["retrain_type"] == "incremental"
    assert ALERT in [a["alertname"] for a in entry["alerts"]]


def test_the_platform_routed_through_the_followed_model(
        demo: tuple[Stack, dict[str, Any]]) -> None:
    """The platform's ModelFollower (on the model topic) served the webhook's versions,
    and the summary says which served each phase; after a promotion, a newer one."""
    _, summary = demo
    phases = summary["phases"]
    for name in ("healthy", "degradation", "systemic", "retrain", "recovery"):
        assert phases[name]["model_versions"], name
    versions = [v for name in ("healthy", "degradation", "systemic", "retrain", "recovery")
                for v in phases[name]["model_versions"]]
    assert versions == sorted(versions)  # never an older version after a newer one
    (retrain,) = [r for r in summary["retrains"] if r["trigger"] == "alert"]
    if retrain["outcome"] == "promoted":
        assert max(phases["recovery"]["model_versions"]) >= retrain["model_version"]


def test_accuracy_recovered_and_the_alert_resolved(demo: tuple[Stack, dict[str, Any]]) -> None:
    stack, summary = demo
    clear = THRESHOLDS.thresholds.accuracy_min + THRESHOLDS.hysteresis.accuracy
    assert value(stack.query(ACCURACY)) > clear
    assert stack.query(f'ALERTS{{alertname="{ALERT}"}}') == []
    resolved = stack.query(
        f'sum(autoretrain_webhook_alerts_total{{job="{WEBHOOK_JOB}",alertname="{ALERT}",status="resolved"}})')
    assert value(resolved) >= 1
    (retrain,) = summary["alert_path"]["retrains"]
    assert retrain["t_s"] >= summary["phases"]["systemic"]["start_s"]


def test_the_fast_path_set_the_broken_specialists_aside(
        demo: tuple[Stack, dict[str, Any]]) -> None:
    """Issue 14: the model set each broken specialist aside within a few of its
    runs, without an alert; its metric, its log line and the per-agent alert on
    the model's verdict show it."""
    stack, summary = demo
    scenario = default_scenario()
    broken = {(t, scenario.best_agents()[t]) for t in scenario.degraded_task_types}
    fast = summary["fast_path"]
    phases = summary["phases"]
    in_degradation = {(e["task_type"], e["agent"]) for e in fast["set_aside"]
                      if e["state"] == "set aside" and e["phase"] == "degradation"}
    assert broken <= in_degradation, fast["set_aside"]
    drops = value(stack.query(
        f'sum(autoretrain_model_drops_detected_total{{job="{WEBHOOK_JOB}"}})'))
    assert drops >= len(broken) and fast["drops_detected_total"] >= len(broken)
    for task_type, agent in broken:
        assert any(f"model: drop detected: {agent} on task type {task_type} set aside" in line
                   for line in fast["log_lines"]), fast["log_lines"]
    # The platform moved away from them before any retrain or system alert.
    assert not [a for a in summary["alerts"] if a["t_s"] < phases["systemic"]["start_s"]]
    assert not [r for r in summary["retrains"] if r["t_s"] < phases["systemic"]["start_s"]]
    for task_type, agent in broken:
        moved = [c for c in summary["selection_changes"]
                 if c["task_type"] == task_type and c["from"] == agent
                 and c["t_s"] < phases["systemic"]["start_s"]]
        assert moved, summary["selection_changes"]
    # The per-agent alert on the model's verdict fired for each broken agent,
    # although routing had moved away from it.
    fired = {a["agent"] for a in fast["agent_alerts"] if a["state"] == "firing"}
    assert {agent for _, agent in broken} <= fired
    series = stack.query('max_over_time(ALERTS{alertname="AgentSetAside",'
                         'alertstate="firing"}[10m])')
    assert {agent for _, agent in broken} <= {r["metric"]["agent"] for r in series}


def _exporter_runs(stack: Stack) -> float:
    with urllib.request.urlopen(f"{stack.exporter.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "autoretrain_agent_runs" for sample in family.samples
               if sample.name == "autoretrain_agent_runs_total")


def test_the_platform_feed_cli_produces_to_kafka(demo: tuple[Stack, dict[str, Any]]) -> None:
    """``python -m examples.platform_feed`` (the compose platform service), on the same stack."""
    stack, _ = demo
    before = _exporter_runs(stack)
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.platform_feed", "--kafka-servers",
         stack.kafka.bootstrap, "--model-store", str(stack.models_dir), "--runs-per-second",
         "50", "--degrade-after", "-1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The store holds the demo's model: no history, straight to live traffic.
        poll_until(lambda: True if _exporter_runs(stack) >= before + 100 else None, 30,
                   what="100 runs from the platform feed at the exporter")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "no history sent" in out and "live traffic: 50 runs/s" in out, out


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_the_script_stops_every_server_on_ctrl_c(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    # Ctrl-C as in a terminal: a runner started in the background (a script's
    # `cmd &`) ignores SIGINT, and a child inherits that, so Python would never
    # install its KeyboardInterrupt handler; reset it to the default first.
    proc = subprocess.Popen([str(SCRIPT), "--keep-logs", str(logs)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until every server is up and the story has begun
            output.append(line)
            if line.startswith("Phase 2"):
                break
        else:
            pytest.fail("the demo ended before phase 2:\n" + "".join(output))
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", "".join(output))]
        assert len(ports) == 5, output  # kafka, exporter, webhook, alertmanager, prometheus
        assert all(_listening(p) for p in ports)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(output) + rest
    assert "interrupted" in rest
    # Nothing left behind: every port is closed (a JVM may take a moment).
    poll_until(lambda: True if not any(_listening(p) for p in ports) else None, 20,
               what="every server's port closed")
    assert (logs / "kafka" / "kafka.out").is_file()  # --keep-logs kept the logs


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--help"], 0, "--duration-scale"),
    (["--duration-scale", "0"], 2, "duration_scale must be in"),
])
def test_the_script_parses_its_options(args: list[str], code: int, message: str) -> None:
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stderr
    assert message in result.stdout + result.stderr


def test_the_script_refuses_a_non_empty_log_dir(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    result = subprocess.run([sys.executable, "-m", "examples.stack_demo", "--keep-logs",
                             str(tmp_path)], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
    assert result.returncode == 2
    assert "not an empty directory" in result.stderr


def test_the_summary_reports_the_retrains_measured_effect(
        demo: tuple[Stack, dict[str, Any]]) -> None:
    """The webhook measured the alert retrain's effect (20 s windows in the demo): the
    summary has it, as the ledger and the metrics do."""
    stack, summary = demo
    (retrain,) = [r for r in summary["retrains"] if r["trigger"] == "alert"]
    effect = retrain["effect"]
    assert effect["verdict"] in ("improved", "unchanged", "worse", "not_enough_data")
    assert effect["window_seconds"] == 20
    for name, delta in effect["delta"].items():
        if delta is not None:
            assert delta == pytest.approx(effect["after"][name] - effect["before"][name],
                                          abs=1e-5)
    (ledger,) = [r for r in stack.retrains() if r["id"] == retrain["id"]]
    assert ledger["effect"] == effect
    measured = stack.query(f'sum(autoretrain_retrain_effects_total{{job="{WEBHOOK_JOB}",'
                           f'trigger="alert",verdict="{effect["verdict"]}"}})')
    assert value(measured) == 1
