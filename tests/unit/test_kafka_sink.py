"""KafkaSink with a fake producer (the real broker is in tests/integration)."""

import threading
import time

import pytest
from servers.common import wait_until

from autoretrain.exporter import KafkaSink, decode_event
from autoretrain.exporter.events import run_event


class FakeFuture:
    def __init__(self, ok):
        self.is_done = True
        self._ok = ok
        self.exception = None if ok else RuntimeError("not acked")

    def succeeded(self):
        return self._ok


class FakeProducer:
    def __init__(self, broker):
        self.broker = broker

    def send(self, topic, key, value):
        if not self.broker.up:
            raise TimeoutError("metadata not available")
        self.broker.messages.append((topic, key, value))
        return FakeFuture(True)

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


class FakeBroker:
    def __init__(self, up=True):
        self.up = up
        self.messages = []

    def factory(self, servers, **config):
        return FakeProducer(self)


def event(i):
    return run_event(f"e{i}", 1.0, "agent-a", "llm", "success", 1.0, 1, 0.0)


def test_events_are_produced_with_agent_key():
    broker = FakeBroker()
    sink = KafkaSink("k:9092", topic="t", producer_factory=broker.factory)
    try:
        for i in range(10):
            assert sink.publish(event(i))
        assert wait_until(lambda: len(broker.messages) == 10)
        topic, key, value = broker.messages[0]
        assert (topic, key) == ("t", b"agent-a") and decode_event(value)["event_id"] == "e0"
        assert wait_until(lambda: sink.stats()["delivered"] == 10)
        assert sink.connected
    finally:
        sink.close()


def test_broker_down_keeps_events_then_delivers_them_all():
    broker = FakeBroker(up=False)
    sink = KafkaSink("k:9092", producer_factory=broker.factory, retry_backoff_seconds=0.02)
    try:
        for i in range(50):
            sink.publish(event(i))
        assert wait_until(lambda: sink.stats()["send_errors"] > 0)
        assert not sink.connected and "metadata" in sink.last_error
        assert sink.stats()["pending"] == 50
        broker.up = True
        assert wait_until(lambda: sink.stats()["delivered"] == 50)
        ids = [decode_event(v)["event_id"] for _, _, v in broker.messages]
        assert ids == [f"e{i}" for i in range(50)]  # order kept across the retry
    finally:
        sink.close()


def test_overflow_is_counted_as_dropped_and_publish_never_blocks():
    gate = threading.Event()

    class Stuck(FakeBroker):
        def factory(self, servers, **config):
            gate.wait(5)  # the producer cannot even be created
            return super().factory(servers, **config)

    sink = KafkaSink("k:9092", max_pending=5, producer_factory=Stuck().factory)
    try:
        start = time.perf_counter()
        results = [sink.publish(event(i)) for i in range(8)]
        elapsed = time.perf_counter() - start
        assert results.count(False) >= 3
        assert sink.stats()["dropped"] >= 3
        assert elapsed < 1.0  # generous: the point is that it did not wait for Kafka
    finally:
        gate.set()
        sink.close()


@pytest.mark.parametrize(("servers", "pending"), [("", 10), ("k:9092", 0)])
def test_constructor_validation(servers, pending):
    with pytest.raises(ValueError):
        KafkaSink(servers, max_pending=pending, producer_factory=FakeBroker().factory)


class WedgedProducer(FakeProducer):
    """Accepts sends but never gets them acknowledged, as a kafka-python producer
    whose broker was SIGKILLed mid-request can behave after the broker returns."""

    def send(self, topic, key, value):
        future = FakeFuture(False)
        future.is_done = False
        return future

    def flush(self, timeout=None):
        raise TimeoutError("Timeout waiting for future")


def test_a_producer_that_failed_is_replaced_not_retried_forever():
    broker = FakeBroker()
    built = []

    def factory(servers, **config):
        producer = WedgedProducer(broker) if not built else FakeProducer(broker)
        built.append(producer)
        return producer

    sink = KafkaSink("k:9092", producer_factory=factory, retry_backoff_seconds=0.02)
    try:
        for i in range(20):
            sink.publish(event(i))
        assert wait_until(lambda: sink.stats()["delivered"] == 20)
        assert len(built) == 2 and len(broker.messages) == 20
        assert sink.stats()["send_errors"] >= 1 and sink.connected
    finally:
        sink.close()
