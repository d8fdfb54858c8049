"""The real ``python -m webhook`` process on waitress: auth, 413, readyz, SIGTERM, restart."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import free_port

pytestmark = pytest.mark.integration

TOKEN = "server-token-0123456789abcdef"
LIMIT = 65536


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORETRAIN_WEBHOOK_")}
    env.update({f"AUTORETRAIN_WEBHOOK_{k.upper()}": v for k, v in settings.items()})
    return env


class WebhookProcess:
    """``python -m webhook`` in ``workdir`` with the token in a file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        token_file = workdir / "token"
        token_file.write_text(TOKEN + "\n")
        self.env = _env(token_file=str(token_file), port=str(self.port),
                        ledger_path=str(workdir / "ledger.sqlite3"),
                        model_storage_path=str(workdir / "models"),
                        max_body_bytes=str(LIMIT), cooldown_seconds="0", threads="4")
        self.log = workdir / "webhook.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WebhookProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "webhook"], cwd=self.workdir,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"webhook did not become ready:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            # response.headers: a case-insensitive mapping.
            return response.status, response.headers, response.read()
        finally:
            conn.close()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[WebhookProcess]:
    process = WebhookProcess(tmp_path).start()
    yield process
    process.stop()


def alerts_body(fingerprint: str = "1a2b3c4d5e6f7081") -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "SystemAccuracyLow",
                                        "retrain": "incremental"},
         "startsAt": "2024-05-01T10:00:00Z", "fingerprint": fingerprint}]}).encode()


AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def test_readyz_and_healthz(webhook: WebhookProcess) -> None:
    status, headers, body = webhook.request("GET", "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert headers["Server"] == "autoretrain-webhook"
    assert webhook.request("GET", "/healthz")[0] == 200


def test_token_is_required(webhook: WebhookProcess) -> None:
    status, headers, body = webhook.request("POST", "/alerts", alerts_body(),
                                            {"Content-Type": "application/json"})
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="autoretrain"'
    status, _, body = webhook.request("POST", "/alerts", alerts_body(),
                                      {**AUTH, "Authorization": "Bearer nope-0123456789abcdef"})
    assert status == 401 and json.loads(body)["error"] == "unauthorized"
    status, _, body = webhook.request("POST", "/alerts", alerts_body(), AUTH)
    assert status == 202 and json.loads(body)["decisions"][0]["action"] == "queued_incremental"


def test_bodies_over_the_limit_are_413(webhook: WebhookProcess) -> None:
    # Just over: the app answers, in JSON.
    status, _, body = webhook.request("POST", "/alerts", b" " * (LIMIT + 1), AUTH)
    assert status == 413 and json.loads(body) == {
        "error": "payload_too_large", "message": f"the body exceeds the limit of {LIMIT} bytes"}
    # Far over (announced): waitress refuses without reading the body.
    conn = http.client.HTTPConnection("127.0.0.1", webhook.port, timeout=10)
    try:
        conn.putrequest("POST", "/alerts")
        for name, value in AUTH.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    # Chunked, no Content-Length: caught while reading.
    conn = http.client.HTTPConnection("127.0.0.1", webhook.port, timeout=10)
    try:
        chunks: Any = iter([b" " * 16384] * 8)
        conn.request("POST", "/alerts", body=chunks, headers=AUTH, encode_chunked=True)
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert webhook.request("GET", "/readyz")[0] == 200  # still serving


def test_errors_are_json_without_tracebacks(webhook: WebhookProcess) -> None:
    for method, path, body, headers, expected in [
        ("GET", "/nope", None, {}, 404),
        ("PUT", "/alerts", b"{}", AUTH, 405),
        ("POST", "/alerts", b"{", AUTH, 400),
        ("POST", "/alerts", b"[]", AUTH, 400),
        ("POST", "/alerts", b"{}", {**AUTH, "Content-Type": "text/plain"}, 415),
        ("GET", "/api/performance/retraining?limit=x", None, {}, 400),
    ]:
        status, headers_, data = webhook.request(method, path, body, headers)
        assert status == expected, (method, path)
        assert headers_["Content-Type"] == "application/json"
        assert "Traceback" not in data.decode() and "error" in json.loads(data)


def test_sigterm_stops_cleanly_and_the_ledger_survives(tmp_path: Path) -> None:
    process = WebhookProcess(tmp_path).start()
    assert process.request("POST", "/alerts", alerts_body(), AUTH)[0] == 202
    deadline = time.monotonic() + 10
    while json.loads(process.request("GET", "/api/performance/retraining")[2])["total"] < 1:
        assert time.monotonic() < deadline, "the retrain never ran"
        time.sleep(0.05)
    assert process.stop() == 0
    log = process.log.read_text()
    assert "INFO webhook: stopped" in log and TOKEN not in log

    process = WebhookProcess(tmp_path)
    process.port = free_port()
    process.env["AUTORETRAIN_WEBHOOK_PORT"] = str(process.port)
    process.start()
    try:
        status, _, body = process.request("POST", "/alerts", alerts_body(), AUTH)
        assert status == 202
        assert json.loads(body)["decisions"][0]["action"] == "duplicate_episode"
        page = json.loads(process.request("GET", "/api/performance/retraining")[2])
        assert page["total"] == 1
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "configuration error: no token configured"),
    ({"token": TOKEN, "cooldown_seconds": "-5"}, "cooldown_seconds (from "
     "AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS) must be a finite number >= 0, got -5.0"),
    ({"token": TOKEN, "colour": "blue"}, "unknown environment variable "
     "AUTORETRAIN_WEBHOOK_COLOUR"),
])
def test_refuses_to_start_with_bad_settings(tmp_path: Path, settings: dict[str, str],
                                            message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "webhook", "--check-config"], cwd=tmp_path,
                            env=_env(**settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and TOKEN not in result.stderr


def test_check_config_accepts_good_settings(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "webhook", "--check-config"], cwd=tmp_path,
                            env=_env(token=TOKEN), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "configuration OK" in result.stdout
