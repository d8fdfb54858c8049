"""``python -m autoretrain.webhook`` as a process for integration tests."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import free_port, stop_process

__all__ = ["FIGURES_DIR_ENV", "LIMIT", "RECORD_ENV", "REPO", "TOKEN", "WebhookProcess",
           "figures_file", "record_figures", "webhook_env"]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "server-token-0123456789abcdef"
LIMIT = 65536
#: Set to 1 (``make reliability``) to write figures into reliability/*.json,
#: the files RELIABILITY.md cites; otherwise they go to FIGURES_DIR_ENV.
RECORD_ENV = "AUTORETRAIN_RECORD_FIGURES"
#: Where figures go when not recorded (set by tests/conftest.py to a pytest tmp dir).
FIGURES_DIR_ENV = "AUTORETRAIN_FIGURES_DIR"


def figures_file(path: Path) -> Path:
    """``path`` (under reliability/) when figures are recorded, else the file of the
    same name in the test run's temporary directory: tests never rewrite tracked files."""
    if os.environ.get(RECORD_ENV) == "1":
        return path
    scratch = os.environ.get(FIGURES_DIR_ENV)
    if not scratch:
        raise RuntimeError(f"{FIGURES_DIR_ENV} is not set (tests/conftest.py sets it)")
    return Path(scratch) / path.name


def webhook_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORETRAIN_WEBHOOK_")}
    env.update({f"AUTORETRAIN_WEBHOOK_{k.upper()}": v for k, v in settings.items()})
    # The process imports the tree under test, whatever an editable install points to.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class WebhookProcess:
    """``python -m autoretrain.webhook`` in ``workdir`` with the token in a file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        token_file = workdir / "token"
        token_file.write_text(TOKEN + "\n")
        self.env = webhook_env(token_file=str(token_file), port=str(self.port),
                        ledger_path=str(workdir / "ledger.sqlite3"),
                        model_storage_path=str(workdir / "models"),
                        max_body_bytes=str(LIMIT), cooldown_seconds="0", threads="4",
                        api_retrain_min_interval_seconds="0")
        self.log = workdir / "webhook.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True) -> WebhookProcess:
        """Start; wait until ``/readyz`` is 200 (``ready``) or, for a standby,
        until ``/healthz`` is."""
        path = "/readyz" if ready else "/healthz"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "autoretrain.webhook"],
                                         cwd=self.workdir,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.request("GET", path)[0] == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"webhook did not become ready:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        assert self.proc is not None
        return stop_process(self.proc)

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




def record_figures(path: Path, key: str, figures: dict[str, Any], sub: str | None = None) -> None:
    """Merge ``figures`` (stamped ``measured_at``) under ``key`` (and ``sub``) into the
    JSON file ``path``; RELIABILITY.md cites these files. Written atomically, and only
    with ``AUTORETRAIN_RECORD_FIGURES=1`` (see :func:`figures_file`)."""
    path = figures_file(path)
    path.parent.mkdir(exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = {**figures, "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    if sub is None:
        data[key] = entry
    else:
        data.setdefault(key, {})[sub] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
