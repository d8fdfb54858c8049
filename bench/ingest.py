"""Ingest throughput against River: events/s, decode + validate + learn.

``python -m bench.ingest [--quick]``

The same Kafka message values (JSON outcome events) go through:

* ours: ``RealTimeModelUpdater.ingest`` (orjson decode, validation, de-dup,
  one vectorised update per batch of 1,000);
* River: the stdlib-free path a River user would write: ``orjson.loads``,
  a one-hot encoding of task type and agent (``river.preprocessing.OneHotEncoder``)
  and ``river.linear_model.LogisticRegression.learn_one`` per event.

Target: at least 3 x River's events/s. Both run in this process, interleaved.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import orjson

from autoretrain.exporter.events import encode_event
from autoretrain.webhook.updater.updater import RealTimeModelUpdater

from .harness import fmt, ratios, summary, table, write_results
from .updater import make_events

TARGET = 3.0


def run(quick: bool = False) -> dict[str, Any]:
    from river import compose, linear_model, preprocessing

    n, repeats = (20_000, 3) if quick else (100_000, 7)
    ours_rates, river_rates = [], []
    for r in range(repeats):
        events = make_events(n, seed=r)
        values = [encode_event(e) for e in events]
        with tempfile.TemporaryDirectory() as d:
            updater = RealTimeModelUpdater(
                model_storage_path=d, batch_size=1_000, enable_auto_save=False, seed=0
            )
            start = time.perf_counter()
            for i in range(0, n, 1_000):
                updater.ingest(values[i : i + 1_000])
            ours_rates.append(n / (time.perf_counter() - start))
        model = compose.Select("task_type", "agent_name") | preprocessing.OneHotEncoder()
        model |= linear_model.LogisticRegression()
        start = time.perf_counter()
        for raw in values:
            event = orjson.loads(raw)
            x = {"task_type": event["task_type"], "agent_name": event["agent_name"]}
            model.learn_one(x, event["status"] == "success")
        river_rates.append(n / (time.perf_counter() - start))
    ratio = ratios(ours_rates, river_rates)
    return {
        "events_per_repeat": n,
        "repeats": repeats,
        "ours_events_per_s": summary(ours_rates),
        "river_events_per_s": summary(river_rates),
        "ratio": ratio,
        "target": TARGET,
        "met": ratio["median"] >= TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = parser.parse_args(argv)
    r = run(args.quick)

    print("## Ingest throughput against River\n")
    print(
        table(
            ["measure", "median (min-max)"],
            [
                [
                    "ours: ingest of Kafka message bytes, events/s",
                    fmt(r["ours_events_per_s"], ",.0f"),
                ],
                [
                    "River: decode + one-hot + LogisticRegression.learn_one, events/s",
                    fmt(r["river_events_per_s"], ",.0f"),
                ],
                [f"ratio ours/River (target >= {TARGET})", fmt(r["ratio"], ".2f")],
            ],
        )
    )
    print(f"\nwritten to {write_results('ingest', r, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
