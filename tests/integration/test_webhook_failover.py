"""Two real ``python -m autoretrain.webhook`` processes on one model store and ledger.

The first is active: it consumes outcome events from a real Kafka broker,
retrains for an alert episode and saves model versions. The second, started
on the same store, ledger, topic and consumer group, is a standby: ``/readyz``
503 "standby", 503 on ``POST /alerts``, no consumer, no retrains, and not one
file of the store or the ledger open (checked in ``/proc``). The active one
is SIGKILLed; the standby must become ready within a generous deadline,
serve the newest saved version, and answer the re-send of the already
retrained episode (the same notification body Alertmanager would send
again: same fingerprint and startsAt) with ``duplicate_episode``: no second
retrain, no new model version.

Also: an instance whose port is taken exits without touching the store, and
``AUTORETRAIN_WEBHOOK_STANDBY=exit`` makes a second instance exit at start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from servers.common import poll_until
from servers.webhook import TOKEN, WebhookProcess

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
EVENTS = 400
FINGERPRINT = "5ba1c0ffee5ba1c0"
STARTS_AT = "2024-05-01T10:00:00Z"


def notification() -> bytes:
    """One Alertmanager notification (version 4) of one firing episode; re-sent verbatim."""
    return json.dumps({
        "receiver": "autoretrain-webhook", "status": "firing", "version": "4",
        "groupKey": "{}:{alertname=\"SystemAccuracyLow\"}", "truncatedAlerts": 0,
        "groupLabels": {"alertname": "SystemAccuracyLow"}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "SystemAccuracyLow", "retrain": "incremental"},
                    "annotations": {}, "startsAt": STARTS_AT,
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus",
                    "fingerprint": FINGERPRINT}]}).encode()


def produce(bootstrap: str, topic: str, n: int) -> None:
    rng = np.random.default_rng(0)
    ids = EventIdFactory()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for i in range(n):
            agent = f"agent-{rng.integers(3)}"
            ok = rng.random() < (0.9 if agent == "agent-0" else 0.4)
            event = run_event(ids(), 1_000.0 + i, agent, "llm", "success" if ok else "failure",
                              50.0, 10, 0.001, task_type="task-0")
            producer.send(topic, value=encode_event(event), key=agent.encode())
        producer.flush(timeout=30)
    finally:
        producer.close()


def get_json(process: WebhookProcess, path: str) -> tuple[int, Any]:
    status, _, body = process.request("GET", path)
    return status, json.loads(body)


def metric(process: WebhookProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    status, _, body = process.request("GET", "/metrics")
    assert status == 200
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == name}


def retrains_run(process: WebhookProcess) -> float:
    return sum(metric(process, "autoretrain_model_retrains_total").values())


def finished(process: WebhookProcess) -> dict[str, Any] | None:
    """The ledger page once it has a retrain and none is running."""
    page: dict[str, Any] = get_json(process, "/api/performance/retraining")[1]
    done = page["retrains"] and all(r["outcome"] != "running" for r in page["retrains"])
    return page if done else None


def store_files(store: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(store.iterdir())}


def newest_version(store: Path) -> tuple[int, dict[str, Any]]:
    newest = max(store.glob("model-*.json"))
    return int(newest.stem[6:]), json.loads(newest.read_text())


def saved_events(store: Path) -> int | None:
    """Events the newest saved version has consumed; None before the first
    save (a rejected retrain saves nothing; the periodic save follows)."""
    if not any(store.glob("model-*.json")):
        return None
    return sum(newest_version(store)[1]["kafka"]["offsets"].values())


def open_files(pid: int) -> list[str]:
    """What process ``pid`` has open, from /proc (Linux)."""
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            paths.append(os.readlink(fd))
        except FileNotFoundError:  # closed meanwhile
            continue
    return paths


def kafka_process(workdir: Path, bootstrap: str, topic: str, group: str,
                  log_name: str) -> WebhookProcess:
    process = WebhookProcess(workdir)
    process.log = workdir / log_name
    process.env.update({
        "AUTORETRAIN_WEBHOOK_KAFKA_SERVERS": bootstrap,
        "AUTORETRAIN_WEBHOOK_KAFKA_TOPIC": topic,
        "AUTORETRAIN_WEBHOOK_CONSUMER_GROUP": group,
        "AUTORETRAIN_WEBHOOK_BATCH_SIZE": "50",
        "AUTORETRAIN_WEBHOOK_BATCH_TIMEOUT_SECONDS": "0.2",
        # Consumed events reach the store within a second, so the store's
        # newest version is the one to take over from.
        "AUTORETRAIN_WEBHOOK_SAVE_INTERVAL_SECONDS": "1",
    })
    return process


def test_the_standby_takes_over_after_sigkill_and_a_resend_retrains_once(
    kafka_server: Any, kafka_topic: str, tmp_path: Path
) -> None:
    bootstrap, group = kafka_server.bootstrap, f"g-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "models"
    active = kafka_process(tmp_path, bootstrap, kafka_topic, group, "active.log").start()
    standby = kafka_process(tmp_path, bootstrap, kafka_topic, group, "standby.log")
    try:
        before = store_files(store)
        standby.start(ready=False)
        assert standby.proc is not None and active.proc is not None

        # -- the standby: not ready, refuses writes, opens nothing of the store or ledger --
        status, body = get_json(standby, "/readyz")
        assert status == 503 and body["reason"] == "standby"
        assert f"pid {active.proc.pid} " in body["checks"]["lock"]
        assert standby.request("GET", "/healthz")[0] == 200
        status, _, raw = standby.request("POST", "/alerts", notification(), AUTH)
        assert status == 503 and json.loads(raw)["error"] == "standby"
        status, _, raw = standby.request("POST", "/api/performance/trigger-retraining", b"{}",
                                         AUTH)
        assert status == 503 and json.loads(raw)["error"] == "standby"
        assert get_json(standby, "/api/performance/retraining")[0] == 503
        assert metric(standby, "autoretrain_webhook_role") == {
            (("role", "active"),): 0.0, (("role", "standby"),): 1.0}
        assert metric(active, "autoretrain_webhook_role")[(("role", "active"),)] == 1.0
        touched = [p for p in open_files(standby.proc.pid)
                   if p.startswith(str(tmp_path)) and not p.endswith(".lock")]
        assert [p for p in touched if "ledger" in p or "/models/" in p] == []
        assert store_files(store) == before

        # -- the active one learns, retrains for the episode and saves ------------------------
        produce(bootstrap, kafka_topic, EVENTS)
        poll_until(lambda: get_json(active, "/api/performance/stats")[1]["events_applied"]
                   >= EVENTS or None, timeout=60, what="the active one applying the events")
        status, _, raw = active.request("POST", "/alerts", notification(), AUTH)
        assert status == 202
        assert json.loads(raw)["decisions"][0]["action"] == "queued_incremental"
        page = poll_until(lambda: finished(active), timeout=60,
                          what="the alert's retrain to finish")
        (retrain,) = page["retrains"]
        assert retrain["trigger"] == "alert" and retrain["outcome"] in ("promoted", "rejected")
        assert [a["fingerprint"] for a in retrain["alerts"]] == [FINGERPRINT]
        # The store holds every consumed event (offsets of the newest version).
        poll_until(lambda: (saved_events(store) or 0) >= EVENTS or None, timeout=60,
                   what="a saved version with every event")
        saved, _ = newest_version(store)
        assert retrains_run(standby) == 0
        assert get_json(standby, "/readyz")[1]["reason"] == "standby"

        # -- SIGKILL: the kernel releases the lock; the standby takes over ---------------------
        killed_at = time.monotonic()
        active.proc.kill()
        active.proc.wait(30)
        poll_until(lambda: get_json(standby, "/readyz")[0] == 200 or None, timeout=60,
                   what="the standby ready after the active one was killed")
        takeover_s = time.monotonic() - killed_at
        stats = get_json(standby, "/api/performance/stats")[1]
        assert stats["model_version"] == saved == newest_version(store)[0]
        assert metric(standby, "autoretrain_webhook_role") == {
            (("role", "active"),): 1.0, (("role", "standby"),): 0.0}

        # -- Alertmanager re-sends the episode: recorded as a duplicate, no retrain -------------
        status, _, raw = standby.request("POST", "/alerts", notification(), AUTH)
        assert status == 202
        assert json.loads(raw)["decisions"][0]["action"] == "duplicate_episode"
        stats = get_json(standby, "/api/performance/stats")[1]
        assert stats["webhook"]["queued_episodes"] == 0 and not stats["webhook"]["busy"]
        page = get_json(standby, "/api/performance/retraining")[1]
        assert page["total"] == 1 and page["retrains"][0]["id"] == retrain["id"]
        assert retrains_run(standby) == 0
        assert get_json(standby, "/api/performance/stats")[1]["model_version"] == saved
        assert newest_version(store)[0] == saved
        assert metric(standby, "autoretrain_webhook_alerts_total")[(
            ("action", "duplicate_episode"), ("alertname", "SystemAccuracyLow"),
            ("status", "firing"))] == 1.0
    finally:
        if active.proc is not None and active.proc.poll() is None:
            active.stop()
        if standby.proc is not None:
            assert standby.stop() == 0
    log = standby.log.read_text()
    assert "standby: " in log and "took over: now active" in log
    assert "Traceback" not in log and TOKEN not in log
    print(f"\nstandby ready {takeover_s:.2f} s after the SIGKILL of the active one")


def test_an_instance_whose_port_is_taken_leaves_the_store_alone(tmp_path: Path) -> None:
    active = WebhookProcess(tmp_path).start()
    try:
        # What the updater's start would tidy away (an interrupted save's file):
        # it must still be there after the second instance gave up.
        store = tmp_path / "models"
        store.mkdir(exist_ok=True)
        (store / ".tmp-model-00000007.npz-x").write_bytes(b"partial")
        before = store_files(store)
        ledger_before = (tmp_path / "ledger.sqlite3").stat().st_mtime_ns

        env = {**WebhookProcess(tmp_path).env, "AUTORETRAIN_WEBHOOK_PORT": str(active.port)}
        second = subprocess.run([sys.executable, "-m", "autoretrain.webhook"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        log = second.stderr
        assert "cannot listen on" in log
        assert "model updater started" not in log and "loaded model" not in log
        assert store_files(store) == before
        assert (tmp_path / "ledger.sqlite3").stat().st_mtime_ns == ledger_before
        assert active.request("GET", "/readyz")[0] == 200
    finally:
        assert active.stop() == 0


def test_standby_exit_makes_a_second_instance_exit(tmp_path: Path) -> None:
    active = WebhookProcess(tmp_path).start()
    try:
        second = WebhookProcess(tmp_path)
        second.env["AUTORETRAIN_WEBHOOK_STANDBY"] = "exit"
        second.log = tmp_path / "second.log"
        with pytest.raises(AssertionError, match="did not become ready"):
            second.start(ready=False)
        assert second.proc is not None and second.proc.wait(30) == 1
        assert "another webhook is active on this model store and ledger" in \
            second.log.read_text()
        assert active.request("GET", "/readyz")[0] == 200
    finally:
        assert active.stop() == 0
