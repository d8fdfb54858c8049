"""The model topic against a real broker: a trainer process, follower processes, bad messages.

The trainer (``tests/servers/model_trainer.py``) is a ``RealTimeModelUpdater``
with a ``ModelPublisher``; each follower (``tests/servers/model_follower.py``)
a ``ModelFollower`` on the topic, printing what it serves. The test drives
promotions one at a time and waits for both followers to serve each one,
so "in order, none skipped" is checked version by version.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from servers import KafkaServer
from servers.lines import LineProcess
from servers.models import teach

from autoretrain.webhook import RealTimeModelUpdater, create_app
from autoretrain.webhook.serving import ModelPublisher, encode_model

SERVERS = Path(__file__).resolve().parents[1] / "servers"
PROMOTIONS = 20
WAIT = 60.0  # a generous bound for a busy 2-core machine; the benchmark measures the latency


@pytest.fixture
def model_topic(kafka_server: KafkaServer) -> str:
    if not kafka_server.running():
        kafka_server.start()
    return f"models-{uuid.uuid4().hex[:8]}"  # the trainer creates it (compacted)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., LineProcess]]:
    started: list[LineProcess] = []

    def spawn(script: str, *args: str) -> LineProcess:
        proc = LineProcess(SERVERS / script, args, tmp_path / f"{script}-{len(started)}.log")
        started.append(proc)
        return proc

    yield spawn
    for proc in reversed(started):
        proc.stop()


def _version(line: str) -> int:
    return int(line.split()[1])


def _ranking(line: str) -> list[list[object]]:
    return json.loads(line[line.index("["):])  # type: ignore[no-any-return]


def _failures(proc: LineProcess) -> dict[str, int]:
    lines = [line for line in proc.seen if line.startswith("failures ")]
    return json.loads(lines[-1].split(" ", 1)[1]) if lines else {}  # type: ignore[no-any-return]


def test_promotions_reach_every_follower_in_order_and_bad_messages_are_skipped(
        kafka_server: KafkaServer, model_topic: str, spawn: Callable[..., LineProcess],
        tmp_path: Path) -> None:
    kafka = ("--kafka-servers", kafka_server.bootstrap, "--topic", model_topic)
    trainer = spawn("model_trainer.py", *kafka, "--store", str(tmp_path / "store"))
    ready = trainer.expect(lambda line: line.startswith("ready "), WAIT, "trainer ready")
    first = _version(ready)
    followers = [spawn("model_follower.py", *kafka, "--max-message-bytes", "200000")
                 for _ in range(2)]
    for f in followers:
        line = f.expect(lambda line: line.startswith("serving "), WAIT, "first model")
        assert _version(line) == first and _ranking(line) == _ranking(ready)

    promoted = [first]
    late: LineProcess | None = None
    for step in range(1, PROMOTIONS + 1):
        trainer.send("promote")
        line = trainer.expect(lambda line: line.startswith("promoted "), WAIT, f"promotion {step}")
        version = _version(line)
        assert version > promoted[-1]
        promoted.append(version)
        watching = followers + ([late] if late is not None else [])
        for f in watching:
            served = f.expect(lambda line: line.startswith("serving "), WAIT,
                              f"version {version} served")
            # The next version served is exactly the one just promoted: in
            # order, none skipped, and the same ranking as the trainer's.
            assert _version(served) == version
            assert _ranking(served) == _ranking(line)
        if step == 5:
            # Started after five promotions: the first version it serves is the fifth.
            late = spawn("model_follower.py", *kafka)
            served = late.expect(lambda line: line.startswith("serving "), WAIT, "late follower")
            assert _version(served) == version

    # Garbage, a truncated model and an oversized message on the topic: skipped
    # and counted; the last good model keeps serving; the next promotion still arrives.
    from kafka import KafkaProducer

    store_version = promoted[-1]
    npz, metadata = RealTimeModelUpdater(model_storage_path=str(tmp_path / "store")).store.read(
        store_version)
    good = encode_model("agent_selection", store_version, npz, metadata)
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, max_request_size=2_000_000)
    key = b"agent_selection"
    for value in (b"garbage, not a model", good[: len(good) // 2], b"ARMT\x01" + b"x" * 300_000):
        producer.send(model_topic, key=key, value=value).get(timeout=30)
    producer.close()
    for f in followers:
        f.expect(lambda line: line.startswith("failures ") and sum(
            json.loads(line.split(" ", 1)[1]).values()) >= 3, WAIT, "three skipped messages")
        assert _failures(f) == {"corrupt": 1, "partial": 1, "foreign": 0, "older": 0,
                                "too_large": 1}
        assert not [line for line in f.seen if line.startswith("serving ")
                    and _version(line) > store_version]
    trainer.send("promote")
    line = trainer.expect(lambda line: line.startswith("promoted "), WAIT, "promotion after")
    for f in followers:
        served = f.expect(lambda line: line.startswith("serving "), WAIT, "after bad messages")
        assert _version(served) == _version(line)
    for f in [*followers, late]:
        assert f is not None
        versions = [_version(x) for x in f.seen if x.startswith("serving ")]
        assert versions == sorted(set(versions))


def test_a_model_too_large_for_the_topic_fails_the_publish_loudly_not_the_promotion(
        kafka_server: KafkaServer, model_topic: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    # The smallest topic limit the publisher accepts: a model of 3 agents fits,
    # one of 300 agents does not.
    publisher = ModelPublisher(kafka_server.bootstrap, model_topic, max_message_bytes=4096,
                               registry=registry)
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "store"), seed=1,
                                   min_holdout_events=10, promotion_tolerance=1.0,
                                   model_publisher=publisher, registry=registry)
    app = create_app({"token": "test-token-0123456789abcdef",
                      "ledger_path": str(tmp_path / "ledger.db")}, updater=updater,
                     registry=registry)
    client = app.test_client()
    try:
        teach(updater, "a0", n=200)
        small = updater.save()
        assert publisher.flush(60) and publisher.published_version == small
        assert client.get("/readyz").get_json()["checks"]["model_topic"] == (
            f"published version {small}")

        teach(updater, "a0", n=3000, agents=300, seed=2, start=5000.0)
        result = updater.trigger_retraining(reason="grow")
        assert result["success"] and result["promoted"]  # the promotion stands
        assert updater.version == result["model_version"] > small
        assert publisher.flush(60)
        assert publisher.published_version == small  # followers keep the previous version
        status = publisher.status()
        assert status is not None and f"model version {updater.version} is" in status
        assert "max.message.bytes 4096" in status
        assert registry.get_sample_value("autoretrain_publisher_failures_total",
                                         {"reason": "too_large"}) == 1
        assert registry.get_sample_value("autoretrain_publisher_model_version") == small
        ready = client.get("/readyz").get_json()
        assert ready["checks"]["model_topic"].startswith("failing: model version")
        assert "publishing to the model topic fails: model version" in ready["reason"]
        assert any(r.levelname == "ERROR" and "NOT published" in r.getMessage()
                   for r in caplog.records)
    finally:
        app.extensions["autoretrain"].close()
        publisher.close()
