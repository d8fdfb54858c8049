"""A bounded load of outcome events into Kafka: ``scripts/load-events``.

``python -m bench.load_events --bootstrap HOST:PORT --topic T --rate 50000 --duration 30``

Open-loop: every 50 ms it hands the producer the events due by then (unique
ids, 50 agents, run events as the monitor makes them), whatever the
consumer does; it stops after ``--duration`` seconds, flushes, and prints
one JSON line: events produced, achieved rate, seconds behind schedule at
the end. Loopback only: it refuses a bootstrap address outside 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from typing import Any

from autoretrain.exporter.events import encode_event, run_event

TICK = 0.05


def _loopback(bootstrap: str) -> str:
    host = bootstrap.rsplit(":", 1)[0]
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{bootstrap!r} is not a loopback address")
    return bootstrap


def produce(bootstrap: str, topic: str, rate: float, duration: float) -> dict[str, Any]:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        batch_size=512 * 1024,
        acks=1,
        enable_idempotence=False,
    )
    prefix = os.urandom(4).hex()
    agents = [f"agent-{i:02d}".encode() for i in range(50)]
    statuses = ("success", "success", "success", "failure", "error")
    now = time.time()
    sent = 0
    start = time.monotonic()
    deadline = start + duration
    while True:
        tick_start = time.monotonic()
        if tick_start >= deadline:
            break
        due = int(rate * (tick_start - start + TICK))
        while sent < due:
            agent = agents[sent % 50]
            event = run_event(
                f"{prefix}-{sent}",
                now,
                agent.decode(),
                "llm",
                statuses[sent % 5],
                120.0,
                300,
                0.002,
                task_type=f"task-{sent % 4}",
            )
            producer.send(topic, key=agent, value=encode_event(event))
            sent += 1
        left = TICK - (time.monotonic() - tick_start)
        if left > 0:
            time.sleep(left)
    producer.flush(timeout=60)
    elapsed = time.monotonic() - start
    producer.close(timeout=10)
    return {
        "produced": sent,
        "target_rate": rate,
        "achieved_rate": sent / elapsed,
        "seconds": elapsed,
        "behind_schedule_s": max(0.0, elapsed - duration),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/load-events", description=__doc__)
    parser.add_argument("--bootstrap", type=_loopback, required=True, help="loopback host:port")
    parser.add_argument("--topic", default="agent-outcomes")
    parser.add_argument("--rate", type=float, default=50_000, help="events per second")
    parser.add_argument("--duration", type=float, default=30, help="seconds (at most 600)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="producer processes sharing the rate (one Python producer tops out below 50k/s)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 < args.rate <= 1_000_000:
        parser.error("duration must be in (0, 600] s and rate in (0, 1e6] events/s")
    if not 1 <= args.processes <= 16:
        parser.error("processes must be in [1, 16]")
    if args.processes == 1:
        result = produce(args.bootstrap, args.topic, args.rate, args.duration)
    else:
        from concurrent.futures import ProcessPoolExecutor

        share = args.rate / args.processes
        with ProcessPoolExecutor(args.processes) as pool:
            n = args.processes
            parts = list(
                pool.map(
                    produce,
                    [args.bootstrap] * n,
                    [args.topic] * n,
                    [share] * n,
                    [args.duration] * n,
                )
            )
        seconds = max(p["seconds"] for p in parts)
        produced = sum(p["produced"] for p in parts)
        result = {
            "produced": produced,
            "target_rate": args.rate,
            "achieved_rate": produced / seconds,
            "seconds": seconds,
            "behind_schedule_s": max(p["behind_schedule_s"] for p in parts),
            "processes": args.processes,
        }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
