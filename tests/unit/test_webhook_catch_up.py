"""Issue 13 item 2: a retrain restored at a start waits until the updater caught up.

After a restart the updater's retrain buffer is empty until its consumer has
re-read its source. An alert episode whose retrain was interrupted (or that
was still queued) is restored from the ledger; run at once, its retrain had
nothing to train on ("skipped") and the episode counted as retrained, so the
retrain the alert asked for never happened. Now alert retrains wait for the
updater's ``caught_up()`` (bounded by ``catch_up_seconds``), and a retrain
skipped for lack of data leaves its episodes ``skipped``: a re-send queues
them again. Fakes stand in for the clock and the Kafka consumer here; the
real broker is in tests/integration/test_faults_webhook.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry
from servers.common import FakeClock, wait_until

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.webhook import RealTimeModelUpdater, create_app
from autoretrain.webhook.alerts import EpisodeKey, Notification, parse_notification
from autoretrain.webhook.controller import RetrainController
from autoretrain.webhook.ledger import Ledger
from autoretrain.webhook.metrics import WebhookMetrics
from autoretrain.webhook.policy import EpisodeState, decide

TOKEN = "test-token-0123456789abcdef"
STARTS = "2024-05-01T10:00:00Z"
EPISODE = EpisodeKey("a1", "2024-05-01T10:00:00.000000Z")


def notification(fingerprint: str = "a1") -> Notification:
    return parse_notification({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "Low", "retrain": "incremental"},
         "startsAt": STARTS, "fingerprint": fingerprint}]})


def events(n: int, start: float) -> list[Any]:
    ids = EventIdFactory()
    return [run_event(ids(), start + i * 0.01, f"a{i % 3}", "llm",
                      "success" if i % 3 == 0 else "failure", 10.0, 5, 0.01)
            for i in range(n)]


def interrupted_ledger(path: Path, clock: Callable[[], float]) -> None:
    """What a process SIGKILLed inside the retrain of episode a1 leaves behind."""
    ledger = Ledger(path, clock=clock)
    plan = decide(notification(), {}, now=clock())
    ledger.record_plan(plan)
    ledger.start_retrain(trigger="alert", reason="alertmanager: Low (1 episode)",
                         retrain_type="incremental", requested_at=clock(), episodes=plan.queue)
    ledger.close()  # never finished: "running" until the next open


class SourceFlag:
    """``source_ready`` for the controller: False until ``ready`` is set; counts the asks."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.ready.is_set()


def outcomes(ledger: Ledger) -> list[tuple[str, int | None]]:
    rows, _ = ledger.list_retrains(100)
    return [(r["outcome"], r["events_processed"]) for r in reversed(rows)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_restored_retrain_waits_for_the_source_then_trains_on_its_data(
        tmp_path: Path, clock: FakeClock) -> None:
    interrupted_ledger(tmp_path / "ledger.sqlite3", clock)
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), seed=0,
                                   clock=clock)
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=clock)  # re-queues episode a1
    source = SourceFlag()
    controller = RetrainController(updater, ledger, WebhookMetrics(CollectorRegistry()),
                                   cooldown_seconds=0, source_ready=source, clock=clock)
    controller.start()
    try:
        # The worker asked several times and was told to wait: nothing ran.
        assert wait_until(lambda: source.asked >= 3)
        assert outcomes(ledger) == [("interrupted", None)]
        assert controller.status()["waiting_for_source"] is True
        assert ledger.episode_states([EPISODE]) == {EPISODE: EpisodeState.QUEUED}
        # The consumer re-read its source: now the retrain has data, and runs.
        updater.ingest(events(100, clock.now - 100))  # the buffer holds 100
        source.ready.set()
        assert wait_until(lambda: len(outcomes(ledger)) == 2 and controller.idle())
        (outcome, processed) = outcomes(ledger)[1]
        assert outcome in ("promoted", "rejected") and processed == 100, outcomes(ledger)
        assert ledger.episode_states([EPISODE]) == {EPISODE: EpisodeState.RETRAINED}
        assert controller.status()["waiting_for_source"] is False
    finally:
        controller.stop()
        ledger.close()


def test_the_wait_is_bounded_and_a_skipped_retrain_does_not_use_the_episode_up(
        tmp_path: Path, clock: FakeClock) -> None:
    interrupted_ledger(tmp_path / "ledger.sqlite3", clock)
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), seed=0,
                                   clock=clock)
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=clock)
    source = SourceFlag()  # never ready: the source is away
    controller = RetrainController(updater, ledger, WebhookMetrics(CollectorRegistry()),
                                   cooldown_seconds=0, source_ready=source,
                                   catch_up_seconds=30, clock=clock)
    controller.start()
    try:
        assert wait_until(lambda: source.asked >= 2)
        clock.advance(29)
        controller.wake()
        asked = source.asked
        assert wait_until(lambda: source.asked >= asked + 2)
        assert outcomes(ledger) == [("interrupted", None)]  # still within the bound
        clock.advance(2)
        controller.wake()
        # Past the bound it runs on what the updater has (nothing) and says so.
        assert wait_until(lambda: len(outcomes(ledger)) == 2 and controller.idle())
        assert outcomes(ledger)[1] == ("skipped", 0)
        # Skipped for lack of data: not retrained, so Alertmanager's next re-send asks again.
        assert ledger.episode_states([EPISODE]) == {EPISODE: EpisodeState.SKIPPED}
        updater.ingest(events(200, clock.now - 100))
        plan = controller.handle(notification())
        assert [d.action.value for d in plan.decisions] == ["queued_incremental"]
        assert wait_until(lambda: len(outcomes(ledger)) == 3 and controller.idle())
        assert outcomes(ledger)[2][0] in ("promoted", "rejected"), outcomes(ledger)
        assert ledger.episode_states([EPISODE]) == {EPISODE: EpisodeState.RETRAINED}
        # Now it is used up: a further re-send is a duplicate.
        plan = controller.handle(notification())
        assert [d.action.value for d in plan.decisions] == ["duplicate_episode"]
    finally:
        controller.stop()
        ledger.close()


def test_a_skipped_episode_is_queued_again_across_a_restart(tmp_path: Path,
                                                            clock: FakeClock) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=clock)
    plan = decide(notification(), {}, now=clock())
    ledger.record_plan(plan)
    retrain_id = ledger.start_retrain(trigger="alert", reason="r", retrain_type="incremental",
                                      requested_at=clock(), episodes=plan.queue)
    assert ledger.finish_retrain(retrain_id, {"success": False, "result": "skipped"}) == \
        "skipped"
    ledger.close()
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=clock)
    try:
        assert ledger.episode_states([EPISODE]) == {EPISODE: EpisodeState.SKIPPED}
        assert ledger.queued() == []  # skipped is not queued: it waits for a re-send
        clock.advance(60)
        ledger.record_plan(decide(notification(), ledger.episode_states([EPISODE]),
                                  now=clock()))
        (queued,) = ledger.queued()
        assert queued.episode == EPISODE
        # A promoted or rejected retrain uses it up, as before.
        second = ledger.start_retrain(trigger="alert", reason="r", retrain_type="incremental",
                                      requested_at=clock(), episodes=[queued])
        ledger.finish_retrain(second, {"success": True, "promoted": False, "result": "rejected"})
        assert ledger.episode_states([EPISODE]) == {EPISODE: EpisodeState.RETRAINED}
    finally:
        ledger.close()


# -- the updater's side: caught_up() -------------------------------------------------------
class GatedConsumer:
    """Enough of ``KafkaConsumer``: one partition holding ``values``; polls return
    nothing until ``gate`` is set (a consumer still joining its group)."""

    def __init__(self, values: list[bytes]) -> None:
        self.values = values
        self.next_offset = 0
        self.gate = threading.Event()
        self.polls = 0
        self.assigned: list[Any] = []
        self.tp = TopicPartition("t", 0)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        # Unknown until the gate opens (a topic not yet in the metadata).
        return {self.tp.partition} if self.gate.is_set() else None

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = list(partitions)

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.polls += 1
        if not self.gate.is_set() or not self.assigned:
            time.sleep(min(timeout_ms, 20) / 1000)
            return {}
        batch = self.values[self.next_offset : self.next_offset + max_records]
        records = [SimpleNamespace(value=v, offset=self.next_offset + i)
                   for i, v in enumerate(batch)]
        self.next_offset += len(batch)
        if not records:
            time.sleep(min(timeout_ms, 20) / 1000)
        return {self.tp: records} if records else {}

    def assignment(self) -> list[Any]:
        return self.assigned

    def end_offsets(self, partitions: list[Any], timeout_ms: int | None = None
                    ) -> dict[Any, int]:
        return {tp: len(self.values) for tp in partitions}

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return self.next_offset

    def highwater(self, tp: Any) -> int:
        return len(self.values)

    def seek(self, tp: Any, offset: int) -> None:
        self.next_offset = offset

    def commit(self, offsets: dict[Any, Any], timeout_ms: int | None = None) -> None:
        pass

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        pass


def kafka_updater(tmp_path: Path, consumer: GatedConsumer) -> RealTimeModelUpdater:
    return RealTimeModelUpdater(
        kafka_servers="127.0.0.1:9", kafka_topic="t", model_storage_path=str(tmp_path / "m"),
        batch_size=50, batch_timeout_seconds=0.05, seed=0, kafka_check=lambda: None,
        consumer_factory=lambda **settings: consumer)


def test_kafka_updater_is_caught_up_once_it_applied_up_to_the_end_offsets(
        tmp_path: Path) -> None:
    consumer = GatedConsumer([encode_event(e) for e in events(300, time.time() - 100)])
    updater = kafka_updater(tmp_path, consumer)
    updater.start()
    try:
        assert wait_until(lambda: consumer.polls >= 3)
        assert updater.caught_up() is False  # not assigned yet: nothing read
        consumer.gate.set()
        assert wait_until(updater.caught_up)
        # Caught up means applied, not only read: the buffer holds the backlog.
        status = updater.get_metrics()
        assert status["events_applied"] == 300 and status["event_buffer_size"] == 300
    finally:
        updater.stop()
    assert updater.caught_up() is True  # stopped: nothing to wait for


class SteadyConsumer(GatedConsumer):
    """A topic that keeps growing: every poll, a few new events arrive (2,000 in all)."""

    def __init__(self, values: list[bytes]) -> None:
        super().__init__(values)
        self.gate.set()
        self._more = iter([encode_event(e) for e in events(2000, time.time() - 50)])

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.values.extend(itertools.islice(self._more, 3))
        return super().poll(timeout_ms, max_records)


def test_a_steady_stream_does_not_keep_the_updater_from_catching_up(tmp_path: Path) -> None:
    # Found by the real-Kafka restart test: under a steady stream something
    # read waits to be applied at almost every step; the backlog as of the
    # start is applied all the same, and that is what counts.
    consumer = SteadyConsumer([encode_event(e) for e in events(300, time.time() - 100)])
    updater = kafka_updater(tmp_path, consumer)
    updater.start()
    try:
        assert wait_until(updater.caught_up)
        assert updater.get_metrics()["events_applied"] >= 300
    finally:
        updater.stop()


def test_embedded_updater_is_caught_up_once_the_queued_events_are_applied(
        tmp_path: Path) -> None:
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "m"), seed=0,
                                   batch_size=50, batch_timeout_seconds=0.05)
    assert updater.event_bus is not None
    for event in events(120, time.time() - 100):
        updater.event_bus.publish(event)
    updater.start()
    try:
        assert wait_until(updater.caught_up)
        assert updater.get_metrics()["events_applied"] == 120
    finally:
        updater.stop()


def test_webhook_restart_retrains_the_interrupted_episode_on_the_kafka_backlog(
        tmp_path: Path) -> None:
    """The whole path: ledger with an interrupted retrain, a Kafka updater whose
    consumer has not joined yet; the re-queued retrain runs on the backlog."""
    interrupted_ledger(tmp_path / "ledger.sqlite3", time.time)
    consumer = GatedConsumer([encode_event(e) for e in events(300, time.time() - 100)])
    updater = kafka_updater(tmp_path, consumer)
    updater.start()
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "ledger.sqlite3"),
                      "cooldown_seconds": 0}, updater=updater, registry=CollectorRegistry())
    client = app.test_client()

    def rows() -> list[dict[str, Any]]:
        body = client.get("/api/performance/retraining").get_json()
        return list(reversed(body["retrains"]))

    try:
        assert wait_until(lambda: consumer.polls >= 5)
        assert [r["outcome"] for r in rows()] == ["interrupted"]
        consumer.gate.set()
        assert wait_until(lambda: len(rows()) == 2 and rows()[1]["outcome"] != "running")
        retrain = rows()[1]
        assert retrain["outcome"] in ("promoted", "rejected"), retrain
        assert retrain["events_processed"] == 300
        assert [a["fingerprint"] for a in retrain["alerts"]] == ["a1"]
    finally:
        app.extensions["autoretrain"].close()
        updater.stop()
