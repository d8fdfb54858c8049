"""Slow clients against the real servers (issue 13, item 11).

200 connections that send half a request and wait must not make the webhook
or the selector unreachable: with waitress' defaults (100 connections, 120 s
channel timeout) the 101st connection waited for a slot. Bounded count and
a generous deadline: the assertion is that health answers, not how fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port
from servers.common import stop_process
from servers.slow import get_status, half_open_connections
from servers.webhook import REPO, WebhookProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[WebhookProcess]:
    process = WebhookProcess(tmp_path).start()
    yield process
    process.stop()


def test_the_webhook_answers_health_while_200_slow_clients_are_connected(
    webhook: WebhookProcess,
) -> None:
    with half_open_connections(webhook.port, 200):
        assert get_status(webhook.port, "/healthz", timeout=30) == 200


@pytest.fixture
def selector(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORETRAIN_SELECTOR_")}
    env.update(AUTORETRAIN_SELECTOR_MODEL_STORAGE_PATH=str(tmp_path / "models"),
               AUTORETRAIN_SELECTOR_PORT=str(port))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    (tmp_path / "models").mkdir()
    log = tmp_path / "selector.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "autoretrain.selector"], env=env,
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get_status(port, "/healthz", timeout=2) == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"selector did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        stop_process(proc)


def test_the_selector_answers_health_while_200_slow_clients_are_connected(
    selector: int,
) -> None:
    with half_open_connections(selector, 200):
        assert get_status(selector, "/healthz", timeout=30) == 200
