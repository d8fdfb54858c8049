"""The updater when Kafka is away, the broker probe, and the store's crash debris and faults.

Fakes stand in for kafka-python here; the real broker is in
tests/integration/test_faults_kafka.py and test_faults_updater.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from servers.common import wait_until

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.exporter.kafka_sink import BrokerProbe
from autoretrain.webhook import RealTimeModelUpdater, create_app
from autoretrain.webhook.updater import store as store_module
from autoretrain.webhook.updater.store import CorruptModel, ModelStore

TOKEN = "test-token-0123456789abcdef"


class FakeConsumer:
    """Enough of ``KafkaConsumer`` for the updater: one partition, scripted failures."""

    def __init__(self, values: list[bytes], poll_failures: int = 0) -> None:
        self.values = values
        self.next_offset = 0
        self.poll_failures = poll_failures
        self.commits: list[dict[Any, Any]] = []
        self.listener: Any = None
        self.tp = TopicPartition("t", 0)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {self.tp.partition}

    def assign(self, partitions: list[Any]) -> None:
        assert partitions == [self.tp]

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if self.poll_failures:
            self.poll_failures -= 1
            raise KafkaConnectionError("111 ECONNREFUSED")
        batch = self.values[self.next_offset : self.next_offset + max_records]
        records = [SimpleNamespace(value=v, offset=self.next_offset + i)
                   for i, v in enumerate(batch)]
        self.next_offset += len(batch)
        if not records:
            time.sleep(timeout_ms / 1000)
        return {self.tp: records} if records else {}

    def seek(self, tp: Any, offset: int) -> None:
        self.next_offset = offset

    def commit(self, offsets: dict[Any, Any], timeout_ms: int | None = None) -> None:
        self.commits.append(offsets)

    def assignment(self) -> list[Any]:
        return [self.tp]

    def highwater(self, tp: Any) -> int:
        return len(self.values)

    def end_offsets(self, partitions: list[Any], timeout_ms: int | None = None
                    ) -> dict[Any, int]:
        return {tp: len(self.values) for tp in partitions}

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return self.next_offset

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        pass


def values(n: int) -> list[bytes]:
    ids = EventIdFactory()
    return [encode_event(run_event(ids(), 1.0 + i, f"a{i % 3}", "llm", "success", 5.0, 1, 0.0))
            for i in range(n)]


def kafka_updater(tmp_path: Path, factory: Callable[..., Any], **kwargs: Any
                  ) -> RealTimeModelUpdater:
    kwargs.setdefault("kafka_check", lambda: None)
    return RealTimeModelUpdater(kafka_servers="127.0.0.1:9", kafka_topic="t",
                                model_storage_path=str(tmp_path / "models"), batch_size=10,
                                batch_timeout_seconds=0.05, consumer_factory=factory, **kwargs)


def test_start_survives_a_broker_that_is_down_then_consumes(tmp_path: Path) -> None:
    attempts = []
    consumer = FakeConsumer(values(40))

    def factory(**settings: Any) -> FakeConsumer:
        attempts.append(settings)
        if len(attempts) <= 2:
            raise KafkaTimeoutError("Bootstrap failed")
        return consumer

    u = kafka_updater(tmp_path, factory)
    began = time.monotonic()
    u.start()  # must neither raise nor wait for the broker
    try:
        assert time.monotonic() - began < 1.0 and u.running
        assert wait_until(lambda: len(attempts) >= 1)
        assert wait_until(lambda: u.get_metrics()["events_applied"] == 40)
        m = u.get_metrics()
        assert m["kafka_reachable"] is True and m["kafka_error"] is None
        assert m["errors"] == 2 and "cannot connect" in m["last_error"]
        assert attempts[0]["enable_auto_commit"] is False
    finally:
        u.stop()


def test_while_no_consumer_exists_metrics_say_why(tmp_path: Path) -> None:
    def factory(**settings: Any) -> FakeConsumer:
        raise KafkaTimeoutError("Bootstrap failed")

    u = kafka_updater(tmp_path, factory)
    u.start()
    try:
        assert wait_until(lambda: u.get_metrics()["errors"] >= 1)
        m = u.get_metrics()
        assert m["kafka_reachable"] is False
        assert m["kafka_error"].startswith("Kafka consumer not connected: Kafka at 127.0.0.1:9")
        assert "KafkaTimeoutError" in m["kafka_error"]
    finally:
        u.stop(timeout=10)
    assert not u.running


def test_poll_errors_are_retried_counted_and_lose_nothing(tmp_path: Path) -> None:
    consumer = FakeConsumer(values(30), poll_failures=3)
    u = kafka_updater(tmp_path, lambda **s: consumer, save_interval_seconds=0.01)
    u.start()
    try:
        assert wait_until(lambda: u.get_metrics()["events_applied"] == 30)
        m = u.get_metrics()
        assert m["errors"] == 3 and "poll failed" in m["last_error"]
        assert u.registry.get_sample_value("autoretrain_model_updater_errors_total") == 3
    finally:
        u.stop()
    assert u.get_metrics()["events_seen"] == 30 and u.get_metrics()["duplicates"] == 0


def test_an_unreachable_broker_is_reported_even_while_polls_return_nothing(
        tmp_path: Path) -> None:
    consumer = FakeConsumer([])
    probe = {"error": None}
    u = kafka_updater(tmp_path, lambda **s: consumer, kafka_check=lambda: probe["error"])
    u.start()
    try:
        assert wait_until(lambda: u.get_metrics()["kafka_reachable"] is True)
        probe["error"] = "127.0.0.1:9: Connection refused"
        m = u.get_metrics()
        assert m["kafka_reachable"] is False
        assert m["kafka_error"] == "Kafka unreachable: 127.0.0.1:9: Connection refused"
    finally:
        u.stop()


def test_readyz_names_kafka_when_it_is_unreachable(tmp_path: Path) -> None:
    consumer = FakeConsumer([])
    probe = {"error": "127.0.0.1:9: Connection refused"}
    u = kafka_updater(tmp_path, lambda **s: consumer, kafka_check=lambda: probe["error"])
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "ledger")}, updater=u,
                     registry=u.registry)
    u.start()
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["reason"] == "Kafka unreachable: 127.0.0.1:9: Connection refused"
        assert body["checks"]["kafka"] == "unreachable"
        probe["error"] = None
        assert wait_until(lambda: app.test_client().get("/readyz").status_code == 200)
        assert app.test_client().get("/readyz").get_json()["checks"]["kafka"] == "reachable"
    finally:
        app.extensions["autoretrain"].close()
        u.stop()


def test_a_commit_that_fails_on_stop_does_not_fail_stop(tmp_path: Path) -> None:
    consumer = FakeConsumer(values(20))

    def failing_commit(offsets: Any, timeout_ms: int | None = None) -> None:
        raise KafkaTimeoutError("commit timed out")

    u = kafka_updater(tmp_path, lambda **s: consumer, save_interval_seconds=3600)
    u.start()
    assert wait_until(lambda: u.get_metrics()["events_applied"] == 20)
    consumer.commit = failing_commit  # type: ignore[method-assign]
    u.stop()
    # The model and its offsets were saved: the next start resumes there.
    stored = ModelStore(tmp_path / "models").load_latest()
    assert stored is not None and stored.metadata["kafka"]["offsets"] == {"0": 20}


# -- BrokerProbe ----------------------------------------------------------------------------


def test_broker_probe_reports_a_listening_and_a_closed_port() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert BrokerProbe(f"127.0.0.1:{port}").check() is None
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead = closed.getsockname()[1]
        error = BrokerProbe(f"127.0.0.1:{dead}").check()
        assert error is not None and error.startswith(f"127.0.0.1:{dead}: ")
        # Any one reachable server is enough.
        assert BrokerProbe(f"127.0.0.1:{dead},127.0.0.1:{port}").check() is None


def test_broker_probe_caches_its_answer_for_the_interval() -> None:
    now = [0.0]
    probe = BrokerProbe("127.0.0.1:9", interval_seconds=1.0, clock=lambda: now[0])
    connects = []
    probe._connect = lambda: connects.append(1) or "refused"  # type: ignore[method-assign]
    assert probe.check() == "refused" and probe.check() == "refused" and len(connects) == 1
    now[0] = 1.5
    assert probe.check() == "refused" and len(connects) == 2


@pytest.mark.parametrize("servers", ["", " , ", "host:port"])
def test_broker_probe_rejects_bad_addresses(servers: str) -> None:
    with pytest.raises(ValueError):
        BrokerProbe(servers)


# -- the store: faults by name, crash debris -------------------------------------------------


def arrays() -> dict[str, np.ndarray]:
    return {"x": np.arange(5.0)}


@pytest.mark.parametrize("damage, fault", [
    (lambda npz, meta: npz.write_bytes(npz.read_bytes()[:20]), "checksum_mismatch"),
    (lambda npz, meta: npz.unlink(), "arrays_missing"),
    (lambda npz, meta: meta.write_text("{not json"), "metadata_not_json"),
    (lambda npz, meta: meta.write_text(json.dumps({"format": "other"})), "metadata_invalid"),
])
def test_corrupt_model_names_its_fault(tmp_path: Path, damage: Callable[[Path, Path], Any],
                                       fault: str) -> None:
    store = ModelStore(tmp_path)
    store.save(arrays(), {})
    damage(tmp_path / "model-00000001.npz", tmp_path / "model-00000001.json")
    with pytest.raises(CorruptModel) as info:
        store.load(1)
    assert info.value.fault == fault


def test_remove_incomplete_deletes_only_crash_debris(tmp_path: Path, monkeypatch) -> None:
    store = ModelStore(tmp_path)
    killed_in_save = []
    write = store_module._atomic_write

    def crash_after_arrays(path: Path, data: bytes) -> None:
        write(path, data)
        if path.suffix == ".npz":
            killed_in_save.append(int(path.stem[6:]))
            raise KeyboardInterrupt  # stands in for the process dying between the two files

    store.save(arrays(), {})
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "_atomic_write", crash_after_arrays)
        with pytest.raises(KeyboardInterrupt):
            store.save(arrays(), {})  # leaves model-00000002.npz without metadata
    (tmp_path / ".tmp-model-00000003.npz-abc").write_bytes(b"partial")
    assert killed_in_save == [2] and store.versions() == [1]
    # Version 2's arrays may still be "the newest save": kept until a newer commit.
    assert store.remove_incomplete() == [".tmp-model-00000003.npz-abc"]
    assert store.save(arrays(), {}) == 3  # never reuses the stray number
    assert store.remove_incomplete() == ["model-00000002.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model-00000001.json", "model-00000001.npz", "model-00000003.json",
        "model-00000003.npz"]


def test_assignment_seeks_to_model_offsets_and_rewinds_partitions_the_model_never_read() -> None:
    """A model with positions on the topic but none for a partition has applied
    nothing from it: that partition starts at its beginning, not at a group
    commit made by a newer (corrupt or rolled back) version."""
    from autoretrain.webhook.updater.sources import KafkaSource

    calls: list[tuple[str, int, int | None]] = []

    class Consumer:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1}

        def assign(self, tps: list[Any]) -> None:
            calls.append(("assign", len(tps), None))

        def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
            return {}

        def seek(self, tp: Any, offset: int) -> None:
            calls.append(("seek", tp.partition, offset))

        def seek_to_beginning(self, *tps: Any) -> None:
            calls.extend(("beginning", tp.partition, None) for tp in tps)

    positions: dict[int, int] = {0: 7}
    source = KafkaSource("127.0.0.1:9", "t", "g", positions=lambda: positions,
                         on_revoke=lambda: None, consumer_factory=lambda **_: Consumer())
    source.poll(0.0, 10)
    assert calls == [("assign", 2, None), ("seek", 0, 7), ("beginning", 1, None)]
    calls.clear()
    positions.clear()  # a new model: the group's committed offsets stand
    source = KafkaSource("127.0.0.1:9", "t", "g", positions=lambda: positions,
                         on_revoke=lambda: None, consumer_factory=lambda **_: Consumer())
    source.poll(0.0, 10)
    assert calls == [("assign", 2, None)]


def test_source_assigns_partitions_as_they_appear_and_reports_none_held() -> None:
    """No partition known: nothing assigned and unassigned_seconds grows (readiness
    says so); partitions that appear, also added later, are assigned at the next
    check, new ones from their beginning when the model has positions."""
    from autoretrain.webhook.updater.sources import KafkaSource

    now = [100.0]
    known: set[int] = set()
    calls: list[Any] = []

    class Consumer:
        def partitions_for_topic(self, topic: str) -> set[int] | None:
            return set(known) or None

        def assign(self, tps: list[Any]) -> None:
            calls.append(("assign", sorted(tp.partition for tp in tps)))

        def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
            return {}

        def seek(self, tp: Any, offset: int) -> None:
            calls.append(("seek", tp.partition, offset))

        def seek_to_beginning(self, *tps: Any) -> None:
            calls.extend(("beginning", tp.partition) for tp in tps)

    source = KafkaSource("127.0.0.1:9", "t", "g", positions=lambda: {0: 5},
                         on_revoke=lambda: None, consumer_factory=lambda **_: Consumer(),
                         partition_check_seconds=10.0, clock=lambda: now[0])
    source.poll(0.0, 10)
    now[0] += 40.0
    source.poll(0.0, 10)
    assert calls == [] and source.unassigned_seconds() == 40.0
    known.add(0)
    source.poll(0.0, 10)  # checked at every poll while nothing is held
    assert calls == [("assign", [0]), ("seek", 0, 5)] and source.unassigned_seconds() is None
    calls.clear()
    known.add(1)
    now[0] += 5.0
    source.poll(0.0, 10)
    assert calls == []  # not yet due
    now[0] += 5.0
    source.poll(0.0, 10)
    assert calls == [("assign", [0, 1]), ("beginning", 1)]


def test_readiness_says_when_the_consumer_holds_no_partition(tmp_path: Path, monkeypatch
                                                             ) -> None:
    from autoretrain.webhook.updater import consumer as consumer_module

    monkeypatch.setattr(consumer_module, "_UNASSIGNED_GRACE_SECONDS", 0.0)
    fake = FakeConsumer([])
    fake.partitions_for_topic = lambda topic: None  # type: ignore[method-assign]
    u = kafka_updater(tmp_path, lambda **_: fake)
    u.start()
    try:
        assert wait_until(lambda: u.kafka_status() is not None, 10)
        status = u.kafka_status()
        assert status is not None and "holds no partition of t" in status
    finally:
        u.stop()
