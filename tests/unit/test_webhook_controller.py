"""The retrain controller with a fake clock: cooldown expiry, coalescing, API priority."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from servers.common import FakeClock, wait_until

from autoretrain.exporter.events import EventIdFactory, run_event
from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.alerts import Notification, parse_notification
from autoretrain.webhook.controller import (
    ControllerUnavailable,
    RateLimited,
    RetrainController,
)
from autoretrain.webhook.ledger import Ledger
from autoretrain.webhook.metrics import WebhookMetrics

COOLDOWN = 600.0


def notification(*alerts: tuple[str, str, str]) -> Notification:
    """(alertname, fingerprint, retrain) firing alerts."""
    return parse_notification({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": name, "retrain": retrain},
         "startsAt": "2024-05-01T10:00:00Z", "fingerprint": fp}
        for name, fp, retrain in alerts]})


def feed(updater: RealTimeModelUpdater, n: int = 60) -> None:
    ids = EventIdFactory()
    updater.ingest([run_event(ids(), 1000.0 + i, f"a{i % 3}", "llm",
                              "success" if i % 3 == 0 else "failure", 10.0, 5, 0.01)
                    for i in range(n)])


@pytest.fixture
def parts(retrain_parts: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return retrain_parts(COOLDOWN)


def history(ledger: Ledger) -> list[tuple[str, str, int]]:
    """(trigger, retrain_type, number of alerts) of each retrain, oldest first."""
    rows, _ = ledger.list_retrains(100)
    return [(r["trigger"], r["retrain_type"], len(r["alerts"])) for r in reversed(rows)]


def test_cooldown_expiry_runs_the_coalesced_queue(parts: dict[str, Any], clock: FakeClock) -> None:
    controller, ledger = parts["controller"], parts["ledger"]
    feed(parts["updater"])
    controller.handle(notification(("Low", "a1", "incremental")))
    assert wait_until(controller.idle)
    assert history(ledger) == [("alert", "incremental", 1)]
    assert controller.status()["cooldown_until"] == clock.now + COOLDOWN

    plan = controller.handle(notification(("Errors", "b2", "incremental")))
    assert [d.action.value for d in plan.decisions] == ["cooldown"]
    plan = controller.handle(notification(("Critical", "c3", "full")))
    assert [d.action.value for d in plan.decisions] == ["cooldown"]
    clock.now += COOLDOWN - 1
    controller.wake()
    assert not controller.idle() and controller.status()["queued_episodes"] == 2
    assert parts["registry"].get_sample_value("autoretrain_webhook_retrain_queue_episodes") == 2

    clock.now += 1
    controller.wake()
    assert wait_until(controller.idle)
    # One retrain for both, full because one of them asked for full.
    assert history(ledger) == [("alert", "incremental", 1), ("alert", "full", 2)]
    assert parts["registry"].get_sample_value("autoretrain_webhook_retrain_queue_episodes") == 0


def test_api_retrains_are_not_delayed_by_the_cooldown(parts: dict[str, Any],
                                                      clock: FakeClock) -> None:
    controller, ledger = parts["controller"], parts["ledger"]
    feed(parts["updater"])
    controller.handle(notification(("Low", "a1", "incremental")))
    assert wait_until(controller.idle)
    controller.handle(notification(("Errors", "b2", "incremental")))  # waits for the cooldown
    retrain_id, result = controller.submit("operator", True).result(10)
    assert result["retrain_type"] == "full" and result["reason"] == "operator"
    assert history(ledger) == [("alert", "incremental", 1), ("api", "full", 0)]
    assert ledger.list_retrains(1)[0][0]["id"] == retrain_id
    # Still the alert retrain's cooldown (the fake clock has not moved).
    assert controller.status()["cooldown_until"] == clock.now + COOLDOWN
    assert controller.status()["queued_episodes"] == 1


def test_zero_cooldown(retrain_parts: Callable[..., dict[str, Any]]) -> None:
    parts = retrain_parts(0)
    controller, ledger = parts["controller"], parts["ledger"]
    feed(parts["updater"])
    for fp in ("a1", "b2"):
        plan = controller.handle(notification(("Low", fp, "incremental")))
        assert plan.decisions[0].action.value == "queued_incremental"
        assert wait_until(controller.idle)
    assert len(history(ledger)) == 2


def test_submit_after_stop_is_refused(parts: dict[str, Any]) -> None:
    parts["controller"].stop()
    with pytest.raises(ControllerUnavailable, match="not running"):
        parts["controller"].submit("x")


def test_negative_cooldown_is_refused(parts: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cooldown_seconds must be >= 0, got -1"):
        RetrainController(parts["updater"], parts["ledger"],
                          WebhookMetrics(CollectorRegistry()), cooldown_seconds=-1)


# -- issue 13, items 4 and 5: whose cooldown, and on which clock ------------------------------
def test_an_api_retrain_does_not_restart_the_alert_cooldown(parts: dict[str, Any],
                                                            clock: FakeClock) -> None:
    controller, ledger = parts["controller"], parts["ledger"]
    feed(parts["updater"])
    controller.handle(notification(("Low", "a1", "incremental")))
    assert wait_until(controller.idle)
    clock.advance(COOLDOWN)
    controller.submit("operator").result(10)
    # A client calling the API must not hold alert retrains off.
    plan = controller.handle(notification(("Errors", "b2", "incremental")))
    assert plan.decisions[0].action.value == "queued_incremental"
    assert wait_until(controller.idle)
    assert history(ledger) == [("alert", "incremental", 1), ("api", "incremental", 0),
                               ("alert", "incremental", 1)]


def test_the_restored_cooldown_counts_alert_retrains_only(tmp_path: Path,
                                                          clock: FakeClock) -> None:
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    ledger.finish_retrain(ledger.start_retrain(trigger="api", reason="op", retrain_type="full",
                                               requested_at=clock()), {"success": False})
    controller = RetrainController(parts_updater(tmp_path, clock), ledger,
                                   WebhookMetrics(CollectorRegistry()),
                                   cooldown_seconds=COOLDOWN, clock=clock)
    controller.start()
    try:
        assert controller.status()["cooldown_until"] is None
    finally:
        controller.stop()
        ledger.close()


def test_a_finish_recorded_in_the_future_is_clamped_to_now(tmp_path: Path,
                                                          clock: FakeClock) -> None:
    ahead = FakeClock(clock.now + 5 * 365 * 86400.0)  # the wall clock was 5 years ahead
    ledger = Ledger(tmp_path / "l.db", clock=ahead)
    ledger.finish_retrain(ledger.start_retrain(trigger="alert", reason="r",
                                               retrain_type="full", requested_at=ahead()),
                          {"success": False})
    ledger.close()
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    controller = RetrainController(parts_updater(tmp_path, clock), ledger,
                                   WebhookMetrics(CollectorRegistry()),
                                   cooldown_seconds=COOLDOWN, clock=clock)
    controller.start()
    try:
        assert controller.status()["cooldown_until"] == clock.now + COOLDOWN
    finally:
        controller.stop()
        ledger.close()


def test_the_cooldown_runs_on_the_monotonic_clock(tmp_path: Path, clock: FakeClock) -> None:
    mono = FakeClock(100.0)
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    updater = parts_updater(tmp_path, clock)
    feed(updater)
    controller = RetrainController(updater, ledger, WebhookMetrics(CollectorRegistry()),
                                   cooldown_seconds=COOLDOWN, clock=clock, monotonic=mono)
    controller.start()
    try:
        controller.handle(notification(("Low", "a1", "incremental")))
        assert wait_until(controller.idle)
        clock.advance(86400.0)  # a wall-clock step does not end the cooldown
        controller.wake()
        plan = controller.handle(notification(("Errors", "b2", "incremental")))
        assert plan.decisions[0].action.value == "cooldown"
        mono.advance(COOLDOWN)
        controller.wake()
        assert wait_until(controller.idle)
        assert len(history(ledger)) == 2
    finally:
        controller.stop()
        ledger.close()


def test_api_retrains_have_their_own_rate_limit(tmp_path: Path, clock: FakeClock) -> None:
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    controller = RetrainController(parts_updater(tmp_path, clock), ledger,
                                   WebhookMetrics(CollectorRegistry()), cooldown_seconds=0,
                                   api_min_interval_seconds=60, clock=clock)
    controller.start()
    try:
        controller.submit("one").result(10)
        clock.advance(45)
        with pytest.raises(RateLimited) as refused:
            controller.submit("two")
        assert refused.value.retry_after == 15
        clock.advance(15)
        controller.submit("three").result(10)
        assert [r["reason"] for r in reversed(ledger.list_retrains(10)[0])] == ["one", "three"]
    finally:
        controller.stop()
        ledger.close()


def parts_updater(tmp_path: Path, clock: FakeClock) -> RealTimeModelUpdater:
    return RealTimeModelUpdater(model_storage_path=str(tmp_path / "m"), seed=0, clock=clock)
