"""Through a real Kafka broker: the updater's consume + apply rate against a raw consumer.

``python -m bench.kafka_e2e [--quick]``

Starts a single-node broker (the test suite's launcher, ``tests/servers``),
produces N outcome events to a 2-partition topic, then, per repeat and in
alternation, reads them all with:

* kafka-python's raw ``KafkaConsumer`` in a fresh group, no processing (the ceiling);
* ``RealTimeModelUpdater(kafka_servers=...)`` in a fresh group: consume,
  decode, validate, de-duplicate, apply in batches (batch_size 1,000), time
  from ``start()`` until every event is applied.

Both include the group join. Target: the updater at least 0.7 x the raw
consumer's events/s. The producer's rate is reported too.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autoretrain.exporter.events import encode_event

from .harness import fmt, ratios, summary, table, write_results
from .updater import make_events

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.7


def _raw(bootstrap: str, topic: str, group: str, n: int) -> float:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    start = time.perf_counter()
    seen = 0
    try:
        while seen < n:
            for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                seen += len(records)
        return n / (time.perf_counter() - start)
    finally:
        consumer.close()


def _updater(bootstrap: str, topic: str, group: str, n: int, models: str) -> float:
    from autoretrain.webhook.updater.updater import RealTimeModelUpdater

    updater = RealTimeModelUpdater(
        kafka_servers=bootstrap,
        kafka_topic=topic,
        consumer_group=group,
        batch_size=1_000,
        batch_timeout_seconds=0.2,
        model_storage_path=models,
        save_interval_seconds=3600,
    )
    start = time.perf_counter()
    updater.start()
    try:
        while updater.get_metrics()["events_applied"] < n:
            time.sleep(0.01)
        return n / (time.perf_counter() - start)
    finally:
        updater.stop()


def run(quick: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from kafka import KafkaProducer
    from servers import KafkaServer

    n, repeats = (50_000, 2) if quick else (300_000, 5)
    with tempfile.TemporaryDirectory(prefix="autoretrain-bench-kafka-") as d:
        broker = KafkaServer(Path(d) / "kafka").start()
        try:
            broker.create_topic("bench", partitions=2)
            values = [encode_event(e) for e in make_events(n, seed=4)]
            producer = KafkaProducer(
                bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=512 * 1024
            )
            start = time.perf_counter()
            for v in values:
                producer.send("bench", value=v)
            producer.flush()
            produce_rate = n / (time.perf_counter() - start)
            producer.close()
            raw, ours = [], []
            for r in range(repeats):
                raw.append(_raw(broker.bootstrap, "bench", f"raw-{r}", n))
                ours.append(
                    _updater(
                        broker.bootstrap, "bench", f"updater-{r}", n, str(Path(d) / f"models-{r}")
                    )
                )
        finally:
            broker.stop()
    ratio = ratios(ours, raw)
    return {
        "events": n,
        "repeats": repeats,
        "producer_events_per_s": produce_rate,
        "raw_consumer_events_per_s": summary(raw),
        "updater_events_per_s": summary(ours),
        "ratio": ratio,
        "target": TARGET,
        "met": ratio["median"] >= TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_e2e", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50,000 events, 2 repeats (CI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    r = run(args.quick)

    print(f"## Through a real Kafka broker, {r['events']:,} events\n")
    print(
        table(
            ["measure", "median (min-max)"],
            [
                [
                    "producer (kafka-python, linger 20 ms), events/s",
                    f"{r['producer_events_per_s']:,.0f}",
                ],
                [
                    "raw KafkaConsumer, no processing, events/s",
                    fmt(r["raw_consumer_events_per_s"], ",.0f"),
                ],
                [
                    "RealTimeModelUpdater consume + apply, events/s",
                    fmt(r["updater_events_per_s"], ",.0f"),
                ],
                [f"ratio updater/raw (target >= {TARGET})", fmt(r["ratio"], ".2f")],
            ],
        )
    )
    print(f"\nwritten to {write_results('kafka_e2e', r, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
