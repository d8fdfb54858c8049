"""`docker compose up`, proven: the compose stack on a local Docker engine, end to end.

What a user gets from ``docker compose up`` runs here, with the
docker-compose.yml and Dockerfile of the repository, and the story the
README tells is observed from the host through the 127.0.0.1 ports the
compose file publishes: every health check turns healthy, nothing leaves
the compose network (an iptables rule drops it, and a probe shows it is
dropped there), the webhook takes no alert without the mounted token (a
fresh one, mode 0644 in a 0700 directory, as the README advises), the exporter
counts the platform's runs, Prometheus scrapes the exporter and the webhook
and has the rules, the platform's drift fires the retrain alert,
Alertmanager posts it to the webhook with the mounted token, the ledger
shows a promoted retrain, and the platform's routing moves away from the
agents that got worse.

The engine and the images come from ``scripts/compose-engine``: it uses a
running engine or starts Debian's dockerd (and the fixture stops that one
when done), and builds stand-ins for the official images from Debian's
packages (Docker Hub is out of reach here), tagged with the names the
compose file uses. Grafana has no stand-in: its service is the one part of
the compose file this test does not run. tests/compose/docker-compose.smoke.yml
overrides only what must differ for a CI-sized run (each line says why).

No skip: without an engine and no way to start one, the test fails and says
why. Container logs are kept on failure, in a directory the failure shows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from autoretrain.exporter.rules import render_rules
from autoretrain.exporter.thresholds import load_thresholds
from examples.platform_sim import default_scenario

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "scripts" / "compose-engine"
OVERRIDE = REPO / "tests" / "compose" / "docker-compose.smoke.yml"
# Its own project name: a user's own `docker compose up` of the same file on
# the same engine (project "autoretrain-...") is left alone.
PROJECT = "autoretrain-smoke"
# No stand-in image can be built for it here (see the module docstring).
NOT_RUN = {"grafana"}
# The published ports, as docker-compose.yml's header lists them.
EXPORTER = "http://127.0.0.1:9108"
WEBHOOK = "http://127.0.0.1:9109"
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"

T = TypeVar("T")


# -- the engine, the images, the stack ------------------------------------------------
@dataclasses.dataclass
class Stack:
    env: dict[str, str]
    compose: list[str]
    services: list[str]
    config: dict[str, Any]
    log_dir: Path
    passed: bool = False
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        result = subprocess.run([*self.compose, *args], capture_output=True, text=True,
                                env=self.env, cwd=REPO, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        return result.stdout

    def docker(self, *args: str) -> str:
        result = subprocess.run(["docker", *args], capture_output=True, text=True,
                                env=self.env, timeout=60)
        return result.stdout.strip() if result.returncode == 0 else ""

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service, check=False).strip()

    def logs(self, service: str) -> str:
        return self.run("logs", "--no-color", "--timestamps", service, check=False, timeout=120)

    def keep_logs(self) -> None:
        for service in self.services:
            (self.log_dir / f"{service}.log").write_text(self.logs(service))
            state = self.docker("inspect", "-f", "{{json .State}}", self.container(service) or "-")
            (self.log_dir / f"{service}.state.json").write_text(state + "\n")


def _engine(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """scripts/compose-engine; its progress goes to the test's output, stdout is returned."""
    try:
        result = subprocess.run([str(ENGINE), *args], capture_output=True, text=True, env=env,
                                timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/compose-engine {' '.join(args)} did not finish in {timeout:.0f} s: "
                    f"{exc.stderr!r}", pytrace=False)
    print(result.stderr, end="")
    if result.returncode != 0:
        pytest.fail(f"scripts/compose-engine {' '.join(args)} failed: the compose stack cannot run "
                    f"here.\n{result.stderr}", pytrace=False)
    return result


def _compose_command() -> list[str]:
    """Debian's docker-compose 1.29; else the `docker compose` v2 plugin."""
    binary = shutil.which("docker-compose")
    if binary:
        return [binary]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed; "
                "run scripts/install-test-deps", pytrace=False)


def _smoke_rules(directory: Path) -> None:
    """The committed thresholds, with the shorter alert timing the override explains."""
    committed = load_thresholds(REPO / "prometheus" / "thresholds.yml")
    alerts = dataclasses.replace(committed.alerts, for_="30s", rate_window="1m")
    directory.mkdir()
    # Read by Prometheus as user nobody in its container.
    directory.chmod(0o755)
    rules = directory / "autoretrain.rules.yml"
    rules.write_text(render_rules(dataclasses.replace(committed, alerts=alerts)))
    rules.chmod(0o644)


def _private_token(directory: Path) -> Path:
    """A new webhook token: mode 0644 in a 0700 directory (the README's recipe)."""
    directory.mkdir(mode=0o700)
    token = directory / "webhook-token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o644)
    return token


FENCE_COMMENT = "autoretrain-compose-smoke"


def _bridge(stack: Stack) -> str:
    """The host interface of the project's network (Docker names it br-<id prefix>)."""
    network_id = stack.docker("network", "inspect", "-f", "{{.Id}}", f"{PROJECT}_default")
    if not network_id:
        pytest.fail(f"network {PROJECT}_default not found after `up --no-start`", pytrace=False)
    return f"br-{network_id[:12]}"


def _fence(stack: Stack) -> list[str]:
    """Drop what the containers send beyond their network; the rule's spec for deletion.

    The containers need nothing outside the compose network (the host
    reaches them through the published ports, which Docker's proxy serves on
    the host side), and the test proves it: a DOCKER-USER rule drops every
    packet forwarded from the project's bridge to another interface.
    """
    bridge = _bridge(stack)
    spec = ["DOCKER-USER", "-i", bridge, "!", "-o", bridge, "-j", "DROP",
            "-m", "comment", "--comment", FENCE_COMMENT]
    result = subprocess.run(["iptables", "-I", *spec], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot fence the compose network (iptables -I {' '.join(spec)}): "
                    f"{result.stderr.strip()}", pytrace=False)
    return spec


def _fence_drops() -> int:
    """Packets the fence has dropped so far."""
    listing = subprocess.run(["iptables", "-L", "DOCKER-USER", "-v", "-n", "-x"],
                             capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[0]) for line in listing.splitlines() if FENCE_COMMENT in line)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    env = {key: value for key, value in os.environ.items()
           # The user's own choices for the stack must not leak into the test's run.
           if not key.startswith(("AUTORETRAIN_WEBHOOK_", "GRAFANA_", "COMPOSE_"))}
    out = _engine("start", env=env, timeout=600).stdout
    engine = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if engine.get("DOCKER_HOST"):
        env["DOCKER_HOST"] = engine["DOCKER_HOST"]
    engine_pid = engine.get("ENGINE_PID", "")
    timings["engine"] = time.monotonic() - started
    log_dir = Path(tempfile.mkdtemp(prefix="autoretrain-compose-smoke-"))
    stack: Stack | None = None
    fence: list[str] | None = None
    try:
        mark = time.monotonic()
        _engine("images", env=env, timeout=1800)
        timings["stand-in images"] = time.monotonic() - mark

        _smoke_rules(log_dir / "rules")
        env.update({
            "COMPOSE_PROJECT_NAME": PROJECT,
            "AUTORETRAIN_SMOKE_RULES": str(log_dir / "rules"),
            # A fresh token, kept as the README says: readable by the
            # containers' users, private through its directory.
            "AUTORETRAIN_WEBHOOK_TOKEN_FILE": str(_private_token(log_dir / "secrets")),
            # The classic builder: what Debian's docker.io has without plugins.
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
        })
        compose = [*_compose_command(), "-f", str(REPO / "docker-compose.yml"),
                   "-f", str(OVERRIDE)]
        config = yaml.safe_load(subprocess.run(
            [*compose, "config"], capture_output=True, text=True, env=env, cwd=REPO,
            check=True).stdout)
        services = sorted(set(config["services"]) - NOT_RUN)
        stack = Stack(env=env, compose=compose, services=services, config=config,
                      log_dir=log_dir, timings=timings)
        # A stack left by an interrupted run would hold the ports and volumes.
        stack.run("down", "-v", "--remove-orphans", check=False, timeout=300)
        mark = time.monotonic()
        stack.run("build", timeout=1800)
        timings["project image"] = time.monotonic() - mark
        mark = time.monotonic()
        # The network first (with one container that waits for nothing: `up
        # --no-start` of a service with depends_on conditions waits for them
        # in docker-compose 1.29, forever), so the fence is up before anything runs.
        first = next(s for s in services if not config["services"][s].get("depends_on"))
        stack.run("up", "--no-start", "--no-deps", first, timeout=300)
        fence = _fence(stack)
        stack.run("up", "-d", *services, timeout=900)
        timings["up"] = time.monotonic() - mark
        yield stack
    finally:
        if fence is not None:
            subprocess.run(["iptables", "-D", *fence], check=False, capture_output=True)
        if stack is not None:
            if not stack.passed:
                stack.keep_logs()
            stack.run("down", "-v", "--remove-orphans", check=False, timeout=300)
        if engine_pid:
            subprocess.run([str(ENGINE), "stop", engine_pid], env=env, timeout=120, check=False)
        if stack is not None and stack.passed:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"\ncompose smoke: container logs and states kept in {log_dir}")
        timings["total"] = time.monotonic() - started
        print("compose smoke timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


# -- HTTP through the published ports ------------------------------------------------
def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _json(url: str) -> Any:
    return json.loads(_get(url))


def _status(url: str, data: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(what: str, check: Callable[[], T | None], timeout: float, stack: Stack,
          interval: float = 5.0) -> T:
    """Poll ``check`` (connection errors count as "not yet") until it returns a value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value is not None:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s (last error: {last!r}); "
                                 f"container logs: {stack.log_dir}")
        time.sleep(interval)


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Samples of metric ``name`` in Prometheus text format: (labels, value)."""
    out = []
    for line in text.splitlines():
        match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
            out.append((labels, float(match.group(2))))
    return out


def _runs_by_agent() -> dict[str, float]:
    """The exporter's autoretrain_agent_runs_total, summed over status, per agent."""
    runs: dict[str, float] = {}
    exposition = _get(f"{EXPORTER}/metrics").decode()
    for labels, value in _samples(exposition, "autoretrain_agent_runs_total"):
        runs[labels["agent"]] = runs.get(labels["agent"], 0.0) + value
    return runs


def _share(before: dict[str, float], after: dict[str, float],
           agents: set[str]) -> tuple[float, float]:
    """Share of the runs between two snapshots that went to ``agents``, and the run count."""
    delta = {a: after.get(a, 0.0) - before.get(a, 0.0) for a in after}
    total = sum(delta.values())
    return (sum(v for a, v in delta.items() if a in agents) / total if total else 0.0), total


# -- the story -------------------------------------------------------------------------
@pytest.mark.timeout(3600)
def test_compose_up_alert_retrain_promote_and_route(stack: Stack) -> None:
    started = time.monotonic()
    drifted = {agent for _, agent in default_scenario().drift}

    # Every service with a health check turns healthy; every other one runs (or,
    # like kafka-init, has finished successfully).
    checked = [s for s in stack.services if "healthcheck" in stack.config["services"][s]]
    assert {"kafka", "exporter", "webhook", "prometheus", "alertmanager"} <= set(checked)

    def all_healthy() -> bool | None:
        states = {s: stack.docker("inspect", "-f", "{{.State.Health.Status}}",
                                  stack.container(s) or "-") for s in checked}
        bad = {s: h for s, h in states.items() if h == "unhealthy"}
        assert not bad, f"unhealthy: {bad}"
        return True if all(h == "healthy" for h in states.values()) else None

    _wait("every health check healthy", all_healthy, 600, stack)
    for service in set(stack.services) - set(checked):
        state = json.loads(stack.docker("inspect", "-f", "{{json .State}}",
                                        stack.container(service) or "-") or "{}")
        running = state.get("Running") or (state.get("Status") == "exited"
                                           and state.get("ExitCode") == 0)
        assert running, f"{service}: {state}"
    stack.timings["healthy"] = time.monotonic() - started

    # The containers reach nothing beyond their network: a connection out of
    # it is dropped by the fence (and counted by it: not some other failure).
    dropped = _fence_drops()
    probe = subprocess.run(
        [*stack.compose, "exec", "-T", "webhook", "python", "-c",
         "import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)"],
        capture_output=True, text=True, env=stack.env, cwd=REPO, timeout=60)
    assert probe.returncode != 0, "a container reached 1.1.1.1:443 past the fence"
    assert _fence_drops() > dropped, f"the probe failed, but not at the fence: {probe.stderr}"

    # The webhook refuses an alert without the token, or with the public demo
    # one (so the alerts it accepts later came with the mounted secret), and
    # answers its read-only endpoints.
    assert _status(f"{WEBHOOK}/alerts", b"{}", {"Content-Type": "application/json"}) == 401
    demo = (REPO / "deploy" / "webhook-token.demo").read_text().strip()
    assert _status(f"{WEBHOOK}/alerts", b"{}", {"Content-Type": "application/json",
                                                "Authorization": f"Bearer {demo}"}) == 401
    assert _json(f"{WEBHOOK}/api/performance/retraining")["total"] == 0

    # The platform goes live (after sending its history): a routing baseline
    # from the exporter's counters until the drift.
    _wait("platform live", lambda: True if "live traffic" in stack.logs("platform") else None,
          300, stack)
    baseline_start = _runs_by_agent()
    live = time.monotonic()
    _wait("exporter counts the platform's runs",
          lambda: True if sum(_runs_by_agent().values()) > sum(baseline_start.values()) else None,
          60, stack, interval=2.0)
    # The override drifts after 60 s of live traffic; stop the baseline before.
    time.sleep(max(0.0, 50.0 - (time.monotonic() - live)))
    baseline_end = _runs_by_agent()
    baseline_share, baseline_runs = _share(baseline_start, baseline_end, drifted)
    assert baseline_runs >= 40, f"only {baseline_runs} live runs counted in 50 s"

    # Prometheus: both targets up, the rules loaded.
    def targets_up() -> bool | None:
        active = _json(f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return True if (health.get("autoretrain-exporter") == "up"
                        and health.get("autoretrain-webhook") == "up") else None

    _wait("Prometheus targets exporter and webhook up", targets_up, 120, stack)
    groups = _json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    retrain_alerts = {r["name"] for r in rules
                      if r["type"] == "alerting" and "retrain" in r.get("labels", {})}
    assert {"SystemAccuracyLow", "SystemAccuracyCritical"} <= retrain_alerts, retrain_alerts
    assert any(r["type"] == "recording" for r in rules)

    # The drift fires a retrain alert in Prometheus ...
    def retrain_alert_firing() -> list[str] | None:
        alerts = _json(f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"]
        firing = [a["labels"]["alertname"] for a in alerts
                  if a["state"] == "firing" and "retrain" in a["labels"]]
        return firing or None

    firing = _wait("a retrain alert firing in Prometheus", retrain_alert_firing, 600, stack)
    stack.timings["alert firing"] = time.monotonic() - started
    # ... which Alertmanager holds and routes ...
    am_alerts = _json(f"{ALERTMANAGER}/api/v2/alerts")
    assert any(a["labels"]["alertname"] in firing for a in am_alerts), am_alerts

    # ... to the webhook, with the token: the ledger shows a promoted retrain
    # that the alert triggered.
    def promoted() -> dict[str, Any] | None:
        retrains = _json(f"{WEBHOOK}/api/performance/retraining")["retrains"]
        done = [r for r in retrains if r["trigger"] == "alert" and r["finished_at"]]
        assert not [r for r in done if r["error"]], done
        return next((r for r in done if r["promoted"]), None)

    retrain = _wait("a promoted alert-triggered retrain in the ledger", promoted, 600, stack)
    stack.timings["retrain promoted"] = time.monotonic() - started
    assert {a["alertname"] for a in retrain["alerts"]} & set(firing), retrain
    webhook_metrics = _get(f"{WEBHOOK}/metrics").decode()
    accepted = sum(v for labels, v in _samples(webhook_metrics, "autoretrain_webhook_alerts_total")
                   if labels.get("status") == "firing")
    assert accepted >= 1, "the webhook counted no firing alert"

    # The platform's routing moves: the agents that got worse serve a clearly
    # smaller share of the runs after the promoted retrain than before the drift.
    time.sleep(10)  # the platform picks a new model up within a second or two
    after_start = _runs_by_agent()
    time.sleep(60)
    after_share, after_runs = _share(after_start, _runs_by_agent(), drifted)
    assert after_runs >= 40, f"only {after_runs} runs counted in 60 s after the retrain"
    assert after_share < baseline_share / 2, (
        f"routing did not move: the drifted agents {sorted(drifted)} served "
        f"{baseline_share:.0%} of the runs before the drift and {after_share:.0%} after "
        f"retrain {retrain['id']} (model version {retrain['model_version']})")
    print(f"\ncompose smoke: retrain alerts {sorted(set(firing))}; retrain {retrain['id']} "
          f"({retrain['retrain_type']}) promoted model version {retrain['model_version']}; "
          f"drifted agents served {baseline_share:.0%} of {baseline_runs:.0f} runs before the "
          f"drift, {after_share:.0%} of {after_runs:.0f} after the retrain")
    stack.passed = True
