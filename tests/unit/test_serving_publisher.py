"""ModelPublisher with a fake producer and admin client (the real broker: test_model_topic.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from servers.models import teach

from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.serving import ModelPublisher, decode_model


class FakeAdmin:
    topics: dict[str, dict[str, str]] = {}

    def __init__(self, **config: Any) -> None:
        pass

    def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"broker_id": 1}]}

    def list_topics(self) -> list[str]:
        return list(self.topics)

    def create_topics(self, topics: dict[str, Any], **kwargs: Any) -> None:
        for name, spec in topics.items():
            self.topics[name] = dict(spec["configs"])

    def describe_configs(self, resources: list[Any], config_filter: str) -> dict[str, Any]:
        (resource,) = resources
        if resource.name == "1":
            return {"broker": {"1": {"socket.request.max.bytes": {"value": "104857600"}}}}
        return {"topic": {resource.name: {k: {"value": v}
                                          for k, v in self.topics[resource.name].items()}}}

    def close(self) -> None:
        pass


class FakeFuture:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class FakeProducer:
    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail: list[BaseException] = []

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        if self.fail:
            return FakeFuture(self.fail.pop(0))
        self.sent.append((topic, key, value))
        return FakeFuture(None)

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def make(producer: FakeProducer, tmp_path: Path) -> Any:
    FakeAdmin.topics = {}
    made: list[ModelPublisher] = []

    def make(**kwargs: Any) -> tuple[ModelPublisher, RealTimeModelUpdater]:
        registry = CollectorRegistry()
        publisher = ModelPublisher("fake:9092", "models", registry=registry,
                                   producer_factory=lambda **c: producer,
                                   admin_factory=FakeAdmin, **kwargs)
        made.append(publisher)
        updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "store"),
                                       model_publisher=publisher, min_holdout_events=10,
                                       promotion_tolerance=1.0)
        return publisher, updater

    yield make
    for publisher in made:
        publisher.close()


def test_every_saved_version_and_a_rollback_is_published(make: Any,
                                                         producer: FakeProducer) -> None:
    publisher, updater = make()
    teach(updater, "a0")
    v1 = updater.save()
    assert publisher.flush(10) and publisher.published_version == v1
    assert FakeAdmin.topics["models"] == {"cleanup.policy": "compact",
                                          "max.message.bytes": str(16 * 1024 * 1024)}
    teach(updater, "a1", n=100, seed=2, start=3000.0)
    result = updater.trigger_retraining(reason="test")
    assert result["promoted"]
    assert publisher.flush(10) and publisher.published_version == result["model_version"]
    back = updater.rollback(v1)
    assert publisher.flush(10) and publisher.published_version == back
    topic, key, value = producer.sent[-1]
    assert (topic, key) == ("models", b"agent_selection")
    message = decode_model(value)
    assert message.version == back and message.metadata["parent_version"] == v1
    assert publisher.status() is None
    assert publisher.registry.get_sample_value("autoretrain_publisher_model_version") == back


def test_a_kafka_error_is_retried_and_reported_meanwhile(make: Any,
                                                         producer: FakeProducer) -> None:
    from kafka.errors import KafkaTimeoutError

    publisher, updater = make()
    producer.fail = [KafkaTimeoutError("broker away")]
    teach(updater, "a0")
    version = updater.save()
    assert publisher.flush(10)
    assert publisher.published_version == version and publisher.status() is None
    assert publisher.registry.get_sample_value("autoretrain_publisher_failures_total",
                                               {"reason": "kafka_error"}) == 1


def test_too_large_for_the_broker_is_not_retried(make: Any, producer: FakeProducer) -> None:
    from kafka.errors import MessageSizeTooLargeError

    publisher, updater = make()
    producer.fail = [MessageSizeTooLargeError("too big")]
    teach(updater, "a0")
    version = updater.save()
    assert publisher.flush(10)
    assert publisher.published_version is None
    status = publisher.status()
    assert status is not None and f"model version {version} is" in status
    assert publisher.registry.get_sample_value("autoretrain_publisher_failures_total",
                                               {"reason": "too_large"}) == 1


def test_after_close_publish_is_dropped(make: Any, producer: FakeProducer) -> None:
    publisher, updater = make()
    publisher.close()
    teach(updater, "a0")
    updater.save()
    assert publisher.flush(0.1) and producer.sent == []


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="topic"):
        ModelPublisher("k:9092", "")
    with pytest.raises(ValueError, match="max_message_bytes"):
        ModelPublisher("k:9092", max_message_bytes=10)
