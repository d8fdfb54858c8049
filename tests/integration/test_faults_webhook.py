"""Faults: the webhook SIGKILLed and restarted while Alertmanager keeps re-sending one alert.

A real Alertmanager (the committed ``prometheus/alertmanager.test.yml``
routing, the webhook route's ``repeat_interval`` shrunk to 2 s) posts to a
real ``python -m autoretrain.webhook`` process that learns from a real Kafka
topic, fed by the test all along (so every incarnation has fresh events to
retrain on: after a SIGKILL the buffer holds only what was consumed since
the restart). The alert is injected into Alertmanager
through its API (``POST /api/v2/alerts``), so no Prometheus is needed. The
webhook is killed at seeded random moments after a delivery (the first kill
right after the very first one, before or while its retrain runs), kept
down until Alertmanager has seen a failed delivery, and restarted on the
same port and ledger. Alertmanager retries the failures and keeps repeating
the notification.

What must hold: the ledger (``GET /api/performance/retraining``) shows
retrains for that episode only, exactly one of them completed, promoted
(issue 13 item 2: a kill inside a retrain, even inside its promoted save,
leaves the row ``interrupted`` and the episode queued again, and the next
incarnation retrains it), every other one ``interrupted``; nothing is left
running or queued; every incarnation after the first counts the re-sends as
``duplicate_episode`` in ``autoretrain_webhook_alerts_total`` and queues nothing from
them. Figures go to ``reliability/webhook.json`` under
``restart_under_resend`` (only with ``AUTORETRAIN_RECORD_FIGURES=1``).

A second test makes the restart with a queued episode certain (issue 13
item 2): an episode queued behind the cooldown when the webhook is SIGKILLed
is restored by the next incarnation, which retrains it only once its
consumer has applied the backlog the topic held at start, and so on real
data (promoted or rejected, never "skipped").
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from servers import AlertmanagerFactory, AlertmanagerServer, KafkaServer
from servers.common import poll_until
from servers.webhook import TOKEN, WebhookProcess
from servers.webhook import record_figures as _record

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
FIGURES = REPO / "reliability" / "webhook.json"
RESTARTS = 6
ALERTNAME = "SystemAccuracyLow"
LABELS = {"alertname": ALERTNAME, "severity": "warning", "retrain": "incremental",
          "model_type": "agent_selection"}
# No cooldown: a restored retrain runs as soon as the new incarnation's consumer
# has caught up with the topic (issue 13 item 2), not after a delay that happens
# to give it time; before that fix it ran at once on an empty buffer ("skipped").
COOLDOWN_S = 0
EVENTS_PER_S = 100


class EventFeed:
    """Produces run events to ``topic`` at a steady rate from a thread until ``stop()``.

    Agent a0 always succeeds, a1 and a2 always fail: a stationary, noiseless
    world, where a retrained candidate scores as well as the serving model and
    is promoted (not worse); with noise, a rejection would be as right.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.topic = topic
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-feed", daemon=True)

    def _run(self) -> None:
        rng = random.Random(5)
        ids = EventIdFactory()
        while not self._stop.wait(0.1):
            for _ in range(EVENTS_PER_S // 10):
                agent = f"a{rng.randrange(3)}"
                event = run_event(ids(), time.time(), agent, "llm",
                                  "success" if agent == "a0" else "failure", 20.0, 5, 0.001)
                self.producer.send(self.topic, key=agent.encode(), value=encode_event(event))
                self.sent += 1

    def start(self) -> EventFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(timeout=30)
        self.producer.close()


def record_figures(key: str, figures: dict[str, Any]) -> None:
    """Merge ``figures`` under ``key`` into reliability/webhook.json (RELIABILITY.md cites it)."""
    _record(FIGURES, key, figures)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in a Prometheus exposition."""
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def alert_actions(webhook: WebhookProcess) -> dict[str, float]:
    """This incarnation's ``autoretrain_webhook_alerts_total`` for the firing alert, by action."""
    status, _, body = webhook.request("GET", "/metrics")
    assert status == 200
    return {labels["action"]: value
            for labels, value in samples(body.decode(), "autoretrain_webhook_alerts_total")
            if labels["alertname"] == ALERTNAME and labels["status"] == "firing"}


def failed_deliveries(alertmanager: AlertmanagerServer) -> float:
    """Alertmanager's failed webhook requests so far (each retry counts)."""
    with urllib.request.urlopen(f"{alertmanager.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(value for labels, value in
               samples(text, "alertmanager_notification_requests_failed_total")
               if labels.get("integration") == "webhook")


def alertmanager_config(webhook_port: int, token_file: Path) -> str:
    """The committed test routing, pointed at ``webhook_port``, repeating every 2 s."""
    config = yaml.safe_load((REPO / "prometheus" / "alertmanager.test.yml").read_text())
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "autoretrain-webhook"]
    route["repeat_interval"] = "2s"
    (receiver,) = [r for r in config["receivers"] if r["name"] == "autoretrain-webhook"]
    (hook,) = receiver["webhook_configs"]
    hook["url"] = f"http://127.0.0.1:{webhook_port}/alerts"
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return str(yaml.safe_dump(config, sort_keys=False))


def inject_alert(alertmanager: AlertmanagerServer, starts_at: datetime) -> str:
    """POST one firing alert to Alertmanager's API; return its fingerprint."""
    alert = [{"labels": LABELS, "annotations": {"summary": "injected by the fault test"},
              "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
              # Far enough that it stays firing for the whole test.
              "endsAt": (starts_at + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
              "generatorURL": "http://127.0.0.1/fault-test"}]
    request = urllib.request.Request(
        f"{alertmanager.url}/api/v2/alerts", data=json.dumps(alert).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    held = poll_until(lambda: [a for a in alertmanager.alerts()
                               if a["labels"].get("alertname") == ALERTNAME] or None,
                      timeout=10, what="the injected alert in Alertmanager")
    fingerprint: str = held[0]["fingerprint"]
    return fingerprint


def retrain_page(webhook: WebhookProcess) -> dict[str, Any]:
    status, _, body = webhook.request("GET", "/api/performance/retraining?limit=100")
    assert status == 200
    page: dict[str, Any] = json.loads(body)
    return page


def applied_events(webhook: WebhookProcess) -> float:
    status, _, body = webhook.request("GET", "/metrics")
    assert status == 200
    return sum(value for labels, value
               in samples(body.decode(), "autoretrain_model_updater_events_total")
               if labels.get("result") == "applied")


def settled_page(webhook: WebhookProcess) -> dict[str, Any] | None:
    """The ledger page once nothing is queued or running and a retrain completed."""
    status, _, body = webhook.request("GET", "/api/performance/stats")
    assert status == 200
    controller = json.loads(body)["webhook"]
    if controller["busy"] or controller["queued_episodes"]:
        return None
    page = retrain_page(webhook)
    if any(r["outcome"] not in ("running", "interrupted") for r in page["retrains"]):
        return page
    return None


def test_restarts_under_alertmanager_resends_retrain_once(
    tmp_path: Path, alertmanager_factory: AlertmanagerFactory, kafka_server: KafkaServer,
    kafka_topic: str
) -> None:
    started = time.monotonic()
    rng = random.Random(3)
    webhook = WebhookProcess(tmp_path)
    webhook.env.update({f"AUTORETRAIN_WEBHOOK_{k.upper()}": v for k, v in {
        "kafka_servers": kafka_server.bootstrap, "kafka_topic": kafka_topic,
        "model_topic": f"{kafka_topic}-models", "consumer_group": "restart-webhook",
        "batch_size": "50", "batch_timeout_seconds": "0.2", "save_interval_seconds": "1",
        # Re-sends are duplicates of the episode whatever the cooldown is.
        "cooldown_seconds": str(COOLDOWN_S)}.items()})
    feed = EventFeed(kafka_server.bootstrap, kafka_topic).start()
    webhook.start()
    try:
        # The first retrain runs at once (no cooldown yet): something to retrain on first.
        poll_until(lambda: applied_events(webhook) >= 200 or None, timeout=60,
                   what="events applied by the first incarnation")
        alertmanager = alertmanager_factory(
            alertmanager_config(webhook.port, tmp_path / "token"))
        starts_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
        fingerprint = inject_alert(alertmanager, starts_at)

        # Per incarnation: what it counted just before it was killed (or at the end).
        incarnations: list[dict[str, float]] = []
        kill_delays: list[float] = []
        failures_before = failed_deliveries(alertmanager)
        for cycle in range(RESTARTS + 1):
            if cycle:
                webhook.start()
            # Alertmanager delivered to this incarnation (a retry or a repeat).
            counted = poll_until(lambda: alert_actions(webhook) or None, timeout=60,
                                 what=f"a delivery to incarnation {cycle}")
            if cycle == RESTARTS:
                # The last one must also see a repeat after it decided.
                poll_until(lambda: alert_actions(webhook).get("duplicate_episode") or None,
                           timeout=60, what="a repeat to the last incarnation")
                incarnations.append(alert_actions(webhook))
                break
            # The fault: SIGKILL at a random moment; the first one right after the
            # first delivery was counted (no request in between): before its retrain
            # started (the episode is then restored queued), or while it runs
            # (interrupted, queued again). Which one is luck, recorded in the
            # figures; the test below and the unit tests make each case certain.
            delay = 0.0 if cycle == 0 else rng.uniform(0.0, 4.0)
            kill_delays.append(round(delay, 3))
            if delay:
                time.sleep(delay)  # one wait for the chosen moment, not a poll
                counted = alert_actions(webhook)
            incarnations.append(counted)
            assert webhook.proc is not None
            webhook.proc.kill()
            webhook.proc.wait(10)
            # Down until Alertmanager has tried and failed at least once more.
            seen = failed_deliveries(alertmanager)
            poll_until(lambda: failed_deliveries(alertmanager) > seen or None,  # noqa: B023
                       timeout=60, what="a failed delivery while the webhook is down")

        # The episode's retrain has completed (after any interrupted attempts). A
        # restored retrain waits until the new consumer caught up with the topic,
        # and the consumer is assigned its partition only once the killed
        # incarnations' group sessions expired (kafka-python: 45 s).
        try:
            page = poll_until(lambda: settled_page(webhook), timeout=150,
                              what="the episode's retrain to complete")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {retrain_page(webhook)}\n"
                                 f"{webhook.log.read_text()[-6000:]}") from None
        failures = failed_deliveries(alertmanager) - failures_before
        log = webhook.log.read_text()
    finally:
        webhook.stop()
        feed.stop()

    retrains = page["retrains"]  # newest first
    assert page["total"] == len(retrains) >= 1, page
    for row in retrains:
        assert row["trigger"] == "alert", row
        assert [(a["fingerprint"], a["alertname"]) for a in row["alerts"]] == [
            (fingerprint, ALERTNAME)], row
    outcomes = [row["outcome"] for row in retrains]
    # Retrained to completion exactly once, promoted, after any interrupted attempts
    # (never "skipped": a restored retrain waits until the consumer caught up).
    assert outcomes[0] == "promoted" and set(outcomes[1:]) <= {"interrupted"}, [
        (r["outcome"], r["error"]) for r in retrains]
    retrain = retrains[0]
    assert retrain["model_version"] and retrain["finished_at"] is not None, retrain
    # Only the first incarnation queued it; every later one saw re-sends as duplicates.
    assert incarnations[0].get("queued_incremental") == 1
    for counted in incarnations[1:]:
        assert "queued_incremental" not in counted and "cooldown" not in counted, counted
        assert counted.get("duplicate_episode", 0) >= 1, counted
    assert failures >= RESTARTS
    assert TOKEN not in log
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 1500):][:5000]

    duplicates = sum(c.get("duplicate_episode", 0) for c in incarnations)
    runtime = time.monotonic() - started
    record_figures("restart_under_resend", {
        "command": "python -m pytest tests/integration/test_faults_webhook.py -k restarts",
        "restarts": RESTARTS,
        "kill_signal": "SIGKILL",
        "kill_delays_after_a_delivery_s": kill_delays,
        "retrains_for_episode": len(retrains),
        "retrains_total": page["total"],
        "retrain_outcomes_oldest_first": outcomes[::-1],
        "interrupted_retrains": outcomes.count("interrupted"),
        "retrain_outcome": retrain["outcome"],
        "retrain_events_processed": retrain["events_processed"],
        "events_produced": feed.sent,
        "cooldown_s": COOLDOWN_S,
        "deliveries_per_incarnation": [int(sum(c.values())) for c in incarnations],
        "duplicates_counted": int(duplicates),
        "alertmanager_failed_requests": int(failures),
        "alertmanager_repeat_interval_s": 2,
        "runtime_s": round(runtime, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    print(f"\n{RESTARTS} SIGKILL restarts: retrains {outcomes[::-1]}, {duplicates:.0f} "
          "duplicates counted, "
          f"{failures:.0f} failed Alertmanager requests retried, {runtime:.1f} s")


def produce_stationary(bootstrap: str, topic: str, n: int, seed: int) -> None:
    """``n`` run events of EventFeed's world (a0 succeeds, a1 and a2 fail), flushed."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    rng = random.Random(seed)
    ids = EventIdFactory()
    now = time.time()
    try:
        for i in range(n):
            agent = f"a{rng.randrange(3)}"
            event = run_event(ids(), now - n * 0.01 + i * 0.01, agent, "llm",
                              "success" if agent == "a0" else "failure", 20.0, 5, 0.001)
            producer.send(topic, key=agent.encode(), value=encode_event(event))
        producer.flush(timeout=30)
    finally:
        producer.close()


def post_alert(webhook: WebhookProcess, fingerprint: str, starts_at: str) -> str:
    """POST one firing alert as Alertmanager would; return the action taken."""
    body = json.dumps({
        "version": "4", "status": "firing", "receiver": "autoretrain-webhook",
        "groupKey": "{}:{}", "truncatedAlerts": 0, "alerts": [{
            "status": "firing", "labels": {**LABELS, "instance": fingerprint},
            "annotations": {}, "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1/fault-test", "fingerprint": fingerprint}]})
    status, _, answer = webhook.request(
        "POST", "/alerts", body.encode(),
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert status == 202, answer
    action: str = json.loads(answer)["decisions"][0]["action"]
    return action


def finished(webhook: WebhookProcess, count: int) -> list[dict[str, Any]] | None:
    """The ledger's retrains, oldest first, once ``count`` of them are no longer running."""
    rows = retrain_page(webhook)["retrains"][::-1]
    done = [r for r in rows if r["outcome"] not in ("running",)]
    return rows if len(done) >= count else None


def test_an_episode_queued_at_a_kill_is_retrained_on_real_data_after_the_restart(
    tmp_path: Path, kafka_server: KafkaServer, kafka_topic: str
) -> None:
    produce_stationary(kafka_server.bootstrap, kafka_topic, 600, seed=1)
    webhook = WebhookProcess(tmp_path)
    settings = {
        "kafka_servers": kafka_server.bootstrap, "kafka_topic": kafka_topic,
        "model_topic": f"{kafka_topic}-models", "consumer_group": "queued-at-kill",
        "batch_size": "100", "batch_timeout_seconds": "0.2", "save_interval_seconds": "1",
        "cooldown_seconds": "3600"}
    webhook.env.update({f"AUTORETRAIN_WEBHOOK_{k.upper()}": v for k, v in settings.items()})
    webhook.start()
    try:
        try:
            poll_until(lambda: applied_events(webhook) >= 600 or None, timeout=60,
                       what="the first incarnation to apply the topic")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}:\n{webhook.log.read_text()[-5000:]}") from None
        # Alert A retrains at once; alert B then waits behind the hour-long cooldown.
        assert post_alert(webhook, "aaaa000000000001", "2026-01-01T00:00:00Z") == \
            "queued_incremental"
        (first,) = poll_until(lambda: finished(webhook, 1), timeout=60,
                              what="alert A's retrain")
        assert first["outcome"] in ("promoted", "rejected"), first
        assert post_alert(webhook, "bbbb000000000002", "2026-01-01T00:00:00Z") == "cooldown"
        assert webhook.proc is not None
        webhook.proc.kill()  # B is queued in the ledger, never started
        webhook.proc.wait(10)
        # The world goes on while the webhook is down; the next incarnation has no
        # cooldown left to wait for (an operator lowered it), so only its consumer's
        # catch-up stands between the restart and B's retrain.
        produce_stationary(kafka_server.bootstrap, kafka_topic, 600, seed=2)
        webhook.env["AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS"] = "0"
        webhook.start()
        rows = poll_until(lambda: finished(webhook, 2), timeout=120,
                          what="alert B's retrain after the restart")
        log = webhook.log.read_text()
    finally:
        webhook.stop()

    assert len(rows) == 2, rows
    second = rows[1]
    assert [a["fingerprint"] for a in second["alerts"]] == ["bbbb000000000002"], second
    # Retrained on what the topic held at the restart, not "skipped" on an empty buffer.
    assert second["outcome"] in ("promoted", "rejected"), (second["outcome"], second["error"])
    assert second["events_processed"] >= 600, second
    assert "caught up with the source" in log
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 1500):][:5000]
    record_figures("restart_with_a_queued_episode", {
        "command": "python -m pytest tests/integration/test_faults_webhook.py -k queued_at_a_kill",
        "kill_signal": "SIGKILL",
        "events_before_kill_after_restart": [600, 600],
        "first_retrain_outcome": rows[0]["outcome"],
        "restored_retrain_outcome": second["outcome"],
        "restored_retrain_events_processed": second["events_processed"],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
