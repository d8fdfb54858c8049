"""The Flask webhook through its test client, with a real RealTimeModelUpdater (embedded bus).

Covers every endpoint, authentication, body limits and bad input (never a
500 from client input), the retrain ledger across an app re-creation,
cooldown, resolved-cancels-queued, metrics and the OpenAPI document.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from servers.common import FakeClock, wait_until

from autoretrain.exporter.events import EventIdFactory, run_event
from autoretrain.webhook import RealTimeModelUpdater, create_app
from autoretrain.webhook.app import WebhookService

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
TRIGGER = "/api/performance/trigger-retraining"


# -- helpers ---------------------------------------------------------------------------------------
def feed(updater: RealTimeModelUpdater, n: int = 150, seed: int = 0) -> None:
    """Learn ``n`` run events (agent a0 good, a2 bad), so a retrain has data."""
    rng = np.random.default_rng(seed)
    ids = EventIdFactory()
    p = {"a0": 0.9, "a1": 0.5, "a2": 0.2}
    events = []
    for i in range(n):
        agent = f"a{rng.integers(3)}"
        ok = rng.random() < p[agent]
        events.append(run_event(ids(), 1000.0 + i, agent, "llm", "success" if ok else "failure",
                                10.0, 5, 0.01, task_type="t0"))
    updater.ingest(events)


def alert(name: str = "SystemAccuracyLow", fp: str = "1a2b3c4d5e6f7081",
          retrain: str | None = "incremental", status: str = "firing",
          starts: str = "2024-05-01T10:00:00Z", **labels: str) -> dict[str, Any]:
    all_labels = {"alertname": name, **labels}
    if retrain is not None:
        all_labels["retrain"] = retrain
    return {"status": status, "labels": all_labels, "annotations": {}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T11:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fp}


def message(*alerts: dict[str, Any]) -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {"receiver": "autoretrain-webhook", "status": status, "alerts": list(alerts),
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0}


def post_alerts(client: FlaskClient, *alerts: dict[str, Any]) -> Any:
    response = client.post("/alerts", json=message(*alerts), headers=AUTH)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def service(app: Flask) -> WebhookService:
    svc: WebhookService = app.extensions["autoretrain"]
    return svc


def wait_idle(app: Flask) -> None:
    assert wait_until(service(app).controller.idle), "retrain worker not idle"


def retrains(client: FlaskClient, **params: Any) -> Any:
    response = client.get("/api/performance/retraining", query_string=params)
    assert response.status_code == 200
    return response.get_json()


def sample(app: Flask, name: str, **labels: str) -> float | None:
    svc = service(app)
    value = svc.registry.get_sample_value(name, labels)
    if value is None:
        value = svc.updater.registry.get_sample_value(name, labels)
    return value


def retrain_total(app: Flask, retrain_type: str | None = None) -> float:
    svc = service(app)
    total = 0.0
    for rtype in ("incremental", "full") if retrain_type is None else (retrain_type,):
        for result in ("promoted", "rejected", "failed", "skipped"):
            total += svc.updater.registry.get_sample_value(
                "autoretrain_model_retrains_total",
                {"model_type": "agent_selection", "retrain_type": rtype, "result": result}) or 0
    return total


class Gated:
    """The real updater behind a gate: ``trigger_retraining`` waits for ``release()``."""

    def __init__(self, inner: RealTimeModelUpdater) -> None:
        self.inner = inner
        self.registry = inner.registry
        self.store = inner.store
        self.entered = threading.Event()
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def trigger_retraining(self, **kwargs: Any) -> dict[str, Any]:
        self.entered.set()
        assert self._gate.wait(30), "test never released the gate"
        return self.inner.trigger_retraining(**kwargs)

    def get_metrics(self) -> dict[str, Any]:
        return self.inner.get_metrics()


def busy_with_an_alert(make_app: Callable[..., Flask],
                       updater: RealTimeModelUpdater) -> tuple[Gated, Flask, FlaskClient]:
    """An app whose retrain worker has taken a first alert's retrain and waits
    at the gate (``release()`` lets it go)."""
    feed(updater)
    gated = Gated(updater)
    app = make_app(gated)
    client = app.test_client()
    post_alerts(client, alert())  # answered while no retrain has finished
    assert gated.entered.wait(10)  # the worker is busy with the first episode
    return gated, app, client


class Broken:
    """An updater whose methods raise, for the server-fault paths."""

    registry = CollectorRegistry()

    def trigger_retraining(self, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire at /secret/path")

    def get_metrics(self) -> dict[str, Any]:
        raise RuntimeError("disk on fire at /secret/path")


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # create_app reads AUTORETRAIN_WEBHOOK_*: the machine's settings must not leak in.
    import os

    for name in list(os.environ):
        if name.startswith("AUTORETRAIN_WEBHOOK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def updater(tmp_path: Path) -> Iterator[RealTimeModelUpdater]:
    u = RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), batch_size=10,
                             seed=0)
    u.start()
    yield u
    u.stop()


@pytest.fixture
def make_app(tmp_path: Path, updater: RealTimeModelUpdater) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(updater_: Any = updater, **config: Any) -> Flask:
        config = {"token": TOKEN, "ledger_path": str(tmp_path / "ledger.sqlite3"),
                  "cooldown_seconds": 0, "api_retrain_min_interval_seconds": 0, **config}
        config = {k: v for k, v in config.items() if v is not None}
        app = create_app(config, updater=updater_, registry=CollectorRegistry())
        apps.append(app)
        return app

    yield make
    for app in apps:
        service(app).close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- POST /alerts: the happy path ------------------------------------------------------------------
def test_firing_alert_is_accepted_then_retrained(
    app: Flask, client: FlaskClient, updater: RealTimeModelUpdater
) -> None:
    feed(updater)
    body = post_alerts(client, alert())
    assert body == {"status": "accepted", "alerts": 1, "truncated_alerts": 0, "decisions": [{
        "index": 0, "alertname": "SystemAccuracyLow", "status": "firing",
        "fingerprint": "1a2b3c4d5e6f7081", "startsAt": "2024-05-01T10:00:00.000000Z",
        "action": "queued_incremental", "retrain_type": "incremental",
        "detail": "queued for an incremental retrain"}]}
    wait_idle(app)
    page = retrains(client)
    assert page["total"] == 1 and page["next_offset"] is None
    (entry,) = page["retrains"]
    assert entry["trigger"] == "alert" and entry["retrain_type"] == "incremental"
    assert entry["outcome"] in ("promoted", "rejected") and entry["success"] is True
    assert entry["reason"] == "alertmanager: SystemAccuracyLow (1 episode)"
    assert entry["alerts"] == [{"alertname": "SystemAccuracyLow",
                                "fingerprint": "1a2b3c4d5e6f7081",
                                "startsAt": "2024-05-01T10:00:00.000000Z",
                                "retrain_type": "incremental"}]
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="SystemAccuracyLow",
                  status="firing", action="queued_incremental") == 1
    assert sample(app, "autoretrain_model_retrains_total", model_type="agent_selection",
                  retrain_type="incremental", result=entry["outcome"]) == 1
    assert retrain_total(app) == 1


def test_202_comes_before_the_retrain_runs(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater
) -> None:
    gated, app, client = busy_with_an_alert(make_app, updater)
    (entry,) = retrains(client)["retrains"]
    assert entry["outcome"] == "running" and retrain_total(app) == 0
    gated.release()
    wait_idle(app)
    assert retrains(client)["retrains"][0]["outcome"] in ("promoted", "rejected")


def test_a_hung_retrain_times_out_and_its_late_finish_is_recorded(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater
) -> None:
    """Issue 13, item 8: a hung retrain used to leave /readyz at 200 and the
    ledger at running for good."""
    feed(updater)
    gated = Gated(updater)
    app = make_app(gated, retrain_time_limit_seconds=60)
    client = app.test_client()
    clock = FakeClock(1000.0)
    service(app).controller.monotonic = clock  # the age and the limit run on it
    post_alerts(client, alert())
    assert gated.entered.wait(10)
    assert sample(app, "autoretrain_webhook_retrain_running_seconds") == 0
    clock.advance(30)
    assert sample(app, "autoretrain_webhook_retrain_running_seconds") == 30  # read at scrape time
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["retrain"] == "retrain 1 running for 30 s (time limit 60 s)"
    post_alerts(client, alert("SystemErrorRateHigh", "00aa"))  # waits behind it

    clock.advance(31)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["reason"] == (
        "retrain 1 (alert, incremental) has run for 61 s, past the time limit of 60 s, and "
        "cannot be stopped; 1 queued alert episode(s) and 0 API request(s) wait behind it")
    (row,) = retrains(client)["retrains"]
    assert row["outcome"] == "timed_out" and row["finished_at"] is None
    assert row["error"].startswith("timed out: no result within the time limit of 60 s")
    assert sample(app, "autoretrain_webhook_retrains_timed_out_total") == 1
    stats = client.get("/api/performance/stats").get_json()["webhook"]
    assert stats["running_retrain_id"] == 1 and stats["running_seconds"] == 61

    clock.advance(10)
    gated.release()  # it returns after all: what it did is recorded on its row
    wait_idle(app)
    rows = {r["id"]: r for r in retrains(client)["retrains"]}
    late = rows[1]
    assert late["outcome"] in ("promoted", "rejected") and late["finished_at"] is not None
    assert late["promoted"] is (late["outcome"] == "promoted")
    assert late["error"] == ("finished 71 s after it started, past the time limit of 60 s "
                             "(it was recorded as timed_out)")
    assert rows[2]["alerts"][0]["fingerprint"] == "00aa"  # the queued episode ran next
    assert client.get("/readyz").status_code == 200
    assert sample(app, "autoretrain_webhook_retrain_running_seconds") == 0
    assert sample(app, "autoretrain_webhook_retrains_timed_out_total") == 1


def test_repeats_of_an_episode_never_retrain_again(
    app: Flask, client: FlaskClient, updater: RealTimeModelUpdater
) -> None:
    feed(updater)
    post_alerts(client, alert())
    wait_idle(app)
    for _ in range(3):  # Alertmanager's repeat_interval re-sends
        body = post_alerts(client, alert())
        assert [d["action"] for d in body["decisions"]] == ["duplicate_episode"]
    wait_idle(app)
    assert retrains(client)["total"] == 1 and retrain_total(app) == 1
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="SystemAccuracyLow",
                  status="firing", action="duplicate_episode") == 3


def test_a_group_is_one_retrain_and_full_wins(
    app: Flask, client: FlaskClient, updater: RealTimeModelUpdater
) -> None:
    feed(updater)
    body = post_alerts(client, alert(), alert("SystemAccuracyCritical", "9f8e", "full"),
                       alert("SystemErrorRateHigh", "00aa"))
    assert [d["action"] for d in body["decisions"]] == [
        "queued_incremental", "queued_full", "queued_incremental"]
    wait_idle(app)
    (entry,) = retrains(client)["retrains"]
    assert entry["retrain_type"] == "full" and len(entry["alerts"]) == 3
    assert retrain_total(app, "full") == 1 and retrain_total(app, "incremental") == 0


def test_resolved_cancels_a_queued_retrain(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater
) -> None:
    gated, app, client = busy_with_an_alert(make_app, updater)
    second = alert("SystemErrorRateHigh", "00aa")
    assert post_alerts(client, second)["decisions"][0]["action"] == "queued_incremental"
    body = post_alerts(client, {**second, "status": "resolved"})
    assert [d["action"] for d in body["decisions"]] == ["resolved_cancelled"]
    assert service(app).controller.status()["queued_episodes"] == 0
    gated.release()
    wait_idle(app)
    assert retrains(client)["total"] == 1 and retrain_total(app) == 1
    # A late re-send of the cancelled episode's firing does not bring it back.
    assert post_alerts(client, second)["decisions"][0]["action"] == "duplicate_episode"
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="SystemErrorRateHigh",
                  status="resolved", action="resolved_cancelled") == 1


def test_resolved_alone_never_retrains(app: Flask, client: FlaskClient,
                                       updater: RealTimeModelUpdater) -> None:
    feed(updater)
    body = post_alerts(client, alert(status="resolved"))
    assert [d["action"] for d in body["decisions"]] == ["resolved"]
    wait_idle(app)
    assert retrains(client)["total"] == 0 and retrain_total(app) == 0
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="SystemAccuracyLow",
                  status="resolved", action="resolved") == 1


def test_cooldown_holds_the_next_episode(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater
) -> None:
    feed(updater)
    app = make_app(cooldown_seconds=3600)
    client = app.test_client()
    post_alerts(client, alert())
    wait_idle(app)
    before = time.time()
    decision = post_alerts(client, alert("SystemErrorRateHigh", "00aa"))["decisions"][0]
    assert decision["action"] == "cooldown" and decision["retrain_type"] == "incremental"
    assert before + 3500 < decision["not_before"] <= time.time() + 3600
    status = client.get("/api/performance/stats").get_json()["webhook"]
    assert status["queued_episodes"] == 1 and not status["busy"]
    assert sample(app, "autoretrain_webhook_retrain_queue_episodes") == 1
    assert retrains(client)["total"] == 1
    # Resolving it while it waits cancels it.
    body = post_alerts(client, alert("SystemErrorRateHigh", "00aa", status="resolved"))
    assert body["decisions"][0]["action"] == "resolved_cancelled"
    assert sample(app, "autoretrain_webhook_retrain_queue_episodes") == 0


def test_the_ledger_survives_an_app_restart(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater
) -> None:
    feed(updater)
    first = make_app(cooldown_seconds=3600)
    client = first.test_client()
    post_alerts(client, alert())
    wait_idle(first)
    assert post_alerts(client, alert("SystemErrorRateHigh", "00aa"))["decisions"][0][
        "action"] == "cooldown"
    service(first).close()

    second = make_app(cooldown_seconds=3600)  # same ledger_path
    client = second.test_client()
    body = post_alerts(client, alert(), alert("SystemErrorRateHigh", "00aa"))
    assert [d["action"] for d in body["decisions"]] == ["duplicate_episode",
                                                        "duplicate_episode"]
    status = service(second).controller.status()
    assert status["queued_episodes"] == 1  # the waiting episode was restored
    assert status["cooldown_until"] > time.time() + 3500  # and so was the cooldown
    assert retrains(client)["total"] == 1


# -- authentication --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/alerts", "/api/performance/trigger-retraining"])
@pytest.mark.parametrize(("authorization", "error"), [
    (None, "an Authorization: Bearer token is required"),
    ("", "an Authorization: Bearer token is required"),
    ("Bearer", "an Authorization: Bearer token is required"),
    (f"Basic {TOKEN}", "an Authorization: Bearer token is required"),
    ("Bearer wrong-token-0123456789abcdef", "the Bearer token is not valid"),
    (f"Bearer {TOKEN}x", "the Bearer token is not valid"),
    (f"Bearer {TOKEN[:-1]}", "the Bearer token is not valid"),
    ("Bearer t\u00e9st-token-0123456789abcdef", "the Bearer token is not valid"),
])
def test_post_endpoints_require_the_token(app: Flask, client: FlaskClient, path: str,
                                          authorization: str | None, error: str) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.post(path, data=json.dumps(message(alert())), headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized", "message": error}
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="autoretrain"')
    assert sample(app, "autoretrain_webhook_requests_rejected_total", reason="unauthorized") == 1
    assert retrains(client)["total"] == 0


def test_the_scheme_is_case_insensitive(client: FlaskClient) -> None:
    response = client.post("/alerts", json=message(alert(retrain=None)),
                           headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 202


def test_get_endpoints_need_no_token(client: FlaskClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/api/performance/stats",
                 "/api/performance/retraining", "/openapi.yaml", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_unauthenticated_mode_must_be_chosen(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ValueError, match="no token configured"):
        make_app(token=None)
    app = make_app(token=None, allow_unauthenticated=True)
    response = app.test_client().post("/alerts", json=message(alert(retrain=None)))
    assert response.status_code == 202


def test_logs_never_contain_the_token(app: Flask, client: FlaskClient,
                                      caplog: pytest.LogCaptureFixture) -> None:
    wrong = "Bearer guess-0123456789abcdefghij"
    with caplog.at_level(logging.DEBUG):
        post_alerts(client, alert())
        client.post("/alerts", json=message(alert()), headers={"Authorization": wrong})
        client.post("/api/performance/trigger-retraining", json={}, headers=AUTH)
        client.get("/api/performance/stats")
        wait_idle(app)
    assert caplog.records  # something was logged, so the check below can fail
    assert TOKEN not in caplog.text and "guess-0123456789" not in caplog.text


# -- bad input: never a 500 ------------------------------------------------------------------------
BIG = 4096


@pytest.mark.parametrize(("headers", "body", "status", "error", "message"), [
    ({"Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type",
     "Content-Type must be application/json, got 'text/plain'"),
    ({}, b"{}", 415, "unsupported_media_type", "Content-Type must be application/json, got "
     "'none'"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=1", 415,
     "unsupported_media_type", None),
    ({"Content-Type": "application/json"}, b"", 400, "invalid_json",
     "the body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    ({"Content-Type": "application/json"}, b"{\"version\": ", 400, "invalid_json", None),
    ({"Content-Type": "application/json"}, b"{\"a\": NaN}", 400, "invalid_json",
     "the body is not valid JSON: NaN is not valid JSON"),
    ({"Content-Type": "application/json"}, b"\xff\xfe{}", 400, "invalid_json", None),
    ({"Content-Type": "application/json"}, b"[" * 2000 + b"]" * 2000, 400, "invalid_json",
     "the JSON is nested too deeply"),
    ({"Content-Type": "application/json; charset=utf-8"}, b"[]", 400, "invalid_payload",
     "the payload must be an object, got an array"),
    ({"Content-Type": "application/json"}, b"{\"version\": \"4\"}", 400, "invalid_payload",
     "status is required (an Alertmanager webhook message has version, status and alerts)"),
    ({"Content-Type": "application/json"}, b" " * (BIG + 1), 413, "payload_too_large",
     f"the body exceeds the limit of {BIG} bytes"),
])
def test_bad_alert_requests(make_app: Callable[..., Flask], headers: dict[str, str],
                            body: bytes, status: int, error: str, message: str | None) -> None:
    app = make_app(max_body_bytes=BIG)
    client = app.test_client()
    response = client.post("/alerts", data=body, headers={**AUTH, **headers})
    assert response.status_code == status
    data = response.get_json()
    assert data["error"] == error and (message is None or data["message"] == message)
    assert "Traceback" not in response.get_data(as_text=True)
    assert sample(app, "autoretrain_webhook_requests_rejected_total", reason=error) == 1


def test_a_streamed_body_over_the_limit_is_refused(make_app: Callable[..., Flask]) -> None:
    # Chunked transfer: no Content-Length, so only the capped read can catch it.
    app = make_app(max_body_bytes=BIG)
    response = app.test_client().post(
        "/alerts", input_stream=io.BytesIO(b" " * (BIG * 3)),
        headers={**JSON_AUTH, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"


def test_a_streamed_body_under_the_limit_is_read(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_body_bytes=BIG)
    body = json.dumps(message(alert(retrain=None))).encode()
    response = app.test_client().post(
        "/alerts", input_stream=io.BytesIO(body),
        headers={**JSON_AUTH, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 202


def test_unknown_paths_and_methods_get_json(app: Flask, client: FlaskClient) -> None:
    response = client.get("/nope/../../etc/passwd")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    response = client.get("/alerts")
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    response = client.delete("/api/performance/retraining")
    assert response.status_code == 405 and set(response.headers["Allow"].split(", ")) == {
        "GET", "HEAD", "OPTIONS"}
    assert sample(app, "autoretrain_webhook_requests_rejected_total", reason="not_found") == 1
    assert sample(app, "autoretrain_webhook_requests_rejected_total",
                  reason="method_not_allowed") == 2


@pytest.mark.parametrize("path", ["//api/performance/trigger-retraining",
                                  "///api/performance/trigger-retraining", "//alerts"])
def test_a_leading_double_slash_is_not_the_route(app: Flask, client: FlaskClient,
                                                 updater: RealTimeModelUpdater,
                                                 path: str) -> None:
    # Werkzeug's router drops empty leading segments: //x would reach /x's handler
    # and sidestep a proxy rule keyed on the exact path (issue 13, item 9).
    feed(updater)
    body = json.dumps(message(alert())) if path == "//alerts" else "{}"
    response = client.post("/x", data=body, headers=JSON_AUTH,
                           environ_overrides={"PATH_INFO": path})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    assert sample(app, "autoretrain_webhook_requests_rejected_total", reason="not_found") == 1
    wait_idle(app)
    assert retrains(client)["total"] == 0


def test_api_retrains_are_rate_limited_with_retry_after(make_app: Callable[..., Flask],
                                                        updater: RealTimeModelUpdater) -> None:
    app = make_app(api_retrain_min_interval_seconds=3600)
    client = app.test_client()
    assert client.post(TRIGGER, headers=AUTH).status_code == 200
    refused = client.post(TRIGGER, headers=AUTH)
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert sample(app, "autoretrain_webhook_requests_rejected_total", reason="rate_limited") == 1
    assert retrains(client)["total"] == 1


def test_disk_full_after_a_promotion_is_reported_as_promoted_not_saved(
        app: Flask, client: FlaskClient, updater: RealTimeModelUpdater,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 13, item 3: the promoted model serves already; the answer was a 500, the
    # ledger said "error". Now every report says "promoted, not saved".
    import errno

    feed(updater)
    before = updater.version

    def full(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(updater.store, "save", full)
    response = client.post(TRIGGER, headers=AUTH, json={"force_full_retrain": True})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["result"]["promoted"] is True and body["result"]["saved"] is False
    assert "could not be saved" in body["message"]
    assert body["result"]["model_version"] == before
    assert "not saved" in body["result"]["error"] and "No space left" in body["result"]["error"]
    (entry,) = retrains(client)["retrains"]
    assert entry["outcome"] == "promoted" and entry["promoted"] is True
    assert "promoted, not saved" in entry["error"] and entry["model_version"] == before
    assert sample(app, "autoretrain_model_save_failures_total") == 1
    assert sample(app, "autoretrain_model_retrains_total", model_type="agent_selection",
                  retrain_type="full", result="promoted") == 1
    monkeypatch.undo()
    assert updater.save() > before  # the next save succeeds with the promoted model


def test_label_values_are_data_only(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.rglob("*"))
    nasty = alert("$(touch pwned)\n{{ .Foo }}", fp="abcdef", retrain="full",
                  agent="../../../../tmp/pwned", model_type="'; DROP TABLE episodes; --")
    body = post_alerts(client, nasty)
    assert body["decisions"][0]["alertname"] == "$(touch pwned)\n{{ .Foo }}"
    wait_idle(app)
    (entry,) = retrains(client)["retrains"]
    assert entry["reason"] == "alertmanager: $(touch pwned)?{{ .Foo }} (1 episode)"
    after = sorted(p.name for p in tmp_path.rglob("*"))
    assert [n for n in after if n not in before and not n.startswith(("model-", "ledger"))] == []
    assert not Path("pwned").exists()


def test_alertname_labels_are_bounded(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_alertnames=2)
    client = app.test_client()
    post_alerts(client, *[alert(f"Alert{i}", fp=f"{i:04x}", retrain=None) for i in range(5)])
    post_alerts(client, alert("A" * 101, fp="ffff", retrain=None))
    labels = {"status": "firing", "action": "ignored_no_retrain_label"}
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="Alert0", **labels) == 1
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="Alert1", **labels) == 1
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="Alert2", **labels) is None
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="other", **labels) == 4


# -- POST /api/performance/trigger-retraining ------------------------------------------------------
def test_trigger_retraining_original_contract(app: Flask, client: FlaskClient,
                                              updater: RealTimeModelUpdater) -> None:
    feed(updater)
    response = client.post("/api/performance/trigger-retraining", headers=AUTH,
                           json={"reason": "drift seen on the dashboard",
                                 "force_full_retrain": True})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"status", "message", "result", "retrain_id", "timestamp"}
    assert body["status"] == "success" and body["timestamp"].endswith("Z")
    result = body["result"]
    assert result["success"] is True and result["retrain_type"] == "full"
    assert result["reason"] == "drift seen on the dashboard"
    assert result["model_type"] == "agent_selection" and result["events_processed"] == 100
    assert body["message"] == ("retrained; the candidate was promoted" if result["promoted"]
                               else "retrained; the candidate was rejected (the serving "
                               "model scored better)")
    (entry,) = retrains(client)["retrains"]
    assert (entry["id"], entry["trigger"], entry["retrain_type"]) == (body["retrain_id"], "api",
                                                                      "full")
    assert retrain_total(app, "full") == 1


def test_trigger_retraining_without_a_body_uses_the_defaults(client: FlaskClient) -> None:
    response = client.post("/api/performance/trigger-retraining", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    # Nothing buffered: the updater skips; the request itself succeeded.
    assert body["status"] == "error" and body["result"]["success"] is False
    assert body["result"]["reason"] == "manual_api_trigger"
    assert body["result"]["retrain_type"] == "incremental"
    assert body["message"] == "not retrained: no buffered events to retrain on"
    assert retrains(client)["retrains"][0]["outcome"] == "skipped"


@pytest.mark.parametrize(("body", "headers", "status", "message"), [
    ({"force_full_retrain": "yes"}, {}, 400, "force_full_retrain must be true or false"),
    ({"force_full_retrain": 1}, {}, 400, "force_full_retrain must be true or false"),
    ({"reason": 5}, {}, 400, "reason must be a non-empty string of at most 500 characters"),
    ({"reason": " "}, {}, 400, "reason must be a non-empty string of at most 500 characters"),
    ({"reason": "x" * 501}, {}, 400, "reason must be a non-empty string of at most 500 "
                                     "characters"),
    ({"model_type": "other"}, {}, 400, "model_type must be one of agent_selection"),
    ({"reasn": "typo"}, {}, 400, "unknown field(s) 'reasn'; allowed: reason, "
                                 "force_full_retrain, model_type"),
    ([], {}, 400, "the body must be a JSON object"),
    (b"reason=x", {"Content-Type": "text/plain"}, 415,
     "Content-Type must be application/json, got 'text/plain'"),
    (b"{}", {"Content-Type": ""}, 415, "Content-Type must be application/json, got 'none'"),
    (b"{bad", {"Content-Type": "application/json"}, 400, None),
])
def test_bad_trigger_requests(client: FlaskClient, body: Any, headers: dict[str, str],
                              status: int, message: str | None) -> None:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = client.post("/api/performance/trigger-retraining", headers={**AUTH, **headers},
                           **kwargs)
    assert response.status_code == status
    assert message is None or response.get_json()["message"] == message
    assert retrains(client)["total"] == 0


def test_api_and_alert_retrains_are_serialised(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater
) -> None:
    gated, app, client = busy_with_an_alert(make_app, updater)
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(client.post(
        "/api/performance/trigger-retraining", headers=AUTH, json={"reason": "manual"})))
    caller.start()
    assert wait_until(lambda: service(app).controller.status()["queued_api_requests"] == 1), \
        "API request not queued behind the alert retrain"
    assert not answers  # synchronous: still waiting
    gated.release()
    caller.join(30)
    assert answers[0].status_code == 200
    page = retrains(client)
    assert [r["trigger"] for r in page["retrains"]] == ["api", "alert"]
    first, second = page["retrains"][1], page["retrains"][0]
    assert first["finished_at"] <= second["started_at"]


def test_trigger_retraining_timeout_is_503(make_app: Callable[..., Flask],
                                           updater: RealTimeModelUpdater) -> None:
    gated = Gated(updater)
    app = make_app(gated, retrain_timeout_seconds=0.2)
    response = app.test_client().post("/api/performance/trigger-retraining", headers=AUTH)
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "timeout",
        "message": "the retrain did not finish within 0.2 s; it goes on, see "
                   "GET /api/performance/retraining"}
    gated.release()
    wait_idle(app)


def test_an_updater_failure_is_a_500_without_details(make_app: Callable[..., Flask]) -> None:
    app = make_app(Broken())
    client = app.test_client()
    response = client.post("/api/performance/trigger-retraining", headers=AUTH)
    assert response.status_code == 500
    body = response.get_json()
    assert body["status"] == "error" and body["message"] == "the retrain failed: RuntimeError"
    assert "/secret/path" not in response.get_data(as_text=True)
    (entry,) = retrains(client)["retrains"]
    assert entry["outcome"] == "error" and entry["error"] == (
        "RuntimeError: disk on fire at /secret/path")
    assert sample(app, "autoretrain_webhook_controller_errors_total") == 1
    # The worker survived: the next request is served too.
    assert client.post("/api/performance/trigger-retraining", headers=AUTH).status_code == 500
    assert service(app).controller.running


def test_an_unexpected_error_is_a_json_500(make_app: Callable[..., Flask]) -> None:
    client = make_app(Broken()).test_client()
    response = client.get("/api/performance/stats")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal_error", "message": "internal server error"}
    assert "disk on fire" not in response.get_data(as_text=True)


# -- GET /api/performance/retraining ---------------------------------------------------------------
def test_retraining_is_paginated_newest_first(client: FlaskClient) -> None:
    for i in range(3):
        client.post("/api/performance/trigger-retraining", headers=AUTH,
                    json={"reason": f"r{i}"})
    page = retrains(client, limit=2)
    assert [r["reason"] for r in page["retrains"]] == ["r2", "r1"]
    assert (page["total"], page["limit"], page["offset"], page["next_offset"]) == (3, 2, 0, 2)
    page = retrains(client, limit=2, offset=2)
    assert [r["reason"] for r in page["retrains"]] == ["r0"] and page["next_offset"] is None


@pytest.mark.parametrize(("query", "message"), [
    ("limit=0", "limit must be an integer in [1, 100], got '0'"),
    ("limit=101", "limit must be an integer in [1, 100], got '101'"),
    ("limit=abc", "limit must be an integer in [1, 100], got 'abc'"),
    ("limit=1.5", "limit must be an integer in [1, 100], got '1.5'"),
    ("limit=", "limit must be an integer in [1, 100], got ''"),
    ("limit=%D9%A3", "limit must be an integer in [1, 100], got '\u0663'"),  # Arabic 3
    ("offset=-1", "offset must be an integer in [0, 1000000000], got '-1'"),
    ("offset=99999999999999999999", "offset must be an integer in [0, 1000000000]"),
    ("page=2", "unknown query parameter 'page'; allowed: limit, offset"),
])
def test_bad_retraining_parameters(app: Flask, client: FlaskClient, query: str,
                                   message: str) -> None:
    response = client.get(f"/api/performance/retraining?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_request" and body["message"].startswith(message)
    assert sample(app, "autoretrain_webhook_requests_rejected_total", reason="invalid_request") == 1


# -- stats, metrics, health ------------------------------------------------------------------------
def test_stats_are_the_updaters_metrics(client: FlaskClient,
                                        updater: RealTimeModelUpdater) -> None:
    feed(updater, 30)
    body = client.get("/api/performance/stats").get_json()
    assert body["event_buffer_size"] == 30 and body["events_applied"] == 30
    assert body["running"] is True and body["source"] == "embedded"
    assert body["webhook"]["worker_running"] is True
    assert body["webhook"]["cooldown_seconds"] == 0


def test_metrics_render_both_registries(client: FlaskClient) -> None:
    post_alerts(client, alert(retrain=None))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert ('autoretrain_webhook_alerts_total{action="ignored_no_retrain_label",'
            'alertname="SystemAccuracyLow",status="firing"} 1.0') in text
    assert ('autoretrain_model_retrains_total{model_type="agent_selection",result="promoted",'
            in text)
    assert ('autoretrain_webhook_request_duration_seconds_count{endpoint="/alerts",method="POST"}'
            ' 1.0' in text)


def test_metrics_with_one_shared_registry(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "m"), registry=registry)
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "l")}, updater=updater,
                     registry=registry)
    try:
        text = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        service(app).close()
    assert text.count("# HELP autoretrain_model_retrains_total") == 1
    assert text.count("# HELP autoretrain_webhook_alerts_total") == 1


def test_flask_upper_case_keys_go_to_app_config(
    tmp_path: Path, updater: RealTimeModelUpdater
) -> None:
    # The fixture every Flask user writes first (Flask's tutorial, conftest.py).
    app = create_app({"TESTING": True, "SECRET_KEY": "dev", "token": TOKEN,
                      "ledger_path": str(tmp_path / "l")}, updater=updater,
                     registry=CollectorRegistry())
    try:
        assert app.testing is True and app.config["TESTING"] is True
        assert app.config["SECRET_KEY"] == "dev"
        # The webhook's own keys are its settings, not Flask's.
        assert "token" not in app.config and "TOKEN" not in app.config
        assert service(app).config.token == TOKEN
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        service(app).close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"TESTING": True, "tokn": "x"}, "unknown config key 'tokn'"),
        # Mixed case is neither Flask's nor ours: a typo, refused.
        ({"Testing": True}, "unknown config key 'Testing'"),
        ({"TESTING": True, "cooldown_seconds": -1}, "cooldown_seconds"),
    ],
)
def test_own_keys_stay_validated_beside_flask_keys(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_app({"token": TOKEN, "ledger_path": str(tmp_path / "l"), **config},
                   updater=Broken(), registry=CollectorRegistry(), start=False)


def test_create_app_can_build_and_own_the_updater(tmp_path: Path) -> None:
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "l"),
                      "model_storage_path": str(tmp_path / "models")})
    svc = service(app)
    try:
        assert svc.owns_updater and svc.updater.running
        assert svc.updater.registry is svc.registry
        assert app.test_client().get("/readyz").status_code == 200
    finally:
        svc.close()
    assert not svc.updater.running


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "alive"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"ready": True, "reason": "ready", "checks": {
        "model": "new (no stored model yet)", "consumer": "running",
        "retrain_worker": "running"}}


def test_not_ready_without_a_running_consumer(make_app: Callable[..., Flask],
                                              tmp_path: Path) -> None:
    stopped = RealTimeModelUpdater(model_storage_path=str(tmp_path / "other"))
    response = make_app(stopped).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["ready"] is False and body["reason"] == "the updater's consumer is not running"
    assert body["checks"]["consumer"] == "stopped"


def test_not_ready_when_no_stored_model_loads(make_app: Callable[..., Flask],
                                              tmp_path: Path) -> None:
    store = tmp_path / "corrupt"
    store.mkdir()
    (store / "model-00000001.json").write_text("{not json")
    broken = RealTimeModelUpdater(model_storage_path=str(store))
    broken.start()
    try:
        response = make_app(broken).test_client().get("/readyz")
    finally:
        broken.stop()
    assert response.status_code == 503
    assert response.get_json()["reason"] == (
        "the model store has versions but none could be loaded")


def test_not_ready_after_close(app: Flask, client: FlaskClient) -> None:
    service(app).controller.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "the retrain worker is not running"
    response = client.post("/api/performance/trigger-retraining", headers=AUTH)
    assert response.status_code == 503
    assert response.get_json() == {"error": "unavailable",
                                   "message": "the retrain worker is not running"}


# -- the OpenAPI document --------------------------------------------------------------------------
def _document() -> dict[str, Any]:
    path = Path(__file__).parents[2] / "webhook" / "openapi.yaml"
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _flask_path(rule: str) -> str:
    return rule.replace("<", "{").replace(">", "}")


def test_openapi_is_served_and_checked_in(client: FlaskClient) -> None:
    served = client.get("/openapi.yaml")
    assert served.status_code == 200
    assert yaml.safe_load(served.get_data(as_text=True)) == _document()
    assert client.get("/openapi.json").get_json() == _document()


def test_every_route_is_documented_and_nothing_else(app: Flask) -> None:
    implemented = {(_flask_path(rule.rule), method.lower())
                   for rule in app.url_map.iter_rules()
                   for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    paths = _document()["paths"]
    documented = {(path, method) for path, item in paths.items() for method in item}
    assert implemented == documented


def test_every_status_seen_is_documented(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater, tmp_path: Path
) -> None:
    """Drive each route through its statuses; each must be in the document."""
    feed(updater)
    paths = _document()["paths"]
    app = make_app(max_body_bytes=BIG)
    client = app.test_client()
    stopped_client = make_app(
        RealTimeModelUpdater(model_storage_path=str(tmp_path / "x")),
        ledger_path=str(tmp_path / "other.sqlite3")).test_client()
    broken_client = make_app(Broken(), ledger_path=str(tmp_path / "b.sqlite3")).test_client()
    good = json.dumps(message(alert())).encode()
    seen: list[tuple[str, str, int]] = []

    def call(c: FlaskClient, method: str, path: str, **kwargs: Any) -> None:
        response = c.open(path, method=method.upper(), **kwargs)
        seen.append((path.split("?")[0], method, response.status_code))

    trigger = "/api/performance/trigger-retraining"
    for target in ("/alerts", trigger):
        call(client, "post", target, data=good, headers=JSON_AUTH)
        call(client, "post", target, data=b"{", headers=JSON_AUTH)
        call(client, "post", target, data=good, headers={"Content-Type": "application/json"})
        call(client, "post", target, data=b" " * (BIG + 1), headers=JSON_AUTH)
        call(client, "post", target, data=good, headers={**AUTH, "Content-Type": "text/plain"})
    call(broken_client, "post", trigger, headers=AUTH)
    service(app).controller.stop()
    call(client, "post", trigger, headers=AUTH)
    call(client, "get", "/api/performance/retraining?limit=2")
    call(client, "get", "/api/performance/retraining?limit=0")
    for path in ("/api/performance/stats", "/metrics", "/healthz", "/readyz", "/openapi.yaml",
                 "/openapi.json"):
        call(client, "get", path)
    call(stopped_client, "get", "/readyz")
    call(broken_client, "get", "/api/performance/stats")
    undocumented = [s for s in seen if str(s[2]) not in paths[s[0]][s[1]]["responses"]]
    assert undocumented == []
    assert {s[2] for s in seen} == {200, 202, 400, 401, 413, 415, 500, 503}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_openapi_document_is_valid() -> None:
    document = _document()
    assert document["openapi"].startswith("3.0.")
    for ref in set(_refs(document)):  # every reference resolves
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    from openapi_spec_validator import validate  # the test extra declares it

    validate(document)


# -- inputs the HTTP fuzz found (tests/integration/test_fuzz_http.py), pinned here -----------
@pytest.mark.parametrize("reason", ["line\nforged: entry", "bell\x07", "tab\tinside"])
def test_trigger_reason_must_be_printable_on_one_line(client: FlaskClient, reason: str) -> None:
    response = client.post("/api/performance/trigger-retraining", json={"reason": reason},
                           headers=AUTH)
    assert response.status_code == 400
    assert "printable" in response.get_json()["message"]


def test_a_repeated_query_parameter_is_refused(client: FlaskClient) -> None:
    response = client.get("/api/performance/retraining?limit=5&limit=500")
    assert response.status_code == 400
    assert response.get_json()["message"] == "limit must be given at most once"


@pytest.mark.parametrize("path", ["/api//performance/stats", "//alerts"])
def test_doubled_slashes_are_a_json_404_not_a_redirect(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.is_json and "Location" not in response.headers


def test_an_unprintable_alertname_is_counted_as_other(app: Flask, client: FlaskClient) -> None:
    post_alerts(client, alert(name="Bad\u0007Name", retrain=None))
    body = client.get("/metrics").get_data(as_text=True)
    assert "\u0007" not in body
    assert sample(app, "autoretrain_webhook_alerts_total", alertname="other", status="firing",
                  action="ignored_no_retrain_label") == 1


def test_oversized_labels_are_refused_and_never_reach_the_ledger_api(
    client: FlaskClient, app: Flask
) -> None:
    # Issue 13, item 6: 30 POSTs with a 1 MB alertname made the unauthenticated
    # ledger API answer 31.7 MB.
    for i in range(3):
        big = alert(name="A" * 100_000, fp=f"{i + 1:016x}")
        response = client.post("/alerts", json=message(big), headers=AUTH)
        assert response.status_code == 400
        body = response.get_json()
        assert body["error"] == "invalid_payload"
        assert "longer than the limit of 1024 characters" in body["message"]
    response = client.post("/alerts", json=message(*[alert(fp=f"{i + 1:016x}")
                                                     for i in range(1001)]), headers=AUTH)
    assert response.status_code == 400
    assert "limit of 1000 alerts per notification" in response.get_json()["message"]
    wait_idle(app)
    assert len(client.get("/api/performance/retraining").get_data()) < 10_000


# -- did the retrain help? ------------------------------------------------------------------------
def test_retraining_list_and_metrics_show_each_retrains_measured_effect(
    make_app: Callable[..., Flask], updater: RealTimeModelUpdater
) -> None:
    app = make_app(effect_window_seconds=60, effect_min_events=20, effect_settle_seconds=0)
    client = app.test_client()
    ids = EventIdFactory()

    def traffic(start: float, success_share: float) -> None:
        updater.ingest([run_event(ids(), start + i, "a0", "llm",
                                  # spread evenly: any stretch has about the share
                                  "success" if (i * success_share) % 1.0 < success_share
                                  else "failure",
                                  10.0, 5, 0.01, task_type="t0") for i in range(60)])

    now = time.time()
    traffic(now - 60, 0.5)
    response = client.post(TRIGGER, json={"reason": "effect test"}, headers=JSON_AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    (row,) = retrains(client)["retrains"]
    assert row["effect"] is None  # its after-window is open
    traffic(time.time(), 0.9)  # what the platform reports after the retrain
    effects = service(app).effects
    assert effects is not None
    effects.clock = lambda: time.time() + 120  # the after-window has closed
    effects.check()
    (row,) = retrains(client)["retrains"]
    effect = row["effect"]
    assert effect["verdict"] == "improved"
    # The windows are counted in 10 s buckets of event time: the real clock puts
    # their edges anywhere in the traffic, so a few runs more or less count.
    assert effect["before"]["success_rate"] == pytest.approx(0.5, abs=0.05)
    assert effect["after"]["success_rate"] == pytest.approx(0.9, abs=0.05)
    assert effect["delta"]["success_rate"] == pytest.approx(0.4, abs=0.1)
    assert effect["events"]["before"]["success_rate"] >= 20
    assert effect["delta"]["accuracy"] is None  # no accuracy records: no number
    text = client.get("/metrics").get_data(as_text=True)
    assert 'autoretrain_retrain_effects_total{trigger="api",verdict="improved"} 1.0' in text
    assert 'autoretrain_retrain_effect_delta_ratio{figure="success_rate",trigger="api"}' in text
