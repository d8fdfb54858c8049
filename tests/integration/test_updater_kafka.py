"""The updater against a real Kafka broker: exactly-once learning across restarts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from servers.common import wait_until

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.webhook import RealTimeModelUpdater


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None = None
            ) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for i, value in enumerate(values):
            producer.send(topic, value=value, key=None if keys is None else keys[i])
        producer.flush(timeout=30)
    finally:
        producer.close()


def events(n: int, ids: EventIdFactory, seed: int) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    values, keys = [], []
    for i in range(n):
        agent = f"agent-{rng.integers(5)}"
        event = run_event(ids(), 1_000.0 + i, agent, "llm",
                          "success" if rng.random() < 0.7 else "failure", 50.0, 10, 0.001,
                          task_type=f"task-{rng.integers(3)}")
        values.append(encode_event(event))
        keys.append(agent.encode())
    return values, keys


def updater(bootstrap: str, topic: str, group: str, path: Path, **kwargs: Any
            ) -> RealTimeModelUpdater:
    kwargs.setdefault("batch_size", 500)
    kwargs.setdefault("batch_timeout_seconds", 0.2)
    return RealTimeModelUpdater(kafka_servers=bootstrap, kafka_topic=topic,
                                consumer_group=group, model_storage_path=str(path),
                                seed=0, **kwargs)


def committed(bootstrap: str, topic: str, group: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in (0, 1))
    finally:
        consumer.close()


def crash_and_restart(bootstrap: str, topic: str, group: str, path: Path,
                      values: list[bytes], keys: list[bytes], first: int,
                      crash_when: Callable[[dict[str, Any]], bool]) -> RealTimeModelUpdater:
    """Produce ``values[:first]``; learn them with saves every 50 ms until
    ``crash_when(metrics)`` and a version is saved; crash; produce the rest;
    restart. Returns the restarted updater, stopped once it has seen every
    event and has no lag."""
    produce(bootstrap, topic, values[:first], keys[:first])
    u = updater(bootstrap, topic, group, path, save_interval_seconds=0.05, batch_size=200)
    u.start()
    assert wait_until(lambda: crash_when(u.get_metrics())
                      and u.get_metrics()["model_version"] > 0, 60)
    # Crash: the thread stops and the consumer goes away without a final save
    # or commit; events applied after the last save exist only in memory.
    assert u._consumer.stop(10)
    assert u._consumer.source is not None
    u._consumer.source.consumer.close(autocommit=False)
    produce(bootstrap, topic, values[first:], keys[first:])
    again = updater(bootstrap, topic, group, path)
    again.start()
    try:
        assert wait_until(lambda: again.get_metrics()["events_seen"] >= len(values), 60)
        assert wait_until(lambda: again.get_metrics()["consumer_lag"] == 0, 60)
    finally:
        again.stop()
    return again


def test_ten_thousand_events_applied_once(kafka_server, kafka_topic: str, tmp_path: Path
                                          ) -> None:
    bootstrap, group = kafka_server.bootstrap, f"g-{uuid.uuid4().hex[:8]}"
    values, keys = events(10_000, EventIdFactory(), seed=1)
    produce(bootstrap, kafka_topic, values, keys)
    u = updater(bootstrap, kafka_topic, group, tmp_path)
    u.start()
    try:
        assert wait_until(lambda: u.get_metrics()["events_applied"] >= 10_000, 60)
        assert wait_until(lambda: u.get_metrics()["consumer_lag"] == 0, 60)
    finally:
        u.stop()
    m = u.get_metrics()
    assert m["events_applied"] == 10_000 and m["events_seen"] == 10_000
    assert m["duplicates"] == 0 and m["invalid"] == 0
    assert sum(m["kafka_offsets"].values()) == 10_000
    assert committed(bootstrap, kafka_topic, group) == 10_000
    assert u.registry.get_sample_value("autoretrain_model_updater_events_total",
                                       {"result": "applied"}) == 10_000


def test_graceful_restart_mid_stream(kafka_server, kafka_topic: str, tmp_path: Path) -> None:
    bootstrap, group = kafka_server.bootstrap, f"g-{uuid.uuid4().hex[:8]}"
    ids = EventIdFactory()
    first, first_keys = events(5_000, ids, seed=2)
    produce(bootstrap, kafka_topic, first, first_keys)
    u = updater(bootstrap, kafka_topic, group, tmp_path)
    u.start()
    assert wait_until(lambda: u.get_metrics()["events_applied"] >= 1_000, 60)
    u.stop()  # mid-stream or not: stop applies, saves, commits
    applied_before = u.get_metrics()["events_seen"]
    second, second_keys = events(5_000, ids, seed=3)
    produce(bootstrap, kafka_topic, second, second_keys)
    again = updater(bootstrap, kafka_topic, group, tmp_path)
    again.start()
    try:
        assert again.get_metrics()["model_loaded"]
        assert wait_until(lambda: again.get_metrics()["events_seen"] >= 10_000, 60)
        assert wait_until(lambda: again.get_metrics()["consumer_lag"] == 0, 60)
    finally:
        again.stop()
    assert applied_before >= 1_000
    assert again.get_metrics()["events_seen"] == 10_000
    assert again.get_metrics()["events_applied"] == 10_000 - applied_before


def test_crash_restart_reapplies_only_unsaved_events(kafka_server, kafka_topic: str,
                                                     tmp_path: Path) -> None:
    bootstrap, group = kafka_server.bootstrap, f"g-{uuid.uuid4().hex[:8]}"
    values, keys = events(10_000, EventIdFactory(), seed=4)
    again = crash_and_restart(bootstrap, kafka_topic, group, tmp_path, values, keys, 6_000,
                              lambda m: m["saves"] >= 2)
    assert again.get_metrics()["events_seen"] == 10_000


def test_malformed_messages_are_skipped_and_counted(kafka_server, kafka_topic: str,
                                                    tmp_path: Path) -> None:
    bootstrap, group = kafka_server.bootstrap, f"g-{uuid.uuid4().hex[:8]}"
    good, _ = events(300, EventIdFactory(), seed=5)
    wrong_type = good[0].replace(b'"duration_ms":50.0', b'"duration_ms":"fast"')
    wrong_type = wrong_type.replace(b'"event_id":"', b'"event_id":"x')
    missing = b'{"schema":1,"event_id":"m1","kind":"run","timestamp":1}'
    mixed = [*good[:100], b"not json", wrong_type, missing, b"[1,2]", *good[100:],
             b"\xff\xfe", b"{}"]
    # One partition, so the bad messages sit in front of good ones.
    produce(bootstrap, kafka_topic, mixed, [b"same-key"] * len(mixed))
    u = updater(bootstrap, kafka_topic, group, tmp_path)
    u.start()
    try:
        assert wait_until(lambda: u.get_metrics()["events_consumed"] >= len(mixed), 60)
    finally:
        u.stop()
    m = u.get_metrics()
    assert m["events_applied"] == 300 and m["invalid"] == 6
    assert m["invalid_by_fault"] == {"not_json": 2, "field:duration_ms": 1,
                                     "field:agent_name": 1, "not_object": 1, "schema": 1}
    assert u.registry.get_sample_value("autoretrain_model_updater_events_total",
                                       {"result": "invalid"}) == 6


def test_costs_are_learnt_once_across_a_crash_restart(kafka_server, kafka_topic: str,
                                                      tmp_path: Path) -> None:
    """Issue 18: the cost and latency state is saved with the model and its offsets,
    so a crash restart re-applies only unsaved events and ends with each pair's
    true cost and latency (constant per pair here) and every event seen once."""
    bootstrap, group = kafka_server.bootstrap, f"g-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(7)
    ids = EventIdFactory()
    values, keys = [], []
    for i in range(6_000):
        a, t = int(rng.integers(4)), int(rng.integers(2))
        event = run_event(ids(), 1_000.0 + i, f"agent-{a}", "llm", "success", 100.0 * (a + 1),
                          10, 0.001 * (a + 1) * (t + 1), task_type=f"task-{t}")
        values.append(encode_event(event))
        keys.append(f"agent-{a}".encode())
    again = crash_and_restart(bootstrap, kafka_topic, group, tmp_path, values, keys, 4_000,
                              lambda m: m["events_applied"] >= 2_000)
    assert again.get_metrics()["events_seen"] == 6_000
    for t in range(2):
        for e in again.rank_agents(f"task-{t}", top_k=4):
            a = int(e.agent.rsplit("-", 1)[1])
            assert e.cost == pytest.approx(0.001 * (a + 1) * (t + 1))
            assert e.latency_seconds == pytest.approx(0.1 * (a + 1))


def produce_to(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    """Produce ``values`` round-robin to partitions 0..partitions-1 (once the
    producer's metadata has that many)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        assert wait_until(lambda: len(producer.partitions_for(topic) or ()) >= partitions, 30)
        for i, value in enumerate(values):
            producer.send(topic, value=value, partition=i % partitions)
        producer.flush(timeout=30)
    finally:
        producer.close()


def test_topic_created_after_start_and_partitions_added_later_are_all_consumed(
        kafka_server, tmp_path: Path) -> None:
    """Regression (issue 13): the updater started before its topic existed.

    Subscribed as a group member, its first join assigned nothing (no
    partition metadata yet) and the rejoin could stall for good (kafka-python
    3.0.12 drops a join whose poll timed out once the leader has assigned);
    a partition added later was not seen for metadata_max_age (5 min). The
    updater now assigns itself every partition the metadata holds and
    refreshes it.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    bootstrap, group = kafka_server.bootstrap, f"g-{uuid.uuid4().hex[:8]}"
    topic = f"late-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    u = updater(bootstrap, topic, group, tmp_path, batch_size=10, batch_timeout_seconds=0.05)
    u.start()
    try:
        # The broker creates the topic (1 partition) when the updater first
        # asks for its metadata: the updater is up before the topic is.
        assert wait_until(lambda: topic in admin.list_topics(), 60)
        values, _ = events(300, EventIdFactory(), seed=4)
        produce_to(bootstrap, topic, values[:100], partitions=1)
        assert wait_until(lambda: u.get_metrics()["events_applied"] >= 100, 60), (
            u.get_metrics()["events_applied"], u.kafka_status())
        admin.create_partitions({topic: NewPartitions(3)})
        produce_to(bootstrap, topic, values[100:], partitions=3)
        assert wait_until(lambda: u.get_metrics()["events_applied"] >= 300, 60), (
            u.get_metrics()["kafka_offsets"])
        assert u.kafka_status() is None
    finally:
        u.stop()
        admin.close()
    m = u.get_metrics()
    assert m["events_applied"] == 300 and m["duplicates"] == 0
    assert m["kafka_offsets"] == {0: 100 + 67, 1: 67, 2: 66}

