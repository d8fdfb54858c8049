"""The loop's latency with real servers: degradation -> alert firing -> webhook -> promoted.

``python -m bench.loop [--quick]``

Plays the stack demo (``examples/stack_demo.py``: Kafka, Prometheus,
Alertmanager, the exporter and the webhook as processes on 127.0.0.1, the
test intervals: 1 s scrape and evaluation, 15 s rate window, ``for`` 5 s,
Alertmanager group_wait 1 s) and reads when each step happened: the drift
(the demo's clock), the alert firing (first seen firing in Prometheus,
polled every 0.5 s), the webhook receiving it (the ledger's ``requested_at``)
and the model promoted (the ledger's ``finished_at``).

The production intervals are computed, not waited for, with the same model
that is checked here against the measured test figures: after an abrupt
drop of mean accuracy from ``a`` to ``b`` the windowed mean crosses the
threshold ``T`` after ``W (a - T) / (a - b)`` of a rate window ``W``; the
alert then fires after ``for`` plus up to one evaluation and one scrape
interval; Alertmanager posts after ``group_wait``; the retrain adds its
measured duration.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from .harness import table, write_results

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = {"scrape_s": 15, "eval_s": 15, "window_s": 300, "for_s": 120, "group_wait_s": 30}


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def predicted(intervals: dict[str, float], a: float, b: float, t: float, retrain_s: float) -> dict:
    """Seconds after the drift: (earliest, latest) for each step."""
    cross = intervals["window_s"] * (a - t) / (a - b)
    fire_lo = cross + intervals["for_s"]
    fire_hi = fire_lo + intervals["eval_s"] + intervals["scrape_s"]
    post_lo, post_hi = fire_lo, fire_hi + intervals["group_wait_s"]
    return {
        "threshold_crossed_s": round(cross, 1),
        "alert_firing_s": (round(fire_lo, 1), round(fire_hi, 1)),
        "webhook_received_s": (round(post_lo, 1), round(post_hi, 1)),
        "model_promoted_s": (round(post_lo + retrain_s, 1), round(post_hi + retrain_s, 1)),
    }


def run(quick: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from examples.stack_demo import Stack, StackSettings, play

    settings = StackSettings(duration_scale=0.5 if quick else 1.0)
    with tempfile.TemporaryDirectory(prefix="autoretrain-bench-loop-") as d:
        stack = Stack(Path(d), settings)
        try:
            stack.start(lambda line: None)
            summary = play(stack)
        finally:
            stack.stop()
    t0 = summary["t0_unix"]
    drift = summary["phases"]["degradation"]["start_s"]
    firing = next(a["t_s"] for a in summary["alerts"] if a.get("state") == "firing")
    retrain = next(r for r in summary["retrains"] if r["trigger"] == "alert")
    received = _unix(retrain["requested_at"]) - t0
    promoted = _unix(retrain["finished_at"]) - t0
    healthy = summary["phases"]["healthy"]["prometheus_accuracy_last"]
    degraded = summary["phases"]["degradation"]["prometheus_accuracy_min"]
    threshold = summary["accuracy_threshold"]
    test_intervals = {
        "scrape_s": 1,
        "eval_s": 1,
        "window_s": settings.rate_window_seconds,
        "for_s": settings.alert_for_seconds,
        "group_wait_s": 1,
    }
    retrain_s = (retrain.get("duration_ms") or 0) / 1000
    return {
        "measured_s_after_drift": {
            "alert_firing": round(firing - drift, 1),
            "webhook_received": round(received - drift, 1),
            "model_promoted": round(promoted - drift, 1),
        },
        "retrain": {
            k: retrain.get(k)
            for k in ("outcome", "retrain_type", "duration_ms", "events_processed")
        },
        "accuracy": {"healthy": healthy, "degraded_min": degraded, "threshold": threshold},
        "test_intervals": test_intervals,
        "predicted_test_s": predicted(test_intervals, healthy, degraded, threshold, retrain_s),
        "production_intervals": PRODUCTION,
        "predicted_production_s": predicted(PRODUCTION, healthy, degraded, threshold, retrain_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loop", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter healthy phase (CI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    r = run(args.quick)
    m, pt, pp = r["measured_s_after_drift"], r["predicted_test_s"], r["predicted_production_s"]

    def rng(x: tuple[float, float]) -> str:
        return f"{x[0]:.0f}-{x[1]:.0f}"

    print("## The loop with real Prometheus and Alertmanager (seconds after the drift)\n")
    print(
        table(
            [
                "step",
                "measured, test intervals",
                "predicted, test intervals",
                "computed, production",
            ],
            [
                [
                    "alert firing",
                    m["alert_firing"],
                    rng(pt["alert_firing_s"]),
                    rng(pp["alert_firing_s"]),
                ],
                [
                    "webhook received",
                    m["webhook_received"],
                    rng(pt["webhook_received_s"]),
                    rng(pp["webhook_received_s"]),
                ],
                [
                    "model promoted",
                    m["model_promoted"],
                    rng(pt["model_promoted_s"]),
                    rng(pp["model_promoted_s"]),
                ],
            ],
        )
    )
    print(f"\nretrain: {r['retrain']}; accuracy {r['accuracy']}")
    print(f"\nwritten to {write_results('loop', r, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
