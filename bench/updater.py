"""Benchmarks of the model updater: ``python -m bench.updater [--quick]``.

Measures, each with a same-run baseline where one is meaningful:

* events/s through decode + validate + de-dup + vectorised update
  (``RealTimeModelUpdater.ingest`` on Kafka message bytes and on bus dicts),
  against ``json.loads`` alone (the ceiling of any JSON path) and a naive
  per-event Python loop update;
* incremental retrain on 1,000 buffered events and full retrain on 100,000
  (the candidate alone and the whole ``trigger_retraining``: snapshot,
  candidate, held-out scoring of both models, refit, promotion), against a
  per-event Python replay and the original design's stated 50-200 ms /
  0.5-5 s;
* ``predict_best_agent`` per call, cached and with exploration, against
  recomputing the posterior on every call.

Prints a markdown table (median, min, max over repeats) and writes
``bench/results/updater.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autoretrain.exporter.events import (
    EventIdFactory,
    decode_event,
    encode_event,
    run_event,
    validate_event,
)
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.retrain import full_retrain, incremental_retrain
from autoretrain.webhook.updater.strategies import UpdateStrategy
from autoretrain.webhook.updater.updater import RealTimeModelUpdater

from .harness import write_results


def make_events(n: int, seed: int = 0, agents: int = 10, tasks: int = 5) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    ids = EventIdFactory()
    agent = rng.integers(agents, size=n)
    task = rng.integers(tasks, size=n)
    ok = rng.random(n) < 0.3 + 0.06 * agent
    return [
        run_event(
            ids(),
            1_000.0 + i,
            f"agent-{agent[i]}",
            "llm",
            "success" if ok[i] else "failure",
            120.0,
            300,
            0.002,
            task_type=f"task-{task[i]}",
        )
        for i in range(n)
    ]


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(
    name: str, unit: str, values: list[float], target: str = "", baseline: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "repeats": len(values),
        "target": target,
        "baseline_of": baseline,
    }


def bench_throughput(n: int, repeats: int) -> list[dict[str, Any]]:
    events = make_events(n)
    raw = [encode_event(e) for e in events]
    chunk = 1_000
    rows = []

    def through_updater(values: list[Any]) -> Callable[[], None]:
        def run() -> None:
            with tempfile.TemporaryDirectory() as d:
                u = RealTimeModelUpdater(
                    model_storage_path=d,
                    batch_size=chunk,
                    buffer_size=10 * chunk,
                    enable_auto_save=False,
                )
                for i in range(0, n, chunk):
                    u.ingest(values[i : i + chunk])
                assert u.get_metrics()["events_applied"] == n

        return run

    def naive_loop() -> None:
        # The original design's shape: per event, validate, then update a
        # dict of per-(task, agent) counts in Python.
        stats: dict[tuple[str, str], list[float]] = {}
        for r in raw:
            e = decode_event(r)
            s = stats.setdefault((e["task_type"], e["agent_name"]), [1.0, 1.0])
            s[0 if e["status"] == "success" else 1] += 1.0

    def json_only() -> None:
        for r in raw:
            json.loads(r)

    def validate_only() -> None:
        for e in events:
            validate_event(e)

    for name, fn, target, base in [
        (
            "ingest Kafka bytes (decode+validate+dedup+update)",
            through_updater(raw),
            ">= 300,000/s",
            "",
        ),
        ("ingest bus dicts (validate+dedup+update)", through_updater(events), ">= 300,000/s", ""),
        (
            "baseline: decode+validate+per-event Python dict update",
            naive_loop,
            "",
            "ingest Kafka bytes",
        ),
        ("ceiling: json.loads alone", json_only, "", "ingest Kafka bytes"),
        ("ceiling: validate_event alone", validate_only, "", "ingest bus dicts"),
    ]:
        times = timed(fn, repeats)
        rows.append(summary(name, "events/s", [n / t for t in times], target, base))
    return rows


def naive_replay(events: list[dict[str, Any]]) -> None:
    stats: dict[tuple[str, str], list[float]] = {}
    for e in events:
        s = stats.setdefault((e["task_type"], e["agent_name"]), [1.0, 1.0])
        s[0 if e["status"] == "success" else 1] += 1.0


def bench_retrain(
    buffered: int, full: bool, repeats: int, strategy: UpdateStrategy = UpdateStrategy.EXPONENTIAL
) -> list[dict[str, Any]]:
    kind = "full" if full else "incremental"
    events = make_events(buffered + 2_000 + 200 * repeats, seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        u = RealTimeModelUpdater(
            model_storage_path=d,
            batch_size=1_000,
            buffer_size=buffered,
            enable_auto_save=False,
            update_strategy=strategy,
            promotion_tolerance=1e9,
        )  # promote: time the whole path
        start = buffered + 2_000
        for i in range(0, start, 1_000):
            u.ingest(events[i : i + 1_000])
        # The buffered events as the retrain sees them (the updater keeps them in its state).
        batch, weights = u._state.buffer.contents()
        model = u.model
        if full:
            core = timed(lambda: full_retrain(model, batch), repeats)
        else:
            core = timed(
                lambda: incremental_retrain(
                    model, batch, weights, discount=0.25, recency_weight=2.0
                ),
                repeats,
            )
        rows.append(
            summary(
                f"{kind} retrain candidate, {buffered:,} events ({strategy.value})",
                "ms",
                [t * 1e3 for t in core],
                "<= 2 ms" if not full else "<= 100 ms",
            )
        )
        whole, saves = [], []
        for r in range(repeats):
            # New events since the last promotion give the next retrain a holdout.
            u.ingest(events[start + 200 * r : start + 200 * (r + 1)])
            result = u.trigger_retraining(reason="bench", force_full_retrain=full)
            assert result["success"], result
            whole.append(result["duration_ms"])
            saves.append(result["save_ms"])
        rows.append(
            summary(
                f"trigger_retraining {kind}, {buffered:,} events (scoring+promotion)",
                "ms",
                whole,
                "<= 2 ms" if not full else "<= 100 ms",
            )
        )
        rows.append(summary(f"save of the promoted model ({strategy.value}, fsync'd)", "ms", saves))
    replay = timed(lambda: naive_replay(events[:buffered]), repeats)
    rows.append(
        summary(
            f"baseline: per-event Python replay of {buffered:,} events",
            "ms",
            [t * 1e3 for t in replay],
            "",
            f"{kind} retrain",
        )
    )
    return rows


def bench_predict(calls: int, repeats: int) -> list[dict[str, Any]]:
    model = AgentSelectionModel(UpdateStrategy.EXPONENTIAL, seed=0)
    model.update(EventBatch.from_events(make_events(20_000, agents=10, tasks=5)))
    with tempfile.TemporaryDirectory() as d:
        u = RealTimeModelUpdater(model_storage_path=d, enable_auto_save=False, seed=0)
        u.ingest(make_events(20_000, agents=10, tasks=5))

        def per_call(fn: Callable[[], Any]) -> list[float]:
            out = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                out.append((time.perf_counter() - start) / calls * 1e6)
            return out

        def uncached() -> None:
            model._invalidate()
            model.predict_best_agent("task-1")

        return [
            summary(
                "predict_best_agent, 10 agents (model, cached)",
                "us/call",
                per_call(lambda: model.predict_best_agent("task-1")),
                "<= 20 us",
            ),
            summary(
                "predict_best_agent via updater (lock + cached)",
                "us/call",
                per_call(lambda: u.predict_best_agent("task-1")),
                "<= 20 us",
            ),
            summary(
                "predict_best_agent explore=True (Thompson draw)",
                "us/call",
                per_call(lambda: model.predict_best_agent("task-1", explore=True)),
                "<= 20 us",
            ),
            summary(
                "baseline: recompute posterior every call",
                "us/call",
                per_call(uncached),
                "",
                "predict_best_agent cached",
            ),
        ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | unit | median | min | max | target |", "|---|---|---|---|---|---|"]
    for r in rows:
        fmt = "{:,.0f}" if r["unit"] == "events/s" else "{:,.3f}"
        lines.append(
            f"| {r['name']} | {r['unit']} | {fmt.format(r['median'])} | "
            f"{fmt.format(r['min'])} | {fmt.format(r['max'])} | {r['target']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/updater.json, or in "
                             "$AUTORETRAIN_BENCH_RESULTS; --quick: a temporary directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    repeats = 3 if args.quick else 7
    n = 20_000 if args.quick else 100_000
    rows = bench_throughput(n, repeats)
    rows += bench_retrain(1_000, full=False, repeats=repeats * 3)
    rows += bench_retrain(100_000 if not args.quick else 20_000, full=True, repeats=repeats)
    rows += bench_retrain(1_000, full=False, repeats=repeats * 3, strategy=UpdateStrategy.GRADIENT)
    rows += bench_predict(2_000 if args.quick else 20_000, repeats)
    print(table(rows))
    print(
        "\nOriginal design's stated figures: incremental retrain 50-200 ms, full retrain 0.5-5 s."
    )
    record = {
        "quick": args.quick,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "results": rows,
    }
    if args.output is None:
        print(f"\nwrote {write_results('updater', record, quick=args.quick)}")
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1))
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
