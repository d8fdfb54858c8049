"""The payload corpus (tests/unit/payloads) through POST /alerts: expected status, body, metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from autoretrain.webhook import create_app

PAYLOADS = Path(__file__).parent / "payloads"
TOKEN = "corpus-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
LIMIT = 256 * 1024

Q_INC, Q_FULL, DUP = "queued_incremental", "queued_full", "duplicate_episode"
#: Actions per alert, for a fresh ledger.
VALID = {
    "valid-firing-single.json": [Q_INC],
    "valid-firing-grouped.json": [Q_INC, Q_FULL, Q_INC],
    "valid-resolved.json": ["resolved"],
    "valid-firing-and-resolved.json": [Q_INC, "resolved"],
    "valid-duplicates.json": [Q_INC, DUP],
    "valid-unknown-alerts.json": ["ignored_no_retrain_label"] * 2,
    "valid-invalid-retrain-label.json": ["ignored_invalid_retrain_label"],
    "valid-truncated.json": [Q_INC, Q_INC],
    "valid-extra-fields.json": [Q_FULL],
    "valid-timezone-nanoseconds.json": [Q_INC],
    "valid-grouped-many.json": [Q_INC] * 100,
    "valid-minimal.json": [Q_INC],
}
#: The error message of each invalid payload.
INVALID = {
    "invalid-version.json": "version must be \"4\", got '3'",
    "invalid-missing-alerts.json": "alerts is required (an Alertmanager webhook message has "
                                   "version, status and alerts)",
    "invalid-alerts-not-array.json": "alerts must be an array, got an object",
    "invalid-empty-alerts.json": "alerts must not be empty",
    "invalid-label-number.json": "alerts[0].labels.retrain must be a string, got a number",
    "invalid-labels-null.json": "alerts[0].labels must be an object, got null",
    "invalid-starts-at.json": "alerts[0].startsAt must be an RFC 3339 timestamp, got 'yesterday'",
    "invalid-starts-at-date-only.json": "alerts[0].startsAt must be an RFC 3339 timestamp, "
                                        "got '2024-05-01'",
    "invalid-starts-at-month-13.json": "alerts[0].startsAt is not a valid date and time, "
                                       "got '2024-13-01T00:00:00Z'",
    "invalid-fingerprint-path.json": "alerts[0].fingerprint must be 1 to 64 hexadecimal "
                                     "digits, got '../../etc/passwd'",
    "invalid-fingerprint-missing.json": "alerts[0].fingerprint is required",
    "invalid-alert-status.json": "alerts[0].status must be \"firing\" or \"resolved\", "
                                 "got 'pending'",
    "invalid-status-bool.json": "status must be \"firing\" or \"resolved\", got True",
    "invalid-truncated-negative.json": "truncatedAlerts must be an integer >= 0, got -1",
    "invalid-truncated-string.json": "truncatedAlerts must be an integer >= 0, got '3'",
    "invalid-alert-not-object.json": "alerts[0] must be an object, got a string",
    "invalid-label-name.json": "alerts[0].labels has an invalid name 'bad-name'",
    "invalid-common-labels-list.json": "commonLabels must be an object, got an array",
    "invalid-top-level-array.json": "the payload must be an object, got an array",
    "invalid-string.json": "the payload must be an object, got a string",
    "invalid-null.json": "the payload must be an object, got null",
}


def corpus(prefix: str) -> list[str]:
    return sorted(p.name for p in PAYLOADS.glob(f"{prefix}-*.json"))


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    for name in list(os.environ):
        if name.startswith("AUTORETRAIN_WEBHOOK_"):
            monkeypatch.delenv(name)
    # The app builds its own updater (nothing buffered: alert retrains are skipped).
    app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / "ledger.sqlite3"),
                      "model_storage_path": str(tmp_path / "models"),
                      "max_body_bytes": LIMIT, "cooldown_seconds": 3600},
                     registry=CollectorRegistry())
    yield app
    app.extensions["autoretrain"].close()


def test_the_corpus_is_fully_specified() -> None:
    names = {p.name for p in PAYLOADS.glob("*.json")}
    assert set(corpus("valid")) == set(VALID) and set(corpus("invalid")) == set(INVALID)
    assert names == set(VALID) | set(INVALID) | set(corpus("malformed"))
    assert len(corpus("malformed")) >= 5


@pytest.mark.parametrize("name", corpus("valid"))
def test_valid_payloads(app: Flask, name: str) -> None:
    data = json.loads((PAYLOADS / name).read_bytes())
    response = app.test_client().post("/alerts", data=(PAYLOADS / name).read_bytes(),
                                      headers=HEADERS)
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert [d["action"] for d in body["decisions"]] == VALID[name]
    assert [d["index"] for d in body["decisions"]] == list(range(len(data["alerts"])))
    assert body["truncated_alerts"] == data.get("truncatedAlerts", 0)
    registry = app.extensions["autoretrain"].registry
    for action in set(VALID[name]):
        total = sum(s.value for m in registry.collect() if m.name == "autoretrain_webhook_alerts"
                    for s in m.samples
                    if s.name == "autoretrain_webhook_alerts_total"
                    and s.labels["action"] == action)
        assert total == VALID[name].count(action)


@pytest.mark.parametrize("name", corpus("invalid"))
def test_invalid_payloads(app: Flask, name: str) -> None:
    response = app.test_client().post("/alerts", data=(PAYLOADS / name).read_bytes(),
                                      headers=HEADERS)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_payload", "message": INVALID[name]}
    registry = app.extensions["autoretrain"].registry
    assert registry.get_sample_value("autoretrain_webhook_requests_rejected_total",
                                     {"reason": "invalid_payload"}) == 1


@pytest.mark.parametrize("name", corpus("malformed"))
def test_malformed_payloads(app: Flask, name: str) -> None:
    response = app.test_client().post("/alerts", data=(PAYLOADS / name).read_bytes(),
                                      headers=HEADERS)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_json" and "Traceback" not in body["message"]


def test_huge_payload_is_refused_before_parsing(app: Flask) -> None:
    many = json.loads((PAYLOADS / "valid-grouped-many.json").read_bytes())
    many["alerts"] = many["alerts"] * 30
    body = json.dumps(many).encode()
    assert len(body) > LIMIT
    response = app.test_client().post("/alerts", data=body, headers=HEADERS)
    assert response.status_code == 413
    assert response.get_json() == {"error": "payload_too_large",
                                   "message": f"the body exceeds the limit of {LIMIT} bytes"}
    registry = app.extensions["autoretrain"].registry
    assert registry.get_sample_value("autoretrain_webhook_alerts_total", {
        "alertname": "SystemAccuracyLow", "status": "firing",
        "action": "queued_incremental"}) is None


def test_the_whole_corpus_in_one_ledger_never_queues_an_episode_twice(app: Flask) -> None:
    client = app.test_client()
    queued: list[tuple[str, str]] = []
    for name in corpus("valid") * 2:  # everything twice, as Alertmanager repeats would
        response = client.post("/alerts", data=(PAYLOADS / name).read_bytes(), headers=HEADERS)
        assert response.status_code == 202
        queued += [(d["fingerprint"], d["startsAt"]) for d in response.get_json()["decisions"]
                   if d["action"] in (Q_INC, Q_FULL, "cooldown")]
    assert len(queued) == len(set(queued))
