"""Kafka faults against the real servers: no event lost or applied twice, bad data skipped.

1. The broker SIGKILLed mid-stream and restarted 10 s later: the monitor
   keeps recording, ``python -m autoretrain.exporter`` and ``python -m autoretrain.webhook`` keep
   serving and report Kafka unreachable on ``/readyz``, and afterwards every
   produced event is applied exactly once.
5. Bad events on the topic: skipped and counted by fault, the good events
   behind them applied, both consumers never stuck.
6. A corrupted or truncated model file: start-up reports it and loads the
   newest valid version (in-process and as ``python -m autoretrain.webhook``).

Figures are merged into reliability/kafka.json for RELIABILITY.md.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaProducer
from servers import KafkaServer, free_port
from servers.common import poll_until, stop_process
from servers.webhook import record_figures as _record

from autoretrain.exporter import PerformanceMonitor
from autoretrain.exporter.events import EventIdFactory, accuracy_event, encode_event, run_event
from autoretrain.webhook.updater import RealTimeModelUpdater

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "reliability" / "kafka.json"
TOKEN = "fault-token-0123456789abcdef"
COMMAND = "python -m pytest tests/integration/test_faults_kafka.py -k "


def record_figures(key: str, figures: dict[str, Any], sub: str | None = None) -> None:
    """Merge ``figures`` under ``key`` (and ``sub``) into reliability/kafka.json."""
    _record(FIGURES, key, figures, sub)


# -- the two server processes ---------------------------------------------------------


class Server:
    """``python -m <module>`` serving HTTP on 127.0.0.1:``port``; output in ``workdir``."""

    def __init__(self, module: str, workdir: Path, env: dict[str, str], args: list[str],
                 port: int) -> None:
        self.module, self.workdir, self.port = module, workdir, port
        self.command = [sys.executable, "-m", module, *args]
        self.env = env
        self.log = workdir / f"{module}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        poll_until(lambda: True if self.get("/healthz")[0] == 200 else self._alive(),
                   timeout=60, what=f"{self.module} answering /healthz")
        if ready:
            poll_until(lambda: True if self.get("/readyz")[0] == 200 else self._alive(),
                       timeout=60, what=f"{self.module} ready")
        return self

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.module} exited {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def metric(self, name: str, labels: str = "") -> float | None:
        """A sample of /metrics, e.g. ``metric("x_total", 'result="applied"')``."""
        status, body = self.get("/metrics")
        assert status == 200
        pattern = re.escape(name + ("{" + labels + "}" if labels else "")) + r" (\S+)\n"
        found = re.search(pattern, body)
        return float(found.group(1)) if found else None

    def stop(self) -> int:
        assert self.proc is not None
        return stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def webhook_server(workdir: Path, bootstrap: str, topic: str, group: str,
                   models: Path | None = None) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORETRAIN_")}
    env.update({
        "AUTORETRAIN_WEBHOOK_TOKEN": TOKEN,
        "AUTORETRAIN_WEBHOOK_PORT": str(port),
        "AUTORETRAIN_WEBHOOK_LEDGER_PATH": str(workdir / "ledger.sqlite3"),
        "AUTORETRAIN_WEBHOOK_MODEL_STORAGE_PATH": str(models or workdir / "models"),
        "AUTORETRAIN_WEBHOOK_KAFKA_SERVERS": bootstrap,
        "AUTORETRAIN_WEBHOOK_KAFKA_TOPIC": topic,
        "AUTORETRAIN_WEBHOOK_CONSUMER_GROUP": group,
        "AUTORETRAIN_WEBHOOK_BATCH_SIZE": "100",
        "AUTORETRAIN_WEBHOOK_BATCH_TIMEOUT_SECONDS": "0.2",
        "AUTORETRAIN_WEBHOOK_SAVE_INTERVAL_SECONDS": "1",
    })
    return Server("webhook", workdir, env, [], port)


def exporter_server(workdir: Path, bootstrap: str, topic: str, group: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORETRAIN_")}
    env.update({
        "AUTORETRAIN_EXPORTER_KAFKA_SERVERS": bootstrap,
        "AUTORETRAIN_EXPORTER_TOPIC": topic,
        "AUTORETRAIN_EXPORTER_GROUP": group,
    })
    return Server("exporter", workdir, env,
                  ["--listen-address", "127.0.0.1", "--port", str(port)], port)


def applied(webhook: Server, exporter: Server) -> tuple[int, int]:
    """Events applied by the webhook's updater and by the exporter."""
    by_webhook = webhook.json("/api/performance/stats")["events_applied"]
    by_exporter = exporter.metric("autoretrain_exporter_events_total", 'result="applied"')
    return by_webhook, int(by_exporter or 0)


# -- point 1: the broker killed mid-stream ----------------------------------------------


class Recorder:
    """Records agent runs on a thread at a steady pace, timing every call."""

    def __init__(self, monitor: PerformanceMonitor, per_second: int = 200) -> None:
        self.monitor, self.interval = monitor, 1.0 / per_second
        self.calls = 0
        self.slowest = 0.0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(3)
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                self.monitor.record_agent_run(
                    run_id=f"run-{self.calls}", agent_name=f"agent-{rng.randrange(5)}",
                    agent_type="llm", status="success" if rng.random() < 0.8 else "failure",
                    duration_ms=40.0, tokens_used=12, cost=0.001)
            except BaseException as exc:  # the property under test: never raises
                self.errors.append(exc)
            self.slowest = max(self.slowest, time.perf_counter() - began)
            self.calls += 1
            self._stop.wait(self.interval)  # pacing the stream, not polling

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_broker_killed_mid_stream_and_restarted(kafka_server: KafkaServer, kafka_topic: str,
                                                tmp_path: Path) -> None:
    started = time.monotonic()
    bootstrap = kafka_server.bootstrap
    webhook = webhook_server(tmp_path / "webhook", bootstrap, kafka_topic, "outage-updater")
    exporter = exporter_server(tmp_path / "exporter", bootstrap, kafka_topic, "outage-exporter")
    monitor = PerformanceMonitor(kafka_servers=bootstrap, kafka_topic=kafka_topic,
                                 enable_auto_retraining=False)
    recorder = Recorder(monitor)
    servers = (webhook, exporter)
    try:
        for server in servers:
            server.start()
        recorder.start()
        poll_until(lambda: True if min(applied(webhook, exporter)) >= 200 else None,
                   timeout=60, what="both consumers applying the stream")

        kafka_server.kill()
        killed = time.monotonic()
        calls_at_kill = recorder.calls
        before_kill = applied(webhook, exporter)
        unready: dict[str, str] = {}
        answers = {s.module: {"metrics": 0, "healthz": 0, "failed": 0} for s in servers}
        # Observe the outage for 10 s: serving continues, readiness says why not.
        while time.monotonic() - killed < 10:
            for server in servers:
                counts = answers[server.module]
                for path in ("/metrics", "/healthz"):
                    status, _ = server.get(path)
                    counts[path[1:]] += status == 200
                    counts["failed"] += status != 200
                status, body = server.get("/readyz")
                if status == 503 and "kafka" in body.lower():
                    unready.setdefault(server.module, json.loads(body)["reason"])
            time.sleep(0.25)
        recorded_during_outage = recorder.calls
        restart_began = time.monotonic()
        kafka_server.start()
        restarted = time.monotonic()

        # Keep recording a little on the healed broker, then stop the stream.
        poll_until(lambda: True if recorder.calls >= recorded_during_outage + 400 else None,
                   timeout=30, what="recording after the restart")
        recorder.stop()
        produced = recorder.calls
        stats = monitor.get_stats()
        assert stats["events_published"] == produced and stats["events_dropped"] == 0

        caught_up = poll_until(
            lambda: c if min(c := applied(webhook, exporter)) >= produced else None,
            timeout=180, interval=0.25, what=f"{produced} events applied after the restart")
        recovered = time.monotonic() - restarted
        for server in servers:
            poll_until(lambda s=server: True if s.get("/readyz")[0] == 200 else None,
                       timeout=60, what=f"{server.module} ready again")
        webhook_stats = webhook.json("/api/performance/stats")
        exporter_duplicates = exporter.metric("autoretrain_exporter_events_total",
                                              'result="duplicate"')
        applied_metric = webhook.metric("autoretrain_model_updater_events_total",
                                        'result="applied"')
    finally:
        recorder.stop()
        monitor.stop()
        if not kafka_server.running():
            kafka_server.start()
        codes = {s.module: s.stop() if s.proc is not None else None for s in servers}

    assert not recorder.errors, recorder.errors[:3]
    # Generous "did not block" bound: the sink only appends to a queue.
    assert recorder.slowest < 0.5, recorder.slowest
    for module, counts in answers.items():
        assert counts["failed"] == 0 and counts["metrics"] > 0, (module, counts)
    assert set(unready) == {"webhook", "exporter"}, unready
    assert all("kafka" in reason.lower() for reason in unready.values())
    # Exactly once: the producer's count is the applied count on both consumers.
    assert caught_up == (produced, produced)
    assert webhook_stats["events_applied"] == produced == applied_metric
    assert webhook_stats["invalid"] == 0
    assert codes == {"webhook": 0, "exporter": 0}
    record_figures("point_1_broker_sigkill", {
        "command": COMMAND + "broker_killed",
        "seconds_from_kill_to_restart": round(restart_began - killed, 1),
        "seconds_broker_unavailable": round(restarted - killed, 1),
        "events_produced": produced,
        "events_recorded_during_outage": recorded_during_outage - calls_at_kill,
        "events_applied_before_kill": {"updater": before_kill[0], "exporter": before_kill[1]},
        "events_applied_by_updater": webhook_stats["events_applied"],
        "events_applied_by_exporter": caught_up[1],
        "duplicates_counted_by_updater": webhook_stats["duplicates"],
        "duplicates_counted_by_exporter": int(exporter_duplicates or 0),
        "events_dropped_by_monitor": stats["events_dropped"],
        "slowest_record_call_ms": round(recorder.slowest * 1000, 2),
        "http_answers_during_outage": answers,
        "readyz_reason_during_outage": unready,
        "seconds_from_restart_to_all_applied": round(recovered, 1),
        "updater_errors_counted": webhook_stats["errors"],
        "duration_seconds": round(time.monotonic() - started, 1),
    })


def test_webhook_and_exporter_start_while_the_broker_is_down(kafka_server: KafkaServer,
                                                             kafka_topic: str, tmp_path: Path
                                                             ) -> None:
    bootstrap = kafka_server.bootstrap
    _produce_spread(bootstrap, kafka_topic, _good_events(100, EventIdFactory()))
    webhook = webhook_server(tmp_path / "webhook", bootstrap, kafka_topic, "cold-updater")
    exporter = exporter_server(tmp_path / "exporter", bootstrap, kafka_topic, "cold-exporter")
    servers = (webhook, exporter)
    reasons: dict[str, str] = {}
    kafka_server.kill()
    try:
        for server in servers:
            server.start(ready=False)  # serving /healthz although Kafka is down
        for server in servers:
            _, body = poll_until(
                lambda s=server: r if (r := s.get("/readyz"))[0] == 503 else None,
                timeout=30, what=f"{server.module} not ready")
            reasons[server.module] = json.loads(body)["reason"]
            assert server.get("/metrics")[0] == 200
        kafka_server.start()
        for server in servers:
            poll_until(lambda s=server: True if s.get("/readyz")[0] == 200 else None,
                       timeout=60, what=f"{server.module} ready after the broker started")
        poll_until(lambda: True if applied(webhook, exporter) == (100, 100) else None,
                   timeout=60, what="the events produced before the outage applied")
    finally:
        if not kafka_server.running():
            kafka_server.start()
        codes = [s.stop() if s.proc is not None else None for s in servers]
    assert all("kafka" in reason.lower() for reason in reasons.values()), reasons
    assert codes == [0, 0]


# -- point 5: bad events on the topic ------------------------------------------------------

_GOOD = run_event("template", 1_000.0, "agent-1", "llm", "success", 50.0, 10, 0.001)


def _mutated(**changes: Any) -> bytes:
    event = {**_GOOD, "event_id": f"bad-{uuid.uuid4().hex[:8]}"}
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return encode_event(event)


#: (name, message value, the fault both consumers must count it under)
BAD_EVENTS: list[tuple[str, bytes | None, str]] = [
    ("not_json", b"{not json", "not_json"),
    ("binary_garbage", b"\xff" + random.Random(5).randbytes(300), "not_json"),
    ("empty_bytes", b"", "not_json"),
    ("null_value", None, "empty"),
    ("json_array", b"[1, 2, 3]", "not_object"),
    ("schema_version_2", _mutated(schema=2), "schema"),
    ("schema_as_string", _mutated(schema="1"), "schema"),
    ("no_event_id", _mutated(event_id=...), "field:event_id"),
    ("unknown_kind", _mutated(kind="walk"), "field:kind"),
    ("duration_is_text", _mutated(duration_ms="fast"), "field:duration_ms"),
    ("tokens_is_text", _mutated(tokens_used="many"), "field:tokens_used"),
    ("agent_is_number", _mutated(agent_name=42), "field:agent_name"),
    ("bad_status", _mutated(status="maybe"), "field:status"),
    ("bad_timestamp", _mutated(timestamp="yesterday"), "field:timestamp"),
    ("accuracy_above_1", encode_event(
        {**accuracy_event("acc-bad", 1_000.0, "agent-1", "llm", "t", 0.5, "human"),
         "accuracy": 1.5}), "field:accuracy"),
    ("huge_70_KiB", _mutated(padding="x" * 70_000), "too_large"),
]


def _good_events(n: int, ids: EventIdFactory) -> list[bytes]:
    rng = np.random.default_rng(8)
    return [encode_event(run_event(ids(), 1_000.0 + i, f"agent-{rng.integers(4)}", "llm",
                                   "success" if rng.random() < 0.7 else "failure", 30.0, 5,
                                   0.001, task_type=f"task-{rng.integers(2)}"))
            for i in range(n)]


def _produce(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    # One key, so one partition: every bad event sits in front of good ones.
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for value in values:
            producer.send(topic, key=b"one-partition", value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def _faults_from_metrics(exporter: Server) -> dict[str, int]:
    _, body = exporter.get("/metrics")
    found = re.findall(r'autoretrain_exporter_invalid_events_total\{fault="([^"]+)"\} (\S+)\n',
                       body)
    return {fault: int(float(n)) for fault, n in found if float(n)}


def test_bad_events_are_skipped_counted_and_never_block(kafka_server: KafkaServer,
                                                        kafka_topic: str, tmp_path: Path
                                                        ) -> None:
    started = time.monotonic()
    bootstrap = kafka_server.bootstrap
    webhook = webhook_server(tmp_path / "webhook", bootstrap, kafka_topic, "bad-updater")
    exporter = exporter_server(tmp_path / "exporter", bootstrap, kafka_topic, "bad-exporter")
    ids = EventIdFactory()
    good = _good_events(300, ids)
    duplicates = good[:50]
    # Good events first, then every kind of bad one each followed by good ones,
    # then re-sent good events (duplicate ids).
    mixed: list[bytes | None] = list(good[:100])
    for i, (_, value, _) in enumerate(BAD_EVENTS):
        mixed += [value, *good[100 + 10 * i : 110 + 10 * i]]
    mixed += good[100 + 10 * len(BAD_EVENTS):] + duplicates
    expected = {}
    for _, _, fault in BAD_EVENTS:
        expected[fault] = expected.get(fault, 0) + 1
    try:
        for server in (webhook, exporter):
            server.start()
        _produce(bootstrap, kafka_topic, mixed)
        poll_until(lambda: True if applied(webhook, exporter) == (300, 300) else None,
                   timeout=60, what="the good events applied")
        poll_until(lambda: True if webhook.json("/api/performance/stats")["duplicates"] == 50
                   and exporter.metric("autoretrain_exporter_events_total",
                                       'result="duplicate"') == 50 else None,
                   timeout=30, what="the duplicates counted")
        stats = webhook.json("/api/performance/stats")
        assert stats["invalid_by_fault"] == expected
        assert _faults_from_metrics(exporter) == expected

        # Never stuck: one good event behind 1,000 bad ones is applied promptly.
        flood = [BAD_EVENTS[i % len(BAD_EVENTS)][1] for i in range(1000)]
        sentinel = _good_events(1, EventIdFactory())
        _produce(bootstrap, kafka_topic, [*flood, *sentinel])
        produced_at = time.monotonic()
        poll_until(lambda: True if applied(webhook, exporter) == (301, 301) else None,
                   timeout=60, interval=0.05, what="the good event behind 1,000 bad ones")
        behind_flood_seconds = time.monotonic() - produced_at
        after = webhook.json("/api/performance/stats")
        exporter_faults = _faults_from_metrics(exporter)
        assert webhook.get("/readyz")[0] == 200 and exporter.get("/readyz")[0] == 200
    finally:
        codes = [s.stop() if s.proc is not None else None for s in (webhook, exporter)]
    flooded = {fault: n + sum(1 for i in range(1000)
                              if BAD_EVENTS[i % len(BAD_EVENTS)][2] == fault)
               for fault, n in expected.items()}
    assert after["invalid_by_fault"] == flooded and exporter_faults == flooded
    assert after["invalid"] == len(BAD_EVENTS) + 1000
    # A generous bound; the figure itself goes to reliability/kafka.json.
    assert behind_flood_seconds < 30
    assert codes == [0, 0]
    record_figures("point_5_bad_events", {
        "command": COMMAND + "bad_events",
        "good_events_produced": 301,
        "good_events_applied_by_updater": after["events_applied"],
        "good_events_applied_by_exporter": 301,
        "duplicate_ids_produced": 50,
        "duplicates_counted_by_updater": after["duplicates"],
        "duplicates_counted_by_exporter": 50,
        "bad_events_produced": len(BAD_EVENTS) + 1000,
        "bad_event_kinds": [name for name, _, _ in BAD_EVENTS],
        "invalid_by_fault_updater": after["invalid_by_fault"],
        "invalid_by_fault_exporter": exporter_faults,
        "seconds_to_apply_good_event_behind_1000_bad": round(behind_flood_seconds, 2),
        "duration_seconds": round(time.monotonic() - started, 1),
    })


# -- point 6: corrupted model files ------------------------------------------------------------


def _flip_bytes(npz: Path, meta: Path) -> None:
    data = bytearray(npz.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    npz.write_bytes(bytes(data))


def _truncate(npz: Path, meta: Path) -> None:
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])


def _corrupt_json(npz: Path, meta: Path) -> None:
    meta.write_bytes(meta.read_bytes()[:40] + b"\x00garbage")


def _delete_arrays(npz: Path, meta: Path) -> None:
    npz.unlink()


#: (corruption of the newest version, the fault start-up must report)
CORRUPTIONS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "flip_bytes": (_flip_bytes, "checksum_mismatch"),
    "truncate": (_truncate, "checksum_mismatch"),
    "corrupt_json": (_corrupt_json, "metadata_not_json"),
    "delete_arrays": (_delete_arrays, "arrays_missing"),
}


def _files(store: Path, version: int) -> tuple[Path, Path]:
    return store / f"model-{version:08d}.npz", store / f"model-{version:08d}.json"


def _build_store(bootstrap: str, topic: str, group: str, store: Path) -> list[int]:
    """Three versions learnt from Kafka (300 events each); returns events_seen per version."""
    ids = EventIdFactory()
    updater = RealTimeModelUpdater(kafka_servers=bootstrap, kafka_topic=topic,
                                   consumer_group=group, model_storage_path=str(store),
                                   batch_size=100, save_interval_seconds=3600, seed=0)
    seen = []
    try:
        for _ in range(3):
            target = updater.get_metrics()["events_seen"] + 300
            _produce_spread(bootstrap, topic, _good_events(300, ids))
            poll_until(lambda t=target: True if (updater.process_pending(timeout=0.2) or True)
                       and updater.get_metrics()["events_seen"] >= t else None,
                       timeout=60, what="events applied in-process")
            updater.save()
            seen.append(updater.get_metrics()["events_seen"])
    finally:
        updater.stop()
    return seen


def _produce_spread(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for i, value in enumerate(values):
            producer.send(topic, key=f"agent-{i % 4}".encode(), value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_newest_model_in_process(corruption: str, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    corrupt, fault = CORRUPTIONS[corruption]
    store = tmp_path / "models"
    ids = EventIdFactory()
    first = RealTimeModelUpdater(model_storage_path=str(store), batch_size=50, seed=0)
    seen = []
    for _ in range(3):
        first.ingest([json.loads(v) for v in _good_events(200, ids)])
        first.save()
        seen.append(first.get_metrics()["events_seen"])
    corrupt(*_files(store, 3))

    caplog.set_level(logging.WARNING, logger="autoretrain.webhook.updater")
    again = RealTimeModelUpdater(model_storage_path=str(store), batch_size=50, seed=0)
    m = again.get_metrics()
    assert m["model_loaded"] and m["model_version"] == 2 and m["events_seen"] == seen[1]
    assert m["corrupt_versions_skipped"] == 1
    assert [(v["version"], v["fault"]) for v in m["corrupt_versions"]] == [(3, fault)]
    assert again.registry.get_sample_value("autoretrain_model_store_corrupt_versions_skipped_total",
                                           {"fault": fault}) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("version 3" in line and f"({fault})" in line for line in errors), errors


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_newest_model_webhook_process(corruption: str, kafka_server: KafkaServer,
                                              kafka_topic: str, tmp_path: Path) -> None:
    corrupt, fault = CORRUPTIONS[corruption]
    bootstrap, group = kafka_server.bootstrap, f"corrupt-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "models"
    seen = _build_store(bootstrap, kafka_topic, group, store)
    corrupt(*_files(store, 3))
    webhook = webhook_server(tmp_path / "webhook", bootstrap, kafka_topic, group, models=store)
    try:
        webhook.start()
        ready = webhook.json("/readyz")
        first = webhook.json("/api/performance/stats")
        # Version 2 was loaded; the events of the corrupt version 3 come
        # again from Kafka (from version 2's offsets), applied once.
        final = poll_until(
            lambda: s if (s := webhook.json("/api/performance/stats"))["events_seen"]
            >= seen[2] and s["consumer_lag"] == 0 else None,
            timeout=60, what="the events after version 2 re-applied")
        skipped_metric = webhook.metric("autoretrain_model_store_corrupt_versions_skipped_total",
                                        f'fault="{fault}"')
    finally:
        code = webhook.stop()
    assert code == 0
    log = webhook.log.read_text()
    line = next((x for x in log.splitlines() if "skipping corrupt model version 3" in x), "")
    assert f"({fault})" in line, log[-3000:]
    assert re.search(r"loaded model version 2 \(", log)
    assert first["corrupt_versions_skipped"] == 1
    assert first["corrupt_versions"][0]["version"] == 3
    assert first["corrupt_versions"][0]["fault"] == fault
    assert "1 corrupt newer version(s) skipped" in ready["checks"]["model"]
    assert skipped_metric == 1
    assert final["events_seen"] == seen[2] == 900
    assert final["events_applied"] == seen[2] - seen[1] and final["duplicates"] == 0
    record_figures("point_6_corrupt_model", {
        "command": COMMAND + f"'corrupt_newest_model and {corruption}'",
        "versions_stored": 3,
        "corrupted_version": 3,
        "fault_reported": fault,
        "log_line": line.split(": ", 1)[-1] if ": " in line else line,
        "loaded_version": 2,
        "events_reapplied_from_kafka": final["events_applied"],
        "events_in_model_after_recovery": final["events_seen"],
        "events_produced": 900,
    }, sub=corruption)
