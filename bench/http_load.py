"""Shared pieces of the HTTP benchmarks: a free port, waiting for a server, keep-alive load.

``bench.webhook_http`` (``POST /alerts``) and ``bench.serving`` (``GET
/api/model/ranking``) start a server process, wait until it answers, then
drive it from ``clients`` keep-alive connections for a fixed time, each
client sending what ``request(client, rng)`` says.
"""

from __future__ import annotations

import http.client
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# The servers' free_port lives with the test servers (tests/servers/common.py,
# which the stack demo reuses the same way): one port policy for every server
# this repository starts, not a copy here.
_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
from servers.common import free_port  # noqa: E402

__all__ = ["Request", "free_port", "keepalive_load", "wait_listening", "wait_ready"]

#: ``(method, path, body, headers)`` of one request.
Request = tuple[str, str, bytes | None, Mapping[str, str]]


def _exited(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"server exited with {proc.returncode}")


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes],
               timeout: float = 60.0) -> None:
    """Until ``GET path`` answers 200; RuntimeError when ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _exited(proc)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{path} not ready within {timeout} s")


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the port accepts connections (a server without a health path)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _exited(proc)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} within {timeout} s")


def keepalive_load(port: int, duration: float, clients: int,
                   request: Callable[[int, random.Random], Request], expect: int,
                   seed: int = 0) -> dict[str, Any]:
    """Send ``request(client, rng)`` for ``duration`` seconds from ``clients`` keep-alive
    connections; requests/s, latency percentiles, errors (not ``expect``, or the
    connection failed) and the count of each status."""
    rng = random.Random(seed)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client(k: int, client_rng: random.Random) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            method, path, body, headers = request(k, client_rng)
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=dict(headers))
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                errors[k] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            latencies[k].append(time.perf_counter() - start)
            if status != expect:
                errors[k] += 1
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k, random.Random(rng.random())))
               for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    flat = sorted(x for lat in latencies for x in lat)
    n = len(flat)
    return {
        "requests": n,
        "requests_per_s": n / elapsed,
        "p50_ms": 1000 * flat[n // 2] if n else None,
        "p99_ms": 1000 * flat[min(n - 1, int(n * 0.99))] if n else None,
        "mean_ms": 1000 * statistics.fmean(flat) if n else None,
        "errors": sum(errors),
        "statuses": statuses,
    }
