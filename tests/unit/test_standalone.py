"""StandaloneExporter logic with a fake consumer (the real broker is in tests/integration)."""

import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from autoretrain.exporter.events import accuracy_event, encode_event, run_event
from autoretrain.exporter.standalone import StandaloneExporter


def test_handle_applies_dedups_and_counts_invalid():
    registry = CollectorRegistry()
    exp = StandaloneExporter("k:9092", registry=registry)
    run = encode_event(run_event("e1", 1.0, "a", "llm", "error", 2500.0, 7, 0.5))
    acc = encode_event(accuracy_event("e2", 1.0, "a", "llm", "t", 0.8, "human"))
    assert exp.handle(run) == "applied"
    assert exp.handle(run) == "duplicate"
    assert exp.handle(acc) == "applied"
    assert exp.handle(b"{oops") == "invalid"
    assert exp.handle(b'{"schema": 9}') == "invalid"
    get = registry.get_sample_value
    llm = {"agent": "a", "agent_type": "llm"}
    assert get("autoretrain_agent_runs_total", {**llm, "status": "error"}) == 1
    assert get("autoretrain_agent_run_duration_seconds_sum", llm) == 2.5
    assert get("autoretrain_agent_tokens_total", {"agent": "a"}) == 7
    assert get("autoretrain_agent_prediction_accuracy_ratio_sum", {"agent": "a"}) == 0.8
    assert get("autoretrain_exporter_events_total", {"result": "applied"}) == 2
    assert get("autoretrain_exporter_events_total", {"result": "duplicate"}) == 1
    assert get("autoretrain_exporter_events_total", {"result": "invalid"}) == 2
    assert get("autoretrain_exporter_invalid_events_total", {"fault": "not_json"}) == 1
    assert get("autoretrain_exporter_invalid_events_total", {"fault": "schema"}) == 1


def test_events_from_the_future_are_invalid_in_the_exporter_too():
    # Issue 13, item 1: the same bound as the updater's (exporter.ingest.decode_batch).
    registry = CollectorRegistry()
    exp = StandaloneExporter("k:9092", registry=registry, clock=lambda: 1_700_000_000.0)
    ahead = encode_event(run_event("e1", 1_700_000_000_000.0, "a", "llm", "success", 1.0, 1,
                                   0.1))
    assert exp.handle(ahead) == "invalid"
    assert registry.get_sample_value("autoretrain_exporter_invalid_events_total",
                                     {"fault": "field:timestamp"}) == 1


def test_run_loop_reconnects_and_reports_readiness():
    attempts = []

    class Consumer:
        def __init__(self):
            self.polls = 0

        def poll(self, timeout_ms, max_records):
            self.polls += 1
            value = encode_event(
                run_event(f"e{self.polls}", 1.0, "a", "llm", "success", 1.0, 0, 0.0)
            )
            return {"tp": [SimpleNamespace(value=value)]}

        def assignment(self):
            return [SimpleNamespace(partition=0)]

        def close(self):
            pass

    def factory(servers, topic, group):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("broker down")
        return Consumer()

    registry = CollectorRegistry()
    exp = StandaloneExporter(
        "k:9092", registry=registry, consumer_factory=factory, broker_check=lambda: None
    )
    assert exp.ready() == (False, "Kafka not reachable: not started")
    exp.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not exp.connected:
            time.sleep(0.01)
        assert exp.connected and exp.ready()[0]
        assert len(attempts) == 2
        assert exp.partitions == [0]
        assert registry.get_sample_value("autoretrain_exporter_kafka_connected") == 1
    finally:
        exp.stop()
    assert (
        registry.get_sample_value("autoretrain_exporter_events_total", {"result": "applied"}) >= 1
    )


def test_run_duration_buckets_are_configurable():
    from autoretrain.exporter.__main__ import main, parse_buckets

    registry = CollectorRegistry()
    exporter = StandaloneExporter("k:9092", registry=registry, duration_buckets=(1, 60, 600))
    exporter.metrics.record_run("a", "llm", "success", 90.0)
    text = generate_latest(registry).decode()
    bucket = 'autoretrain_agent_run_duration_seconds_bucket{agent="a",agent_type="llm",'
    assert bucket + 'le="60.0"} 0.0' in text
    assert bucket + 'le="600.0"} 1.0' in text
    assert parse_buckets("0.5,1,300") == (0.5, 1.0, 300.0)
    with pytest.raises(ValueError, match="comma-separated numbers of seconds"):
        parse_buckets("1,five")
    # Bad buckets: exit 2 with a message, before any port is bound.
    assert main(["--duration-buckets", "5,1"]) == 2
    assert main(["--duration-buckets", "1,x"]) == 2


def test_a_membership_stuck_rebalancing_rejoins_and_is_not_ready():
    """kafka-python 3.0.12 can drop a rejoin for good (member stuck in
    REBALANCING, no partitions): past join_stall_seconds the exporter says so on
    /readyz and rejoins; once stable again it is ready."""
    from kafka.structs import ConsumerGroupMetadata, MemberState

    calls = []

    class Consumer:
        state = MemberState.REBALANCING

        def poll(self, timeout_ms, max_records):
            return {}

        def assignment(self):
            return set()

        def group_metadata(self):
            return ConsumerGroupMetadata(group_id="g", state=self.state)

        def unsubscribe(self):
            calls.append("unsubscribe")

        def subscribe(self, topics):
            calls.append(("subscribe", topics))

    consumer = Consumer()
    exp = StandaloneExporter("k:9092", topic="t", consumer_factory=lambda *_: consumer,
                             broker_check=lambda: None, join_stall_seconds=0.0)
    exp._poll_once()  # the membership is seen unstable: the stall clock starts
    assert calls == [] and exp.ready()[0]
    exp._poll_once()
    assert calls == ["unsubscribe", ("subscribe", ["t"])]
    ready, reason = exp.ready()
    assert not ready and "not a stable member of group autoretrain-exporter" in reason
    consumer.state = MemberState.STABLE
    exp._poll_once()
    assert exp.ready() == (True, "consuming t from k:9092")
