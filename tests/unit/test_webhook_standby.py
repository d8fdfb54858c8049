"""One active webhook per store and ledger: Failover alone, then two apps in one process.

Two ``create_app`` on one store and ledger: the second is a standby (503
"standby" everywhere but health, readiness, metrics and the document; it
opens no ledger and leaves the store alone) and takes over once the first
closes, loading the newest saved model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from servers.common import wait_until

from autoretrain.exporter.events import EventIdFactory, run_event
from autoretrain.webhook import create_app
from autoretrain.webhook.app import WebhookService
from autoretrain.webhook.standby import Failover, StoreLocked
from autoretrain.webhook.storelock import FileLock, StoreLock, ledger_lock_path

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AUTORETRAIN_WEBHOOK_"):
            monkeypatch.delenv(name)


def role(registry: CollectorRegistry) -> dict[str, float | None]:
    return {r: registry.get_sample_value("autoretrain_webhook_role", {"role": r})
            for r in ("active", "standby")}


# -- Failover alone ------------------------------------------------------------------------------
class Activations:
    """An ``activate`` that counts its calls and can be told to fail."""

    def __init__(self, failures: int = 0) -> None:
        self.calls = 0
        self.failures = failures
        self.done = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("ledger on fire")
        self.done.set()


def failover(tmp_path: Path, activate: Activations, **kwargs: Any) -> tuple[Failover,
                                                                            CollectorRegistry]:
    registry = CollectorRegistry()
    lock = StoreLock.for_webhook(tmp_path / "models", tmp_path / "ledger.sqlite3")
    return Failover(lock, activate, registry, poll_interval=0.05, **kwargs), registry


def test_the_first_is_active_the_second_waits_and_takes_over(tmp_path: Path) -> None:
    first_calls, second_calls = Activations(), Activations()
    first, first_registry = failover(tmp_path, first_calls)
    second, registry = failover(tmp_path, second_calls)
    first.start()
    assert first.active and first_calls.calls == 1
    assert role(first_registry) == {"active": 1.0, "standby": 0.0}
    second.start()
    assert not second.active and second.waiting and second_calls.calls == 0
    assert role(registry) == {"active": 0.0, "standby": 1.0}
    assert "ledger.sqlite3" not in second.status()  # the store's lock is the one refused
    assert f"is held by pid {os.getpid()} on host" in second.status()

    first.close()
    assert second_calls.done.wait(30)
    assert wait_until(lambda: second.active, timeout=30)
    assert second_calls.calls == 1 and second.status() == "active"
    assert role(registry) == {"active": 1.0, "standby": 0.0}
    assert wait_until(lambda: not second.waiting, timeout=30)  # its loop ended
    second.close()
    assert role(registry) == {"active": 0.0, "standby": 0.0}


def test_mode_exit_refuses_to_start(tmp_path: Path) -> None:
    first, _ = failover(tmp_path, Activations())
    second, _ = failover(tmp_path, Activations(), mode="exit")
    first.start()
    with pytest.raises(StoreLocked, match=r"another webhook is active .*is held by pid"):
        second.start()
    assert not second.waiting
    first.close()
    second.close()


def test_an_activation_that_fails_gives_the_lock_back_and_is_retried(tmp_path: Path) -> None:
    holder = FileLock(ledger_lock_path(tmp_path / "ledger.sqlite3"))
    assert holder.try_acquire()
    calls = Activations(failures=2)
    standby, registry = failover(tmp_path, calls)
    standby.start()
    assert standby.waiting
    holder.close()
    assert calls.done.wait(30)
    assert wait_until(lambda: standby.active, timeout=30)
    assert calls.calls == 3
    assert registry.get_sample_value("autoretrain_webhook_takeover_errors_total") == 2
    standby.close()


def test_a_failed_activation_at_start_raises_and_releases(tmp_path: Path) -> None:
    broken, _ = failover(tmp_path, Activations(failures=1))
    with pytest.raises(OSError, match="ledger on fire"):
        broken.start()
    assert not broken.active and not broken.lock.held
    other, _ = failover(tmp_path, Activations())
    other.start()
    assert other.active
    other.close()
    broken.close()


def test_close_without_release_keeps_the_lock(tmp_path: Path) -> None:
    first, _ = failover(tmp_path, Activations())
    first.start()
    first.close(release=False)
    second, _ = failover(tmp_path, Activations(), mode="exit")
    with pytest.raises(StoreLocked):
        second.start()
    first.lock.close()
    second.close()


def test_failover_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of wait, exit, got 'later'"):
        failover(tmp_path, Activations(), mode="later")


# -- two apps on one store and ledger ------------------------------------------------
def feed(service: WebhookService, n: int = 150) -> None:
    ids = EventIdFactory()
    service.updater.ingest([
        run_event(ids(), 1000.0 + i, f"a{i % 3}", "llm", "success" if i % 3 == 0 else "failure",
                  10.0, 5, 0.01, task_type="t0") for i in range(n)])


def files(directory: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime_ns) of every file under ``directory``."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "ledger.sqlite3"),
                          "model_storage_path": str(tmp_path / "models"),
                          "cooldown_seconds": 0, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["autoretrain"].close()


def test_a_second_app_on_the_store_is_a_standby_and_takes_over(
    make_app: Any, tmp_path: Path
) -> None:
    active = make_app()
    service: WebhookService = active.extensions["autoretrain"]
    feed(service)
    response = active.test_client().post("/api/performance/trigger-retraining", headers=AUTH,
                                         json={"reason": "seed"})
    assert response.status_code == 200 and response.get_json()["result"]["promoted"]
    saved = service.updater.store.versions()[-1]
    before = files(tmp_path)

    standby = make_app()
    client = standby.test_client()
    standby_service: WebhookService = standby.extensions["autoretrain"]
    assert not standby_service.active
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["ready"] is False and body["reason"] == "standby"
    assert body["checks"]["role"] == "standby"
    assert "is held by pid" in body["checks"]["lock"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    for method, path in (("POST", "/alerts"), ("POST", "/api/performance/trigger-retraining"),
                         ("GET", "/api/performance/retraining"),
                         ("GET", "/api/performance/stats")):
        refused = client.open(path, method=method, headers=AUTH, json={})
        assert refused.status_code == 503, path
        assert refused.get_json()["error"] == "standby"
        assert "this webhook is a standby" in refused.get_json()["message"]
    assert client.get("/nowhere").status_code == 404
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'autoretrain_webhook_role{role="standby"} 1.0' in metrics
    assert 'autoretrain_webhook_role{role="active"} 0.0' in metrics
    with pytest.raises(RuntimeError, match="only while this webhook is active"):
        _ = standby_service.ledger
    assert not standby_service.updater.running
    assert files(tmp_path) == before  # neither the store nor the ledger was touched

    service.close()  # saves nothing new (nothing changed), then releases the lock
    assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30)
    assert standby_service.updater.get_metrics()["model_version"] == saved
    assert client.get("/api/performance/retraining").get_json()["total"] == 1
    exposition = client.get("/metrics").get_data(as_text=True)
    assert 'autoretrain_webhook_role{role="active"} 1.0' in exposition


def test_start_false_opens_nothing(tmp_path: Path) -> None:
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "l" / "ledger.sqlite3"),
                      "model_storage_path": str(tmp_path / "models")}, start=False)
    service: WebhookService = app.extensions["autoretrain"]
    assert not service.active and not service.failover.waiting
    assert list(tmp_path.iterdir()) == []
    assert app.test_client().get("/readyz").status_code == 503
    service.close()
    assert list(tmp_path.iterdir()) == []


def test_standby_exit_refuses_to_build_the_app(make_app: Any) -> None:
    make_app()
    with pytest.raises(StoreLocked, match="standby is 'exit'"):
        make_app(standby="exit")


def test_the_standby_setting_is_validated(make_app: Any) -> None:
    with pytest.raises(ValueError, match=r"standby \(from config\) must be one of wait, exit"):
        make_app(standby="never")
