"""``python -m autoretrain.exporter`` as an operator runs it: a process, options from the env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kafka import KafkaProducer
from servers.common import http_get as get
from servers.common import wait_until
from servers.exporter import ExporterProcess, exporter_env

from autoretrain.exporter.events import encode_event, run_event


def wait(predicate, timeout: float) -> bool:
    return wait_until(predicate, timeout, interval=0.1)


def test_standalone_exporter_process_serves_metrics_from_kafka(kafka_server, kafka_topic, tmp_path):
    exporter = ExporterProcess(tmp_path, exporter_env(kafka_server.bootstrap, kafka_topic,
                                                      group=f"cli-{kafka_topic}"))
    base = exporter.base
    try:
        assert wait(lambda: get(base + "/readyz")[0] == 200, 30), exporter.log()
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
        assert exporter.stop() == 0


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
