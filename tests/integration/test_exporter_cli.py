"""``python -m autoretrain.exporter`` as an operator runs it: a process, options from the env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from kafka import KafkaProducer
from servers import free_port

from autoretrain.exporter.events import encode_event, run_event


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_standalone_exporter_process_serves_metrics_from_kafka(kafka_server, kafka_topic, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "AUTORETRAIN_EXPORTER_KAFKA_SERVERS": kafka_server.bootstrap,
        "AUTORETRAIN_EXPORTER_TOPIC": kafka_topic,
        "AUTORETRAIN_EXPORTER_GROUP": f"cli-{kafka_topic}",
    }
    log = (tmp_path / "exporter.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoretrain.exporter", "--listen-address", "127.0.0.1",
         "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait(lambda: get(base + "/readyz")[0] == 200, 30), (
            tmp_path / "exporter.log"
        ).read_text()
        assert json.loads(get(base + "/readyz")[1])["ready"] is True
        producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap)
        for i in range(30):
            event = run_event(f"cli-{i}", time.time(), "cli-agent", "llm", "success", 250.0, 3, 0.5)
            producer.send(kafka_topic, key=b"cli-agent", value=encode_event(event))
        producer.send(kafka_topic, key=b"x", value=b"garbage")
        producer.flush()
        producer.close()
        line = ('autoretrain_agent_runs_total{agent="cli-agent",agent_type="llm",'
                'status="success"} 30\n')
        assert wait(lambda: line in get(base + "/metrics")[1], 30)
        body = get(base + "/metrics")[1]
        assert 'autoretrain_agent_tokens_total{agent="cli-agent"} 90\n' in body
        assert wait(
            lambda: (
                'autoretrain_exporter_events_total{result="invalid"} 1.0'
                in get(base + "/metrics")[1]
            ),
            10,
        )
        assert get(base + "/healthz")[0] == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        log.close()


def test_bad_options_exit_2_with_a_message():
    env = {**os.environ, "AUTORETRAIN_EXPORTER_PORT": "not-a-port"}
    r = subprocess.run(
        [sys.executable, "-m", "autoretrain.exporter"], env=env, capture_output=True, text=True,
        timeout=30
    )
    assert r.returncode == 2 and "not-a-port" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "autoretrain.exporter", "--max-agents", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "max_agents must be an integer >= 1" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "autoretrain.exporter", "--help"], capture_output=True, text=True,
        timeout=30
    )
    assert r.returncode == 0
    for option in (
        "--kafka-servers",
        "--topic",
        "--group",
        "--port",
        "--max-agents",
        "AUTORETRAIN_EXPORTER_",
    ):
        assert option in r.stdout
