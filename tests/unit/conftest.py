"""Fixtures shared by the unit tests: a fake clock, and the webhook's retrain parts on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from servers.common import FakeClock

from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.controller import RetrainController
from autoretrain.webhook.ledger import Ledger
from autoretrain.webhook.metrics import WebhookMetrics


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def retrain_parts(tmp_path: Path, clock: FakeClock
                  ) -> Iterator[Callable[..., dict[str, Any]]]:
    """``build(cooldown_seconds, updater=None, **controller_options)``: an updater
    (a new :class:`RealTimeModelUpdater` by default), a ledger and a started
    :class:`RetrainController` on ``clock``, under ``tmp_path``, as a dict
    (``updater``, ``registry``, ``metrics``, ``ledger``, ``controller``);
    stopped and closed after the test."""
    built: list[dict[str, Any]] = []

    def build(cooldown_seconds: float, updater: Any = None,
              **controller_options: Any) -> dict[str, Any]:
        if updater is None:
            updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), seed=0,
                                           clock=clock)
        registry = CollectorRegistry()
        metrics = WebhookMetrics(registry)
        ledger = Ledger(tmp_path / "ledger.sqlite3", clock=clock)
        controller = RetrainController(updater, ledger, metrics,
                                       cooldown_seconds=cooldown_seconds, clock=clock,
                                       **controller_options)
        parts = {"updater": updater, "registry": registry, "metrics": metrics,
                 "ledger": ledger, "controller": controller}
        built.append(parts)
        controller.start()
        return parts

    yield build
    for parts in built:
        parts["controller"].stop()
        parts["ledger"].close()
