"""Cost of ``PerformanceMonitor.record_agent_run`` against naive prometheus_client use.

``python -m bench.recording [--quick]``

The baseline is what an orchestrator would write by hand: four metric
families and ``.labels(...)`` on every call (a counter for the status, a
histogram for the duration, counters for tokens and cost). Ours does more
per call (validation, the sliding window, an outcome event on the embedded
bus) and must still cost at most 0.4 x the baseline. Both run interleaved in
the same process; the figure that matters is the paired ratio.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from autoretrain.exporter import EmbeddedBus, PerformanceMonitor
from autoretrain.exporter.metrics import DURATION_BUCKETS_SECONDS

from .harness import fmt, interleaved, ratios, summary, table, write_results

TARGET = 0.4
AGENTS = [f"agent-{i}" for i in range(20)]
STATUSES = ("success", "success", "success", "failure", "error", "timeout")


class _Updater:
    """Stands in for the updater: only its bus matters here (drained between repeats)."""

    def __init__(self) -> None:
        self.event_bus = EmbeddedBus(maxsize=10_000_000)

    def trigger_retraining(self, **_: Any) -> dict[str, Any]:
        return {}


def run(quick: bool = False) -> dict[str, Any]:
    calls, repeats = (20_000, 5) if quick else (200_000, 11)
    registry = CollectorRegistry()
    runs = Counter(
        "autoretrain_agent_runs", "runs", ["agent", "agent_type", "status"], registry=registry
    )
    duration = Histogram(
        "autoretrain_agent_run_duration_seconds",
        "duration",
        ["agent", "agent_type"],
        registry=registry,
        buckets=DURATION_BUCKETS_SECONDS,
    )
    tokens = Counter("autoretrain_agent_tokens", "tokens", ["agent"], registry=registry)
    cost = Counter("autoretrain_agent_cost", "cost", ["agent"], registry=registry)
    naive_inputs = itertools.cycle([(a, s) for a in AGENTS for s in STATUSES])

    def naive() -> None:
        agent, status = next(naive_inputs)
        runs.labels(agent, "llm", status).inc()
        duration.labels(agent, "llm").observe(1.2)
        tokens.labels(agent).inc(350)
        cost.labels(agent).inc(0.004)

    updater = _Updater()
    monitor = PerformanceMonitor(model_updater=updater, registry=CollectorRegistry())
    our_inputs = itertools.cycle([(a, s) for a in AGENTS for s in STATUSES])

    def ours() -> None:
        agent, status = next(our_inputs)
        monitor.record_agent_run("run-1", agent, "llm", status, 1200.0, 350, 0.004, task_type="qa")
        if len(updater.event_bus) > 1_000_000:
            updater.event_bus.drain()

    samples = interleaved({"naive": naive, "ours": ours}, calls, repeats)
    ratio = ratios(samples["ours"], samples["naive"])
    result = {
        "calls_per_repeat": calls,
        "repeats": repeats,
        "naive_prometheus_client_us": {k: v * 1e6 for k, v in summary(samples["naive"]).items()},
        "record_agent_run_us": {k: v * 1e6 for k, v in summary(samples["ours"]).items()},
        "ratio": ratio,
        "target": TARGET,
        "met": ratio["median"] <= TARGET,
    }
    return result


def report(result: dict[str, Any]) -> str:
    return table(
        ["measure", "median (min-max)"],
        [
            [
                "naive prometheus_client, per call",
                fmt(result["naive_prometheus_client_us"], unit=" us"),
            ],
            [
                "record_agent_run (embedded bus), per call",
                fmt(result["record_agent_run_us"], unit=" us"),
            ],
            [f"ratio ours/naive (target <= {TARGET})", fmt(result["ratio"])],
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print("## Recording overhead\n")
    print(report(result))
    print(f"\nwritten to {write_results('recording', result, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
