"""50,000 events/s into the standalone exporter for 30 s: it keeps up and its memory stays flat.

A real broker, ``python -m autoretrain.exporter`` as a process, and the project's own
bounded load script (``scripts/load-events``). Asserted: the exporter kept
up (every produced event applied soon after the load stops: no lag left)
and its resident memory did not grow once warm. The achieved rate, the
memory curve and the catch-up time are figures, written to
``reliability/exporter.json``; they are not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from servers import free_port
from servers.common import wait_until
from servers.webhook import figures_file

REPO = Path(__file__).resolve().parents[2]
RATE, DURATION = 50_000, 30.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def applied(base: str) -> float:
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "autoretrain_exporter_events_total" and s.labels == {"result": "applied"}:
                return s.value
    return 0.0


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_50k_events_per_second_into_the_standalone_exporter(kafka_server, kafka_topic, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "exporter.log").open("w")
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "--kafka-servers",
            kafka_server.bootstrap,
            "--topic",
            kafka_topic,
            "--group",
            f"load-{kafka_topic}",
            "--listen-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        assert wait_until(lambda: ready(base), 60, 0.2), (tmp_path / "exporter.log").read_text()
        load = subprocess.Popen(
            [
                str(REPO / "scripts" / "load-events"),
                "--bootstrap",
                kafka_server.bootstrap,
                "--topic",
                kafka_topic,
                "--rate",
                str(RATE),
                "--duration",
                str(DURATION),
                # One Python producer tops out below 50k events/s here.
                "--processes",
                "2",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHON": sys.executable},
        )
        curve = []
        started = time.monotonic()
        while load.poll() is None:
            curve.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "rss_mib": rss_mib(exporter.pid),
                    "applied": applied(base),
                }
            )
            time.sleep(1.0)
        out, _ = load.communicate(timeout=120)
        assert load.returncode == 0
        produced = json.loads(out.strip().splitlines()[-1])
        stopped = time.monotonic()
        caught_up = wait_until(lambda: applied(base) >= produced["produced"], 120, 0.5)
        catch_up_s = time.monotonic() - stopped
        final = applied(base)
        warm = [p["rss_mib"] for p in curve if p["t"] >= 10]
        growth = warm[-1] - warm[0] if len(warm) >= 2 else 0.0
        figures = {
            "command": "python -m pytest tests/integration/test_load_exporter.py",
            "target_rate": RATE,
            "duration_s": DURATION,
            "produced": produced["produced"],
            "achieved_produce_rate": round(produced["achieved_rate"]),
            "producer_processes": produced.get("processes", 1),
            "applied": final,
            "lag_at_end": produced["produced"] - final,
            "catch_up_after_load_s": round(catch_up_s, 1),
            "rss_growth_after_10s_mib": round(growth, 1),
            "rss_curve": curve,
        }
        out = figures_file(REPO / "reliability" / "exporter.json")
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
        assert caught_up and final == produced["produced"], figures
        # Bounded state (agent series, de-dup ids) means no growth once warm;
        # 20 MiB of slack covers allocator noise, not a leak of 1.5M events.
        assert growth < 20, figures
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
        log.close()
