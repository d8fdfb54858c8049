"""The exporter against a real Kafka broker (started by the kafka_server fixture)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry
from servers import free_port
from servers.common import wait_until

from autoretrain.exporter import PerformanceMonitor, validate_event
from autoretrain.exporter.events import accuracy_event, encode_event, run_event
from autoretrain.exporter.standalone import StandaloneExporter

STATUSES = ("success", "failure", "error", "timeout")


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_monitor_events_arrive_on_the_topic_with_the_contract(kafka_server, kafka_topic):
    monitor = PerformanceMonitor(
        registry=CollectorRegistry(), kafka_servers=kafka_server.bootstrap, kafka_topic=kafka_topic
    )
    for i in range(20):
        monitor.record_agent_run(
            f"run-{i}",
            f"agent-{i % 3}",
            "llm",
            STATUSES[i % 4],
            100.0 + i,
            10,
            0.01,
            task_type="forecast",
            context={"region": "eu"},
        )
        monitor.record_accuracy(
            f"agent-{i % 3}", f"task-{i}", accuracy=0.5, feedback_source="human"
        )
    monitor.stop()  # delivers what is queued
    assert monitor.get_stats()["events_published"] == 40
    records = consume_all(kafka_server.bootstrap, kafka_topic, 40)
    assert len(records) == 40
    events = [json.loads(r.value) for r in records]
    for record, event in zip(records, events, strict=True):
        assert validate_event(event)["event_id"] == event["event_id"]
        assert record.key == event["agent_name"].encode()
        assert event["schema"] == 1 and event["task_type"] in ("forecast", "default")
    runs = [e for e in events if e["kind"] == "run"]
    assert len(runs) == 20 and len({e["event_id"] for e in events}) == 40
    assert {e["context"]["region"] for e in runs} == {"eu"}
    assert Counter(e["status"] for e in runs) == Counter(STATUSES[i % 4] for i in range(20))


def test_two_standalone_exporters_split_partitions_and_sum_to_the_totals(kafka_server, kafka_topic):
    rng = random.Random(7)
    exporters = [
        StandaloneExporter(
            kafka_server.bootstrap,
            topic=kafka_topic,
            group_id=f"g-{kafka_topic}",
            registry=CollectorRegistry(),
        )
        for _ in range(2)
    ]
    for exp in exporters:
        exp.start()
    try:
        # Produce only once both own a partition: a rebalance mid-stream could
        # hand the same records to both instances.
        assert wait_until(lambda: all(exp.partitions for exp in exporters), 30, 0.05), [
            e.partitions for e in exporters
        ]
        assert sorted(p for e in exporters for p in e.partitions) == [0, 1]
        producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap)
        expected_runs: Counter = Counter()
        expected_tokens: Counter = Counter()
        expected_acc: Counter = Counter()
        for i in range(1000):
            agent = f"agent-{rng.randrange(8)}"
            if i % 4 == 3:
                event = accuracy_event(f"e{i}", time.time(), agent, "llm", f"t{i}", 0.5, "human")
                expected_acc[agent] += 1
            else:
                status = rng.choice(STATUSES)
                tokens = rng.randrange(100)
                event = run_event(f"e{i}", time.time(), agent, "llm", status, 10.0, tokens, 0.0)
                expected_runs[(agent, status)] += 1
                expected_tokens[agent] += tokens
            producer.send(kafka_topic, key=agent.encode(), value=encode_event(event))
        producer.flush()
        producer.close()

        def applied(exp):
            return (
                exp.registry.get_sample_value(
                    "autoretrain_exporter_events_total", {"result": "applied"}
                )
                or 0
            )

        assert wait_until(lambda: sum(applied(e) for e in exporters) >= 1000, 60, 0.05)
        assert all(applied(e) > 0 for e in exporters)  # both did part of the work

        def total(name, labels):
            return sum(e.registry.get_sample_value(name, labels) or 0 for e in exporters)

        for (agent, status), n in expected_runs.items():
            assert (
                total(
                    "autoretrain_agent_runs_total",
                    {"agent": agent, "agent_type": "llm", "status": status},
                )
                == n
            )
        for agent, n in expected_tokens.items():
            assert total("autoretrain_agent_tokens_total", {"agent": agent}) == n
        for agent, n in expected_acc.items():
            assert total("autoretrain_agent_prediction_accuracy_ratio_count", {"agent": agent}) == n
        assert sum(applied(e) for e in exporters) == 1000
    finally:
        for exp in exporters:
            exp.stop()


def test_monitor_with_a_dead_broker_keeps_recording_without_blocking():
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    registry = CollectorRegistry()
    monitor = PerformanceMonitor(registry=registry, kafka_servers=dead)
    start = time.monotonic()
    for i in range(500):
        monitor.record_agent_run(f"r{i}", "a", "llm", "success", 1.0)
    elapsed = time.monotonic() - start
    # One blocked send would take the producer's max_block_ms (5 s): 500 calls
    # finishing well under that shows the caller never waited for Kafka.
    assert elapsed < 2.5
    assert (
        registry.get_sample_value(
            "autoretrain_agent_runs_total", {"agent": "a", "agent_type": "llm", "status": "success"}
        )
        == 500
    )
    assert wait_until(lambda: monitor.event_sink.stats()["send_errors"] > 0, 30, 0.05)
    stats = monitor.get_stats()
    assert stats["events_published"] == 500 and stats["events_pending"] == 500
    assert stats["runs_recorded"] == 500
    start = time.monotonic()
    monitor.stop(timeout=2)
    assert time.monotonic() - start < 10
