"""``POST /alerts`` on the production server: throughput and latency.

``python -m bench.webhook_http [--quick]``

Starts ``python -m autoretrain.webhook`` (waitress, one process, 8 threads, a token,
SQLite ledger, embedded bus) and, as the same-run baseline, waitress serving
a WSGI app that only answers 202 with the same threads: the floor any Flask
app on this server pays. A bounded load of keep-alive clients on loopback
posts Alertmanager v4 payloads for a fixed time: 90 % repeats of 10
episodes (what Alertmanager's re-sends look like) and 10 % new episodes
(each one a ledger write). Reports requests/s, p50 and p99 latency, errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .harness import table, write_results

TOKEN = "bench-token-0123456789abcdef"
BASELINE = """
import sys, waitress
def app(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = b'{"status":"accepted"}'
    start_response("202 Accepted", [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))])
    return [body]
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=8, _quiet=True)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def payload(fingerprint: str, starts_at: str) -> bytes:
    labels = {
        "alertname": "SystemAccuracyLow",
        "model_type": "agent_selection",
        "severity": "warning",
        "retrain": "incremental",
    }
    return json.dumps(
        {
            "receiver": "autoretrain-webhook",
            "status": "firing",
            "version": "4",
            "groupKey": '{}/{retrain=~".+"}:{model_type="agent_selection"}',
            "truncatedAlerts": 0,
            "groupLabels": {"model_type": "agent_selection"},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": {"summary": "accuracy low", "description": "62% < 70%"},
                    "startsAt": starts_at,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://127.0.0.1:9090/graph",
                    "fingerprint": fingerprint,
                }
            ],
        }
    ).encode()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy within {timeout} s")


def load(port: int, duration: float, clients: int, seed: int) -> dict[str, Any]:
    """Post for ``duration`` seconds from ``clients`` keep-alive connections."""
    rng = random.Random(seed)
    repeats = [payload(f"{i:016x}", "2026-01-01T00:00:00Z") for i in range(10)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    counter = iter(range(10**9))

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        local_rng = random.Random(rng.random())
        while time.monotonic() < deadline:
            if local_rng.random() < 0.1:
                body = payload(f"{0xF0000000 + next(counter):016x}", "2026-01-01T00:00:00Z")
            else:
                body = local_rng.choice(repeats)
            start = time.perf_counter()
            try:
                conn.request("POST", "/alerts", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                errors[k] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            latencies[k].append(time.perf_counter() - start)
            if status != 202:
                errors[k] += 1
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    all_lat = sorted(x for lat in latencies for x in lat)
    n = len(all_lat)
    return {
        "requests": n,
        "requests_per_s": n / elapsed,
        "p50_ms": 1000 * all_lat[n // 2] if n else None,
        "p99_ms": 1000 * all_lat[min(n - 1, int(n * 0.99))] if n else None,
        "mean_ms": 1000 * statistics.fmean(all_lat) if n else None,
        "errors": sum(errors),
        "statuses": statuses,
    }


def run(quick: bool = False) -> dict[str, Any]:
    duration, clients = (3.0, 4) if quick else (20.0, 8)
    results: dict[str, Any] = {"duration_s": duration, "clients": clients}
    with tempfile.TemporaryDirectory() as d:
        port = _free_port()
        env = {
            **os.environ,
            "AUTORETRAIN_WEBHOOK_TOKEN": TOKEN,
            "AUTORETRAIN_WEBHOOK_LEDGER_PATH": str(Path(d) / "ledger.sqlite3"),
            "AUTORETRAIN_WEBHOOK_MODEL_STORAGE_PATH": str(Path(d) / "models"),
            "AUTORETRAIN_WEBHOOK_LOG_LEVEL": "WARNING",
        }
        for name, cmd in (
            ("webhook", [sys.executable, "-m", "autoretrain.webhook", "--port", str(port)]),
            ("baseline_waitress_202", [sys.executable, "-c", BASELINE, str(port)]),
        ):
            log = open(Path(d) / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                if name == "webhook":
                    _wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
                else:
                    _wait_port(port, proc)
                load(port, 1.0, clients, seed=0)  # warm-up
                results[name] = load(port, duration, clients, seed=1)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
                log.close()
    results["ratio_rps"] = (
        results["webhook"]["requests_per_s"] / results["baseline_waitress_202"]["requests_per_s"]
    )
    return results


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"baseline server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("baseline server did not listen")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_http", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s of load (CI)")
    args = parser.parse_args(argv)
    r = run(args.quick)
    rows = []
    for name in ("webhook", "baseline_waitress_202"):
        x = r[name]
        rows.append(
            [
                name,
                f"{x['requests_per_s']:,.0f}",
                f"{x['p50_ms']:.2f}",
                f"{x['p99_ms']:.2f}",
                x["errors"],
                x["requests"],
            ]
        )
    print(f"## POST /alerts, {r['clients']} keep-alive clients, {r['duration_s']:.0f} s\n")
    print(table(["server", "requests/s", "p50 ms", "p99 ms", "errors", "requests"], rows))
    print(f"\nwebhook / bare waitress requests/s: {r['ratio_rps']:.2f}")
    print(f"\nwritten to {write_results('webhook_http', r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
