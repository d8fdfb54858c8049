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
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .harness import table, write_results
from .http_load import Request, free_port, keepalive_load, wait_listening, wait_ready
from .load_alerts import alert_body

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


def payload(fingerprint: str, starts_at: str) -> bytes:
    return alert_body(fingerprint, "SystemAccuracyLow", "incremental", starts_at)


def load(port: int, duration: float, clients: int, seed: int) -> dict[str, Any]:
    """Post for ``duration`` seconds from ``clients`` keep-alive connections."""
    repeats = [payload(f"{i:016x}", "2026-01-01T00:00:00Z") for i in range(10)]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    counter = iter(range(10**9))

    def request(k: int, rng: random.Random) -> Request:
        if rng.random() < 0.1:
            body = payload(f"{0xF0000000 + next(counter):016x}", "2026-01-01T00:00:00Z")
        else:
            body = rng.choice(repeats)
        return "POST", "/alerts", body, headers

    return keepalive_load(port, duration, clients, request, expect=202, seed=seed)


def run(quick: bool = False) -> dict[str, Any]:
    duration, clients = (3.0, 4) if quick else (20.0, 8)
    results: dict[str, Any] = {"duration_s": duration, "clients": clients}
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
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
                    wait_ready(port, "/healthz", proc, timeout=30.0)
                else:
                    wait_listening(port, proc)
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
    print(f"\nwritten to {write_results('webhook_http', r, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
