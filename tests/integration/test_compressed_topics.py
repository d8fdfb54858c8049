"""Every compression codec Kafka offers, through both consumers, against the real broker.

A producer with ``compression.type`` snappy, lz4 or zstd once stopped the
standalone exporter for good (``UnsupportedCodecError``). Here a
kafka-python producer writes each codec (and none) to a fresh topic; the
standalone exporter and the updater must apply every event. The missing
codec's report (``/readyz``, a gauge) is tested in tests/unit/test_kafka_codecs.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry
from servers.common import wait_until

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.exporter.kafka_codecs import CODECS
from autoretrain.exporter.standalone import StandaloneExporter
from autoretrain.webhook import RealTimeModelUpdater

pytestmark = pytest.mark.integration

N = 300


def produce(bootstrap: str, topic: str, codec: str | None) -> None:
    ids = EventIdFactory()
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec,
                             linger_ms=20)
    try:
        for i in range(N):
            agent = f"agent-{i % 4}"
            event = run_event(ids(), 1_000.0 + i, agent, "llm",
                              "success" if i % 3 else "failure", 50.0, 10, 0.001)
            producer.send(topic, key=agent.encode(), value=encode_event(event))
        producer.flush(timeout=30)
    finally:
        producer.close()


@pytest.mark.parametrize("codec", [None, *CODECS], ids=lambda c: c or "none")
def test_the_standalone_exporter_reads_every_codec(kafka_server, kafka_topic: str,
                                                   codec: str | None) -> None:
    produce(kafka_server.bootstrap, kafka_topic, codec)
    registry = CollectorRegistry()
    exporter = StandaloneExporter(kafka_server.bootstrap, topic=kafka_topic,
                                  group_id=f"g-{uuid.uuid4().hex[:8]}", registry=registry)
    exporter.start()
    try:
        assert wait_until(lambda: registry.get_sample_value(
            "autoretrain_exporter_events_total", {"result": "applied"}) == N, 60), (
            exporter.ready())
        assert exporter.ready()[0], exporter.ready()
        assert registry.get_sample_value("autoretrain_exporter_consumer_undecodable") == 0
    finally:
        exporter.stop()


@pytest.mark.parametrize("codec", [None, *CODECS], ids=lambda c: c or "none")
def test_the_updater_reads_every_codec(kafka_server, kafka_topic: str, tmp_path: Path,
                                       codec: str | None) -> None:
    produce(kafka_server.bootstrap, kafka_topic, codec)
    u = RealTimeModelUpdater(kafka_servers=kafka_server.bootstrap, kafka_topic=kafka_topic,
                             consumer_group=f"g-{uuid.uuid4().hex[:8]}",
                             model_storage_path=str(tmp_path / "models"), batch_size=100,
                             batch_timeout_seconds=0.2, seed=0)
    u.start()
    try:
        assert wait_until(lambda: u.get_metrics()["events_applied"] == N, 60), u.get_metrics()
        assert u.get_metrics()["kafka_error"] is None
        assert u.registry.get_sample_value("autoretrain_model_updater_consumer_undecodable") == 0
    finally:
        u.stop()
