"""The autonomous retraining loop against the real servers, in real time.

``scripts/stack-demo`` runs this module. It starts, as local processes on
free 127.0.0.1 ports and with the project's own configuration:

* Kafka (single-node KRaft from the Maven jars of ``scripts/install-kafka``),
  topic ``agent-outcomes``;
* the standalone exporter (``python -m autoretrain.exporter``), consuming the topic;
* the webhook (``python -m autoretrain.webhook``): Bearer token from a file, its
  updater consuming the topic, a model store and a ledger in the work dir;
* Alertmanager with ``prometheus/alertmanager.test.yml`` (the production
  routing with intervals of seconds), pointed at the webhook;
* Prometheus with ``prometheus/prometheus.yml`` (1 s scrape and evaluation,
  targets rewritten) and the rules generated from ``prometheus/thresholds.yml``
  with a short ``for`` and rate window (5 s / 15 s instead of 2 m / 5 m).

Then a simulated platform (:mod:`examples.platform_feed`, in a thread) sends
an hour of history and live traffic, routed by the webhook's model through
the product's :class:`~autoretrain.ModelFollower` on the model topic
``agent-models`` (the webhook publishes every saved version there), and the
demo prints the story as Prometheus and the
webhook tell it: healthy; three specialists break and the webhook's model
sets them aside within a few runs (the fast path: its metric, its log
line, and the per-agent ``AgentSetAside`` alert that fires although the
agents no longer get traffic); a systemic drop no routing can fix, the
system alert firing and the webhook retraining (the alert path);
recovery once the systemic drop is over. Everything it started is stopped at the end, on
Ctrl-C and on errors.

The server classes are the tests' (``tests/servers``): one implementation of
"start a real Kafka / Prometheus / Alertmanager on a free port, wait until
ready, stop" for the tests and for this demo.

Run::

    scripts/stack-demo [--duration-scale X] [--keep-logs DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: import this repository's packages
    sys.path.insert(0, str(REPO))
# The real-server classes live with the tests (tests/servers) and are reused
# here rather than copied: tests/ goes on the path so `servers` imports as in
# tests/conftest.py.
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from servers import (  # noqa: E402
    AlertmanagerServer,
    KafkaServer,
    PrometheusServer,
    ServerProcess,
    free_port,
)
from servers.common import http_get_json, http_ok, poll_until  # noqa: E402

from autoretrain import ModelFollower  # noqa: E402
from autoretrain.exporter import PerformanceMonitor  # noqa: E402
from autoretrain.exporter.rules import render_rules  # noqa: E402
from autoretrain.exporter.thresholds import load_thresholds  # noqa: E402
from examples.platform_feed import (  # noqa: E402
    FeedClock,
    FeedSettings,
    PlatformFeed,
    events_seen,
    selection,
)

__all__ = ["PythonService", "Stack", "StackSettings", "main", "play"]

log = logging.getLogger(__name__)

TOPIC = "agent-outcomes"
MODEL_TOPIC = "agent-models"
ACCURACY = "system:autoretrain_agent_prediction_accuracy_ratio:mean"
WEBHOOK_JOB = "autoretrain-webhook"
EXPORTER_JOB = "autoretrain-exporter"
RETRAINS = f'sum by (result) (autoretrain_model_retrains_total{{job="{WEBHOOK_JOB}"}})'
SYSTEM_ALERTS = 'ALERTS{alertname=~"System.*"}'
WEBHOOK_ALERTS = ("sum by (alertname, status, action) "
                  f'(autoretrain_webhook_alerts_total{{job="{WEBHOOK_JOB}"}})')
ALERT = "SystemAccuracyLow"
DROPS = f'sum(autoretrain_model_drops_detected_total{{job="{WEBHOOK_JOB}"}})'
SET_ASIDE = f'autoretrain_model_pair_set_aside{{job="{WEBHOOK_JOB}"}}'
AGENT_ALERT = "AgentSetAside"
AGENT_ALERTS = f'ALERTS{{alertname="{AGENT_ALERT}"}}'


@dataclass(frozen=True)
class StackSettings:
    """The demo's parameters (real seconds).

    ``duration_scale`` multiplies the phases the demo chooses the length of
    (healthy, recovery hold); the alert and the retrain take the time the
    rules and servers take.
    """

    seed: int = 7
    runs_per_second: float = 10.0
    history_minutes: float = 60.0
    healthy_seconds: float = 20.0
    # After the alert has resolved: keep the traffic going this long, so the
    # recovered accuracy is a steady value, not the moment it crossed the line.
    recovery_hold_seconds: float = 10.0
    duration_scale: float = 1.0
    # Rules: a 15 s rate window holds 15 scrapes at 1 s, and a 5 s `for`
    # rides out a single low evaluation (production: 5m and 2m).
    rate_window_seconds: int = 15
    alert_for_seconds: int = 5
    # Webhook. 40-event batches give a 400-event retraining buffer (the
    # updater keeps 10 batches), about the 20 s between the drift and the
    # alert at 10 runs/s: the retrain learns from degraded traffic, as the
    # embedded demo's buffer of one monitor window does. Models are saved
    # every second so the platform sees what the stream taught the model.
    batch_size: int = 40
    batch_timeout_seconds: float = 1.0
    save_interval_seconds: float = 1.0
    cooldown_seconds: float = 30.0
    # Did the retrain help? The webhook compares 20 s of outcomes before the
    # retrain with 20 s after it (production: 15 min), 2 s after they end.
    effect_window_seconds: float = 20.0
    effect_settle_seconds: float = 2.0
    # Retries of agents set aside: production waits 600 s of event time; the
    # demo's time is real, so 20 s (as its rule windows are seconds, not
    # minutes), else the agents set aside in the systemic drop would come back
    # ten minutes after it is over.
    retry_after_seconds: float = 20.0
    # Deadlines: a phase that has not reached its goal by then fails the demo.
    start_timeout_seconds: float = 120.0
    phase_timeout_seconds: float = 120.0
    poll_seconds: float = 0.5
    status_every_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.duration_scale) and 0.1 <= self.duration_scale <= 100):
            raise ValueError(f"duration_scale must be in [0.1, 100], got {self.duration_scale!r}")

    def scaled(self, seconds: float) -> float:
        return seconds * self.duration_scale


# -- the servers ------------------------------------------------------------
class PythonService(ServerProcess):
    """One of this repository's entry points (``python -m MODULE``) as a local process.

    Environment variables are passed through ``env`` on the command line
    because :class:`ServerProcess` launches with the inherited environment.
    """

    def __init__(self, name: str, workdir: Path, module: str, args: Sequence[str], port: int,
                 env: dict[str, str] | None = None, ready_path: str = "/readyz") -> None:
        self.name = name  # before super().__init__, which names the log file after it
        super().__init__(workdir)
        self.module = module
        self.args = list(args)
        self.port = port
        self.env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.ready_path = ready_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> Sequence[str]:
        env = [f"{k}={v}" for k, v in self.env.items()]
        return ["env", *env, sys.executable, "-m", self.module, *self.args]

    def _ready(self) -> bool:
        return http_ok(self.url + self.ready_path)


class Stack:
    """Kafka, the exporter, the webhook, Alertmanager and Prometheus in ``workdir``.

    A context manager: ``__enter__`` starts everything (in dependency
    order), ``__exit__`` stops whatever was started, in reverse.
    """

    def __init__(self, workdir: Path, settings: StackSettings | None = None) -> None:
        self.workdir = workdir
        self.settings = settings or StackSettings()
        s = self.settings
        self.token_file = workdir / "webhook-token"
        self.models_dir = workdir / "webhook" / "models"
        self.ledger_path = workdir / "webhook" / "ledger.sqlite3"
        self.rules_path = workdir / "prometheus" / "autoretrain.rules.yml"
        self.kafka = KafkaServer(workdir / "kafka")
        exporter_port = free_port()
        self.exporter = PythonService(
            "exporter", workdir / "exporter", "exporter",
            ["--kafka-servers", self.kafka.bootstrap, "--topic", TOPIC,
             "--listen-address", "127.0.0.1", "--port", str(exporter_port)],
            port=exporter_port)
        webhook_port = free_port()
        self.webhook = PythonService(
            "webhook", workdir / "webhook", "webhook", [], port=webhook_port,
            env={
                "AUTORETRAIN_WEBHOOK_HOST": "127.0.0.1",
                "AUTORETRAIN_WEBHOOK_PORT": str(webhook_port),
                "AUTORETRAIN_WEBHOOK_TOKEN_FILE": str(self.token_file),
                "AUTORETRAIN_WEBHOOK_LEDGER_PATH": str(self.ledger_path),
                "AUTORETRAIN_WEBHOOK_MODEL_STORAGE_PATH": str(self.models_dir),
                "AUTORETRAIN_WEBHOOK_KAFKA_SERVERS": self.kafka.bootstrap,
                "AUTORETRAIN_WEBHOOK_KAFKA_TOPIC": TOPIC,
                "AUTORETRAIN_WEBHOOK_MODEL_TOPIC": MODEL_TOPIC,
                "AUTORETRAIN_WEBHOOK_BATCH_SIZE": str(s.batch_size),
                "AUTORETRAIN_WEBHOOK_BATCH_TIMEOUT_SECONDS": str(s.batch_timeout_seconds),
                "AUTORETRAIN_WEBHOOK_SAVE_INTERVAL_SECONDS": str(s.save_interval_seconds),
                "AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS": str(s.cooldown_seconds),
                "AUTORETRAIN_WEBHOOK_EFFECT_WINDOW_SECONDS": str(s.effect_window_seconds),
                "AUTORETRAIN_WEBHOOK_EFFECT_SETTLE_SECONDS": str(s.effect_settle_seconds),
                "AUTORETRAIN_WEBHOOK_RETRY_AFTER_SECONDS": str(s.retry_after_seconds),
            })
        am_dir = workdir / "alertmanager"
        self.alertmanager = AlertmanagerServer(am_dir, am_dir / "alertmanager.yml")
        prom_dir = workdir / "prometheus"
        self.prometheus = PrometheusServer(prom_dir, prom_dir / "prometheus.yml",
                                           port=free_port())
        self._started: list[ServerProcess] = []

    # -- configuration -------------------------------------------------------
    def _write_configs(self) -> None:
        s = self.settings
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        # The secret is only ever in this file (mode 0600), read by the
        # webhook and by Alertmanager; never on a command line.
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")

        thresholds = load_thresholds(REPO / "prometheus" / "thresholds.yml")
        alerts = dataclasses.replace(thresholds.alerts, for_=f"{s.alert_for_seconds}s",
                                     rate_window=f"{s.rate_window_seconds}s")
        self.rules_path.parent.mkdir(parents=True, exist_ok=True)
        self.rules_path.write_text(render_rules(dataclasses.replace(thresholds, alerts=alerts)))

        am = yaml.safe_load((REPO / "prometheus" / "alertmanager.test.yml").read_text())
        hooks = [h for r in am["receivers"] for h in r.get("webhook_configs", [])]
        if len(hooks) != 1:
            raise RuntimeError("prometheus/alertmanager.test.yml should have one webhook receiver")
        hooks[0]["url"] = f"{self.webhook.url}/alerts"
        hooks[0]["http_config"]["authorization"]["credentials_file"] = str(self.token_file)
        self.alertmanager.config.parent.mkdir(parents=True, exist_ok=True)
        self.alertmanager.config.write_text(yaml.safe_dump(am, sort_keys=False))

        prom = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
        prom["global"].update(scrape_interval="1s", evaluation_interval="1s",
                              scrape_timeout="1s")
        prom["rule_files"] = [str(self.rules_path)]
        prom["alerting"]["alertmanagers"] = [
            {"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager.port}"]}]}]
        targets = {"prometheus": self.prometheus.port, EXPORTER_JOB: self.exporter.port,
                   WEBHOOK_JOB: self.webhook.port, "alertmanager": self.alertmanager.port}
        for job in prom["scrape_configs"]:
            name = job["job_name"]
            if name not in targets:
                raise RuntimeError(f"prometheus/prometheus.yml has a job {name!r} the demo "
                                   f"does not know; known: {', '.join(targets)}")
            job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[name]}"]}]
        self.prometheus.config.write_text(yaml.safe_dump(prom, sort_keys=False))

    # -- lifecycle -----------------------------------------------------------
    def _start(self, server: ServerProcess, timeout: float | None = None) -> None:
        self._started.append(server)
        server.start(timeout)

    def start(self, emit: Callable[[str], None] | None = None) -> None:
        """Write the configs and start the servers; raise ServerStartError on failure."""
        emit = emit or (lambda line: None)
        self._write_configs()
        self._start(self.kafka)
        self.kafka.create_topic(TOPIC, partitions=1)
        emit(f"  kafka         {self.kafka.bootstrap}  (KRaft, topic {TOPIC})")
        self._start(self.exporter)
        emit(f"  exporter      {self.exporter.url}/metrics  (python -m autoretrain.exporter)")
        self._start(self.webhook)
        emit(f"  webhook       {self.webhook.url}  (python -m autoretrain.webhook; token file, "
             f"model store {self.models_dir})")
        self._start(self.alertmanager)
        emit(f"  alertmanager  {self.alertmanager.url}  (prometheus/alertmanager.test.yml)")
        self._start(self.prometheus)
        s = self.settings
        emit(f"  prometheus    {self.prometheus.url}  (prometheus/prometheus.yml, scrape 1s; "
             f"rules with for {s.alert_for_seconds}s, rate window {s.rate_window_seconds}s)")

    def stop(self) -> None:
        """Stop every started server, newest first; never raises for one that failed."""
        while self._started:
            server = self._started.pop()
            try:
                server.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", server.name)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- reading -------------------------------------------------------------
    def query(self, expr: str) -> list[dict[str, Any]]:
        """Prometheus instant query (the API's ``result`` list)."""
        return self.prometheus.query(expr)

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def retrains(self) -> list[dict[str, Any]]:
        """The webhook's ledger of retrains, oldest first (GET /api/performance/retraining)."""
        body = http_get_json(f"{self.webhook.url}/api/performance/retraining?"
                             + urllib.parse.urlencode({"limit": 100}))
        return list(reversed(body["retrains"]))

    def webhook_log_lines(self, offset: int, contains: str) -> tuple[list[str], int]:
        """Complete lines of the webhook's log after byte ``offset`` that contain
        ``contains``, and the offset to read on from (a line still being
        written is read next time)."""
        try:
            with self.webhook.log_path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        complete = data[: data.rfind(b"\n") + 1]
        lines = [line.strip() for line in complete.decode("utf-8", "replace").splitlines()
                 if contains in line]
        return lines, offset + len(complete)

    def webhook_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = http_get_json(f"{self.webhook.url}/api/performance/stats")
        return stats


# -- the story --------------------------------------------------------------
def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _clock(seconds: float) -> str:
    minutes, sec = divmod(max(0, round(seconds)), 60)
    return f"+{minutes}:{sec:02d}"


@dataclass
class _Watch:
    """What the demo has seen so far; printed as it changes."""

    t0: float = field(default_factory=time.monotonic)
    phase: str = "history"
    alerts: dict[str, str] = field(default_factory=dict)  # alertname -> state
    alert_log: list[dict[str, Any]] = field(default_factory=list)
    retrain_ids: set[int] = field(default_factory=set)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    retrain_counts: dict[str, float] = field(default_factory=dict)
    webhook_actions: set[tuple[str, str, str]] = field(default_factory=set)
    selection: dict[str, str] = field(default_factory=dict)
    selection_changes: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    last_status: float = -math.inf
    # The fast path: pairs set aside (as Prometheus shows them), the counter,
    # the webhook's log lines, and the per-agent alert on the model's verdict.
    set_aside: dict[tuple[str, str], float] = field(default_factory=dict)  # pair -> t_s
    set_aside_log: list[dict[str, Any]] = field(default_factory=list)
    drops_detected: float = 0.0
    fast_log: list[str] = field(default_factory=list)
    log_offset: int = 0
    agent_alerts: dict[str, str] = field(default_factory=dict)  # agent -> state
    agent_alert_log: list[dict[str, Any]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0


class _Story:
    """Drives the feed through the phases and narrates what the servers report."""

    def __init__(self, stack: Stack, feed: PlatformFeed, monitor: PerformanceMonitor,
                 follower: ModelFollower, emit: Callable[[str], None],
                 feed_error: list[BaseException]) -> None:
        self.stack = stack
        self.monitor = monitor
        self.s = stack.settings
        self.feed = feed
        self.follower = follower
        self.emit = emit
        self.feed_error = feed_error
        self.w = _Watch()
        config = load_thresholds(REPO / "prometheus" / "thresholds.yml")
        self.threshold = config.thresholds
        # Where a firing accuracy alert clears (the rules' hysteresis).
        self.clear_level = config.thresholds.accuracy_min + config.hysteresis.accuracy
        self.task_types = feed.scenario.task_types

    def line(self, text: str) -> None:
        self.emit(f"{_clock(self.w.now()):>7}  {text}")

    def begin(self, phase: str, title: str) -> None:
        self.w.phase = phase
        self.w.phases[phase] = {"start_s": round(self.w.now(), 1)}
        self.emit("")
        self.emit(title)

    def end(self, phase: str) -> None:
        self.w.phases[phase]["end_s"] = round(self.w.now(), 1)

    # -- observation ---------------------------------------------------------
    def observe(self) -> None:
        """One look at Prometheus, the webhook and the platform; narrate changes."""
        if self.feed_error:
            raise RuntimeError("the platform feed failed") from self.feed_error[0]
        w = self.w
        accuracy = self.stack.scalar(ACCURACY)
        platform = self.feed.recent_accuracy(self.s.rate_window_seconds)
        w.samples.append({"t_s": round(w.now(), 1), "phase": w.phase,
                          "prometheus_accuracy": accuracy, "platform_accuracy": platform,
                          "model_version": self.follower.version})

        firing = {r["metric"]["alertname"]: r["metric"]["alertstate"]
                  for r in self.stack.query(SYSTEM_ALERTS)}
        for name in sorted(set(firing) | set(w.alerts)):
            before, after = w.alerts.get(name), firing.get(name)
            if before != after:
                state = after or "resolved"
                w.alert_log.append({"t_s": round(w.now(), 1), "alertname": name,
                                    "state": state, "accuracy": accuracy})
                self.line(f"ALERT {name} {state} (Prometheus ALERTS; accuracy "
                          f"{_fmt(accuracy)})")
        w.alerts = firing

        for entry in self.stack.retrains():
            if entry["id"] in w.retrain_ids or entry["outcome"] not in (
                    "promoted", "rejected", "skipped", "failed"):
                continue
            w.retrain_ids.add(entry["id"])
            entry = {**entry, "t_s": round(w.now(), 1)}
            w.retrains.append(entry)
            names = ", ".join(a.get("alertname", "?") for a in entry.get("alerts") or [])
            scores = ""
            if entry.get("candidate_score") is not None:
                scores = (f", candidate {entry['candidate_score']:.3f} vs serving "
                          f"{entry['serving_score']:.3f} on held-out events")
            self.line(f"WEBHOOK retrain #{entry['id']} by {entry['trigger']}"
                      f"{f' ({names})' if names else ''}: {entry['retrain_type']}, "
                      f"{entry['outcome']}, {entry['events_processed']} buffered events"
                      f"{scores}, model version {entry['model_version']}")

        self._observe_effects()

        for r in self.stack.query(WEBHOOK_ALERTS):
            m = r["metric"]
            key = (m.get("alertname", "?"), m.get("status", "?"), m.get("action", "?"))
            if key not in w.webhook_actions and float(r["value"][1]) > 0:
                # First of each kind only: Alertmanager repeats a firing alert
                # every few seconds, and the webhook counts each repeat.
                w.webhook_actions.add(key)
                self.line(f"PROMETHEUS autoretrain_webhook_alerts_total{{alertname=\"{key[0]}\", "
                          f"status=\"{key[1]}\", action=\"{key[2]}\"}} "
                          f"= {float(r['value'][1]):g}")

        self._observe_fast_path()

        counts = {r["metric"].get("result", "?"): float(r["value"][1])
                  for r in self.stack.query(RETRAINS)}
        if counts != w.retrain_counts and any(counts.values()):
            shown = ", ".join(f'{k}="{v:g}"' for k, v in sorted(counts.items()) if v)
            self.line(f"PROMETHEUS autoretrain_model_retrains_total by result: {shown}")
        w.retrain_counts = counts

        chosen = selection(self.follower, self.task_types)
        for task_type, agent in chosen.items():
            before = w.selection.get(task_type)
            if before is not None and before != agent and w.phase != "history":
                w.selection_changes.append({"t_s": round(w.now(), 1), "task_type": task_type,
                                            "from": before, "to": agent})
                self.line(f"platform  {task_type}: {before} -> {agent} "
                          f"(model version {self.follower.version})")
        w.selection = chosen

        if w.now() - w.last_status >= self.s.status_every_seconds:
            w.last_status = w.now()
            active = ", ".join(f"{k} {v}" for k, v in sorted(firing.items())) or "none"
            self.line(f"[{w.phase}] accuracy {_fmt(accuracy)} (Prometheus, "
                      f"{self.s.rate_window_seconds}s window) | platform {_fmt(platform)} | "
                      f"model v{self.follower.version} | system alerts: {active}")

    def _observe_effects(self) -> None:
        """Narrate each retrain's measured effect once the webhook's ledger has it."""
        seen = {r["id"]: r for r in self.w.retrains}
        for entry in self.stack.retrains():
            mine = seen.get(entry["id"])
            if mine is None or mine.get("effect") is not None or entry.get("effect") is None:
                continue
            mine["effect"] = effect = entry["effect"]
            figures = ", ".join(
                f"{name.replace('_', ' ')} {effect['before'][name]:.3f} -> "
                f"{effect['after'][name]:.3f}"
                for name in ("success_rate", "accuracy") if effect["delta"][name] is not None)
            self.line(f"WEBHOOK retrain #{entry['id']} effect ({effect['window_seconds']:g} s "
                      f"before / after): {effect['verdict'].replace('_', ' ')}"
                      + (f" ({figures})" if figures else ""))
    def _observe_fast_path(self) -> None:
        """The model's set-aside pairs, its drop counter, the webhook's log
        lines of the drop detector and the AgentSetAside alert; narrate changes."""
        w = self.w
        now = {(r["metric"].get("task_type", "?"), r["metric"].get("agent", "?"))
               for r in self.stack.query(SET_ASIDE)}
        for pair in sorted(now - set(w.set_aside)):
            w.set_aside[pair] = round(w.now(), 1)
            w.set_aside_log.append({"t_s": round(w.now(), 1), "phase": w.phase,
                                    "task_type": pair[0], "agent": pair[1], "state": "set aside"})
            self.line(f"PROMETHEUS {SET_ASIDE[:-1]}, task_type=\"{pair[0]}\", "
                      f"agent=\"{pair[1]}\"}} = 1")
        for pair in sorted(set(w.set_aside) - now):
            del w.set_aside[pair]
            w.set_aside_log.append({"t_s": round(w.now(), 1), "phase": w.phase,
                                    "task_type": pair[0], "agent": pair[1], "state": "restored"})
            self.line(f"model: {pair[1]} on {pair[0]} is no longer set aside")
        drops = self.stack.scalar(DROPS) or 0.0
        if drops != w.drops_detected:
            self.line(f"PROMETHEUS autoretrain_model_drops_detected_total = {drops:g}")
            w.drops_detected = drops
        lines, w.log_offset = self.stack.webhook_log_lines(w.log_offset, "model: drop detected")
        for line in lines:
            w.fast_log.append(line)
            self.line(f"WEBHOOK LOG {line}")
        firing = {r["metric"].get("agent", "?"): r["metric"]["alertstate"]
                  for r in self.stack.query(AGENT_ALERTS)}
        for agent in sorted(set(firing) | set(w.agent_alerts)):
            before, after = w.agent_alerts.get(agent), firing.get(agent)
            if before != after:
                state = after or "resolved"
                w.agent_alert_log.append({"t_s": round(w.now(), 1), "phase": w.phase,
                                          "agent": agent, "state": state})
                self.line(f"ALERT {AGENT_ALERT} {state} for agent {agent} (Prometheus ALERTS)")
        w.agent_alerts = firing

    def until(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        """Observe until ``check()``; return the seconds it took; TimeoutError after ``timeout``."""
        started = time.monotonic()

        def step() -> bool | None:
            self.observe()
            return True if check() else None

        poll_until(step, timeout, interval=self.s.poll_seconds, what=what)
        return time.monotonic() - started

    def hold(self, seconds: float) -> None:
        """Observe for ``seconds``."""
        deadline = time.monotonic() + seconds
        self.until(lambda: time.monotonic() >= deadline, seconds + 60.0, "hold")

    # -- phases --------------------------------------------------------------
    def state(self, name: str) -> str | None:
        return self.w.alerts.get(name)

    def accuracy_above(self, level: float) -> bool:
        last = self.w.samples[-1]["prometheus_accuracy"] if self.w.samples else None
        return last is not None and last >= level

    def play(self, stop: threading.Event, start_feed: Callable[[], None]) -> None:
        s = self.s
        t = self.threshold
        share = self.feed.settings.history_explore_share
        self.begin("history", f"Phase 2: {s.history_minutes:g} minutes of platform history "
                              "(past time stamps; the true best agents serve, "
                              f"{share:.0%} go to a random agent)")
        runs = self.feed.write_history(s.history_minutes)
        published = int(self.monitor.get_stats()["events_published"])
        self.line(f"sent {runs} runs ({published} events) to Kafka")

        def learnt() -> bool:
            # The live traffic must be routed by a model that learnt the history
            # (the follower loads each version the webhook publishes, on its thread).
            return events_seen(self.follower) >= published

        self.until(learnt, s.phase_timeout_seconds, "the webhook's model has learnt the history")
        self.line(f"the webhook learnt it: model version {self.follower.version} "
                  f"({events_seen(self.follower)} events), followed over the model topic")
        self.line("serving: " + ", ".join(f"{k} -> {v}" for k, v in self.w.selection.items()))
        self.end("history")

        self.begin("healthy", f"Phase 3: healthy live traffic, {s.runs_per_second:g} runs/s "
                              "routed by the webhook's model")
        self.w.t0 = time.monotonic()
        self.w.last_status = -math.inf
        self.w.phases["healthy"]["start_s"] = 0.0
        start_feed()
        self.until(lambda: self.accuracy_above(t.accuracy_min + 0.1), s.phase_timeout_seconds,
                   "healthy accuracy in Prometheus")
        self.hold(s.scaled(s.healthy_seconds))
        self.end("healthy")

        scenario = self.feed.scenario
        broken = {(tt, scenario.best_agents()[tt]) for tt in scenario.degraded_task_types}
        self.begin("degradation", "Phase 4: degradation (three specialists get worse): the fast "
                                  "path, the model sets them aside within a few runs")
        self.feed.request_degrade()
        self.line("drift: " + ", ".join(f"{a} on {tt}" for tt, a in scenario.drift)
                  + " get worse")
        self.until(lambda: broken <= set(self.w.set_aside)
                   and all(self.w.selection.get(tt) != a for tt, a in broken),
                   s.phase_timeout_seconds,
                   "the webhook's model set the broken specialists aside, the platform moved")
        # The per-agent alert on the model's verdict fires although the broken
        # agents get (almost) no traffic any more.
        self.until(lambda: all(self.w.agent_alerts.get(a) == "firing" for _, a in broken),
                   s.phase_timeout_seconds, f"{AGENT_ALERT} firing for the broken agents")
        self.end("degradation")

        self.begin("systemic", "Phase 5: a systemic drop (a service every LLM agent uses "
                               "degrades): the alert path")
        self.feed.request_systemic()
        self.line(f"systemic drop: every {scenario.systemic_agent_type} agent's accuracy falls "
                  f"to {scenario.systemic_accuracy_factor:.0%} of what it was")
        self.until(lambda: self.state(ALERT) == "firing", s.phase_timeout_seconds,
                   f"{ALERT} firing in Prometheus")
        self.end("systemic")

        self.begin("retrain", "Phase 6: Alertmanager posts the alert, the webhook retrains")
        self.until(lambda: any(r["trigger"] == "alert" for r in self.w.retrains),
                   s.phase_timeout_seconds, "an alert-triggered retrain in the webhook's ledger")
        self.until(lambda: sum(v for k, v in self.w.retrain_counts.items()
                               if k in ("promoted", "rejected")) >= 1,
                   s.phase_timeout_seconds, "autoretrain_model_retrains_total in Prometheus")
        self.end("retrain")

        self.begin("recovery", "Phase 7: recovery (the service is fixed; agents set aside "
                               "meanwhile are retried)")
        self.feed.request_systemic(False)
        self.line("the service is fixed: LLM agents are as before the systemic drop")
        clear = self.clear_level
        self.until(lambda: self.state(ALERT) is None and self.accuracy_above(clear),
                   s.phase_timeout_seconds, f"{ALERT} resolved and accuracy above {clear:g}")
        self.hold(s.scaled(s.recovery_hold_seconds))
        self.end("recovery")

        self.begin("effect", "Phase 7: did the retrain help? The webhook measures it")
        self.until(lambda: all(r.get("effect") is not None for r in self.w.retrains),
                   s.phase_timeout_seconds + s.effect_window_seconds,
                   "the effect of every retrain in the webhook's ledger")
        self.end("effect")
        stop.set()

    def summary(self) -> dict[str, Any]:
        w = self.w
        phases: dict[str, Any] = {}
        for name, bounds in w.phases.items():
            values = [x["prometheus_accuracy"] for x in w.samples
                      if x["phase"] == name and x["prometheus_accuracy"] is not None]
            # Which model versions routed the platform's traffic in this phase.
            versions = sorted({x["model_version"] for x in w.samples
                               if x["phase"] == name and x["model_version"] is not None})
            phases[name] = {**bounds,
                            "model_versions": versions,
                            "prometheus_accuracy_min": min(values) if values else None,
                            "prometheus_accuracy_max": max(values) if values else None,
                            "prometheus_accuracy_last": values[-1] if values else None}
        return {
            "accuracy_threshold": self.threshold.accuracy_min,
            # Unix time of t_s = 0, to relate the story to the ledger's timestamps.
            "t0_unix": time.time() - w.now(),
            "phases": phases,
            "alerts": w.alert_log,
            "retrains": w.retrains,
            "autoretrain_model_retrains_total": w.retrain_counts,
            "selection_changes": w.selection_changes,
            "selection_final": w.selection,
            # Issue 14: the two paths, as Prometheus and the webhook showed them.
            "fast_path": {
                "drops_detected_total": w.drops_detected,
                "set_aside": w.set_aside_log,
                "log_lines": w.fast_log,
                "agent_alerts": w.agent_alert_log,
            },
            "alert_path": {
                "alerts": [a for a in w.alert_log if a["alertname"] == ALERT],
                "retrains": [r for r in w.retrains if r["trigger"] == "alert"],
            },
            "samples": w.samples,
        }


def play(stack: Stack, emit: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the scenario on a started ``stack``; return the summary.

    Raises TimeoutError when a phase does not reach its goal in time.
    """
    s = stack.settings
    emit = emit or (lambda line: None)
    clock = FeedClock()
    monitor = PerformanceMonitor(window_size_minutes=5, enable_auto_retraining=False,
                                 kafka_servers=stack.kafka.bootstrap, kafka_topic=TOPIC,
                                 clock=clock)
    # The platform embeds the product's follower on the model topic, as a
    # production orchestrator replica would.
    follower = ModelFollower(kafka_servers=stack.kafka.bootstrap, topic=MODEL_TOPIC, seed=s.seed)
    follower.start()
    feed = PlatformFeed(monitor, follower,
                        FeedSettings(seed=s.seed, runs_per_second=s.runs_per_second,
                                     history_minutes=s.history_minutes), clock)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run_feed() -> None:
        try:
            feed.run(stop)
        except BaseException as exc:  # reported by the story's next observation
            log.exception("platform feed failed")
            errors.append(exc)

    thread = threading.Thread(target=run_feed, name="platform-feed", daemon=True)
    story = _Story(stack, feed, monitor, follower, emit, errors)
    started = time.monotonic()
    try:
        story.play(stop, thread.start)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(10)
        follower.stop()
        monitor.stop()
    summary = story.summary()
    summary["settings"] = asdict(s)
    summary["live_seconds"] = round(time.monotonic() - started, 1)
    return summary


def _print_summary(summary: dict[str, Any], emit: Callable[[str], None]) -> None:
    emit("")
    emit("Summary (system accuracy from Prometheus, "
         f"threshold {summary['accuracy_threshold']:.2f})")
    emit(f"  {'phase':<13}{'from':>7}{'to':>7}{'min':>8}{'max':>8}{'last':>8}"
         "  model versions serving")
    for name, p in summary["phases"].items():
        if name == "history":
            continue
        versions = p.get("model_versions") or []
        served = ("none" if not versions else f"v{versions[0]}" if len(versions) == 1
                  else f"v{versions[0]}..v{versions[-1]} ({len(versions)})")
        emit(f"  {name:<13}{_clock(p['start_s']):>7}{_clock(p.get('end_s', 0)):>7}"
             f"{_fmt(p['prometheus_accuracy_min']):>8}{_fmt(p['prometheus_accuracy_max']):>8}"
             f"{_fmt(p['prometheus_accuracy_last']):>8}  {served}")
    fast = summary["fast_path"]
    emit(f"  fast path: autoretrain_model_drops_detected_total = "
         f"{fast['drops_detected_total']:g}; set aside:")
    for e in fast["set_aside"]:
        emit(f"  {_clock(e['t_s']):>7} {e['state']}: {e['agent']} on {e['task_type']} "
             f"({e['phase']})")
    for a in fast["agent_alerts"]:
        emit(f"  {_clock(a['t_s']):>7} alert {AGENT_ALERT} {a['state']} for {a['agent']}")
    emit(f"  alert path: {len(summary['alert_path']['retrains'])} alert-triggered retrain(s)")
    for a in summary["alerts"]:
        emit(f"  {_clock(a['t_s']):>7} alert {a['alertname']} {a['state']}")
    for r in summary["retrains"]:
        emit(f"  {_clock(r['t_s']):>7} retrain #{r['id']} by {r['trigger']}: "
             f"{r['retrain_type']}, {r['outcome']}")
        effect = r.get("effect")
        if effect is not None:
            deltas = ", ".join(f"{k.replace('_', ' ')} {v:+.3f}"
                               for k, v in effect["delta"].items() if v is not None)
            emit(f"  {'':>7} its effect: {effect['verdict'].replace('_', ' ')}"
                 + (f" ({deltas})" if deltas else ""))
    emit("  serving at the end: " + ", ".join(
        f"{k} -> {v}" for k, v in summary["selection_final"].items()))


# -- command line -----------------------------------------------------------
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/stack-demo",
        description="The autonomous retraining loop against real Kafka, Prometheus, "
                    "Alertmanager, exporter and webhook processes on 127.0.0.1, in real "
                    "time (about two minutes). Needs the test set-up: make install-test "
                    "(or scripts/install-test-deps).")
    p.add_argument("--duration-scale", type=float, default=1.0, metavar="X",
                   help="multiply the healthy and recovery phases by X (default 1)")
    p.add_argument("--keep-logs", metavar="DIR",
                   help="work in DIR (new or empty) and keep it: every server's log and "
                        "config, the model store and the ledger; default: a temporary "
                        "directory, removed unless the demo fails")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulation (default 7)")
    p.add_argument("--verbose", action="store_true", help="also show this process's log")
    args = p.parse_args(argv)
    if args.keep_logs:
        d = Path(args.keep_logs)
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            p.error(f"--keep-logs {args.keep_logs}: not an empty directory (the servers' "
                    "data must start empty)")
    try:
        StackSettings(duration_scale=args.duration_scale)
    except ValueError as exc:
        p.error(f"--duration-scale: {exc}")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM takes the same way out as Ctrl-C: through every finally block.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kafka-python warns about every refused connection while a broker starts.
        logging.getLogger("kafka").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _interrupt)
    settings = StackSettings(seed=args.seed, duration_scale=args.duration_scale)
    if args.keep_logs:
        workdir = Path(args.keep_logs).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="autoretrain-stack-"))
    emit = print
    started = time.monotonic()
    ok = False
    try:
        emit("autoretrain stack demo: the loop against real servers, in real time")
        emit(f"Phase 1: start the stack (work dir {workdir})")
        stack = Stack(workdir, settings)
        try:
            stack.start(emit)
            emit(f"  started in {time.monotonic() - started:.1f} s")
            summary = play(stack, emit)
        finally:
            stack.stop()
        summary["runtime_seconds"] = round(time.monotonic() - started, 1)
        _print_summary(summary, emit)
        emit(f"all servers stopped; runtime {summary['runtime_seconds']:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
            emit(f"summary written to {args.json}")
        ok = True
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: every server the demo started has been stopped", file=sys.stderr)
        return 130
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"\nstack demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            print(f"logs and data kept in {workdir}", file=sys.stderr)
        elif args.keep_logs:
            emit(f"logs and data kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
