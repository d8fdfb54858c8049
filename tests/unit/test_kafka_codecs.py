"""A consumer that cannot decode what it reads says so (issue 13, item 15).

A fake consumer decodes real Kafka record batches with kafka-python's own
decoder, so taking a codec away (monkeypatching ``kafka.codec.has_snappy``)
raises the real ``UnsupportedCodecError`` inside ``poll``, as it does with a
real broker. Every codec against the real broker is in
tests/integration/test_compressed_topics.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kafka.codec
from kafka import TopicPartition
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from prometheus_client import CollectorRegistry
from servers.common import wait_until

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.exporter.kafka_codecs import missing_codecs, undecodable
from autoretrain.exporter.standalone import StandaloneExporter
from autoretrain.webhook import RealTimeModelUpdater, create_app

TOKEN = "test-token-0123456789abcdef"
SNAPPY = 2  # Kafka's compression type id


def values(n: int) -> list[bytes]:
    ids = EventIdFactory()
    return [encode_event(run_event(ids(), 1.0 + i, f"a{i % 3}", "llm", "success", 5.0, 1, 0.0))
            for i in range(n)]


def snappy_batch(payloads: list[bytes]) -> bytes:
    builder = MemoryRecordsBuilder(2, SNAPPY, 10_000_000)
    for value in payloads:
        builder.append(0, None, value)
    builder.close()
    return bytes(builder.buffer())


class DecodingConsumer:
    """One partition holding one snappy record batch, decoded at every poll."""

    def __init__(self, batch: bytes) -> None:
        self.batch = batch
        self.next_offset = 0
        self.tp = TopicPartition("t", 0)
        self.listener: Any = None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {self.tp.partition}

    def assign(self, partitions: list[Any]) -> None:
        assert partitions == [self.tp]

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        batch = MemoryRecords(self.batch).next_batch()
        assert batch is not None
        records = [SimpleNamespace(value=r.value, offset=r.offset)
                   for r in batch if r.offset >= self.next_offset][:max_records]
        if records:
            self.next_offset = records[-1].offset + 1
        return {self.tp: records} if records else {}

    def seek(self, tp: Any, offset: int) -> None:
        self.next_offset = offset

    def commit(self, offsets: Any = None, timeout_ms: int | None = None) -> None:
        pass

    def assignment(self) -> list[Any]:
        return [self.tp]

    def highwater(self, tp: Any) -> int:
        return 100

    def end_offsets(self, partitions: list[Any], timeout_ms: int | None = None
                    ) -> dict[Any, int]:
        return {tp: 100 for tp in partitions}

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return self.next_offset

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        pass


def test_the_codecs_kafka_offers_are_installed() -> None:
    assert missing_codecs() == []


def test_undecodable_recognises_the_codec_error_also_when_wrapped(monkeypatch) -> None:
    batch = snappy_batch(values(50))
    monkeypatch.setattr(kafka.codec, "has_snappy", lambda: False)
    try:
        list(MemoryRecords(batch).next_batch())
    except Exception as exc:
        error = exc
    reason = undecodable(error)
    assert reason is not None and "snappy" in reason and "python-snappy" in reason
    try:
        raise ConnectionError("poll failed") from error
    except ConnectionError as wrapped:
        assert undecodable(wrapped) == reason
    assert undecodable(ConnectionError("refused")) is None


def test_the_exporter_says_it_cannot_decode_and_recovers(monkeypatch) -> None:
    consumer = DecodingConsumer(snappy_batch(values(100)))
    monkeypatch.setattr(kafka.codec, "has_snappy", lambda: False)
    registry = CollectorRegistry()
    exp = StandaloneExporter("k:9092", topic="t", registry=registry,
                             consumer_factory=lambda *_: consumer, broker_check=lambda: None)
    exp.start()
    try:
        assert wait_until(lambda: not exp.ready()[0] and "cannot decode" in exp.ready()[1])
        _, reason = exp.ready()
        assert "snappy" in reason and reason.startswith("cannot decode the records of t")
        assert registry.get_sample_value("autoretrain_exporter_consumer_undecodable") == 1
        monkeypatch.undo()  # the codec is installed again
        assert wait_until(lambda: registry.get_sample_value(
            "autoretrain_exporter_events_total", {"result": "applied"}) == 100)
        assert wait_until(lambda: exp.ready()[0])
        assert registry.get_sample_value("autoretrain_exporter_consumer_undecodable") == 0
    finally:
        exp.stop()


def test_the_updater_says_it_cannot_decode_on_readyz_and_recovers(
        tmp_path: Path, monkeypatch) -> None:
    consumer = DecodingConsumer(snappy_batch(values(100)))
    monkeypatch.setattr(kafka.codec, "has_snappy", lambda: False)
    u = RealTimeModelUpdater(kafka_servers="127.0.0.1:9", kafka_topic="t",
                             model_storage_path=str(tmp_path / "models"), batch_size=10,
                             batch_timeout_seconds=0.05, consumer_factory=lambda **_: consumer,
                             kafka_check=lambda: None)
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "ledger")}, updater=u,
                     registry=u.registry)
    u.start()
    try:
        def readyz() -> Any:
            return app.test_client().get("/readyz")

        assert wait_until(lambda: "cannot decode" in (u.get_metrics()["kafka_error"] or ""))
        response = readyz()
        assert response.status_code == 503
        assert "cannot decode" in response.get_json()["reason"]
        assert "snappy" in response.get_json()["reason"]
        assert u.registry.get_sample_value("autoretrain_model_updater_consumer_undecodable") == 1
        monkeypatch.undo()
        assert wait_until(lambda: u.get_metrics()["events_applied"] == 100)
        assert wait_until(lambda: readyz().status_code == 200)
        assert u.registry.get_sample_value("autoretrain_model_updater_consumer_undecodable") == 0
    finally:
        app.extensions["autoretrain"].close()
        u.stop()
