"""The retrain controller with a fake clock: cooldown expiry, coalescing, API priority."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from servers.common import FakeClock, wait_until

from autoretrain.exporter.events import EventIdFactory, run_event
from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.alerts import Notification, parse_notification
from autoretrain.webhook.controller import ControllerUnavailable, RetrainController
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
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def parts(tmp_path: Path, clock: FakeClock) -> Iterator[dict[str, Any]]:
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), seed=0,
                                   clock=clock)
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=clock)
    controller = RetrainController(updater, ledger, metrics, cooldown_seconds=COOLDOWN,
                                   clock=clock)
    controller.start()
    yield {"updater": updater, "registry": registry, "ledger": ledger,
           "controller": controller}
    controller.stop()
    ledger.close()


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
    assert parts["registry"].get_sample_value("webhook_retrain_queue_episodes") == 2

    clock.now += 1
    controller.wake()
    assert wait_until(controller.idle)
    # One retrain for both, full because one of them asked for full.
    assert history(ledger) == [("alert", "incremental", 1), ("alert", "full", 2)]
    assert parts["registry"].get_sample_value("webhook_retrain_queue_episodes") == 0


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
    # The API retrain restarted the cooldown for the queued alert.
    assert controller.status()["cooldown_until"] == clock.now + COOLDOWN
    assert controller.status()["queued_episodes"] == 1


def test_zero_cooldown(tmp_path: Path, clock: FakeClock) -> None:
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "m"), clock=clock)
    feed(updater)
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    controller = RetrainController(updater, ledger, WebhookMetrics(CollectorRegistry()),
                                   cooldown_seconds=0, clock=clock)
    controller.start()
    try:
        for fp in ("a1", "b2"):
            plan = controller.handle(notification(("Low", fp, "incremental")))
            assert plan.decisions[0].action.value == "queued_incremental"
            assert wait_until(controller.idle)
        assert len(history(ledger)) == 2
    finally:
        controller.stop()
        ledger.close()


def test_submit_after_stop_is_refused(parts: dict[str, Any]) -> None:
    parts["controller"].stop()
    with pytest.raises(ControllerUnavailable, match="not running"):
        parts["controller"].submit("x")


def test_negative_cooldown_is_refused(parts: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cooldown_seconds must be >= 0, got -1"):
        RetrainController(parts["updater"], parts["ledger"],
                          WebhookMetrics(CollectorRegistry()), cooldown_seconds=-1)
