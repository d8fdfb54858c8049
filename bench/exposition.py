"""``/metrics`` with many agents: ``AgentMetrics.render`` against ``generate_latest``.

``python -m bench.exposition [--quick]``

The same collector state is rendered both ways in the same run, repeats
interleaved; the output of ``render`` must parse with prometheus_client's
parser and equal the reference sample for sample (checked before timing).
Target: at most 0.1 x the time of ``generate_latest`` for 1,000 agents.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoretrain.exporter.http import metrics_app
from autoretrain.exporter.metrics import AgentMetrics

from .harness import fmt, interleaved, ratios, summary, table, write_results

TARGET = 0.1


def _samples(text: str) -> list[tuple[Any, ...]]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    )


def populate(agents: int, seed: int = 0) -> tuple[CollectorRegistry, AgentMetrics]:
    """Every exporter series for ``agents`` agents (two agent types each, accuracy too)."""
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, max_agents=agents)
    rng = random.Random(seed)
    statuses = ("success", "failure", "error", "timeout")
    for i in range(agents):
        name = f"agent-{i:04d}"
        for agent_type in ("llm", "data"):
            for _ in range(8):
                metrics.record_run(
                    name,
                    agent_type,
                    rng.choice(statuses),
                    rng.random() * 30,
                    rng.randrange(2000),
                    rng.random() / 10,
                )
        for source in ("ground_truth", "human"):
            metrics.record_accuracy(name, source, rng.random())
    return registry, metrics


def run(quick: bool = False) -> dict[str, Any]:
    agents, repeats = (200, 5) if quick else (1000, 11)
    registry, metrics = populate(agents)
    reference = generate_latest(registry).decode()
    rendered = metrics.render()
    same = _samples(reference) == _samples(rendered)
    if not same:
        raise AssertionError("render() and generate_latest() disagree")
    app = metrics_app(registry, fast=[metrics])

    def scrape(accept: str) -> bytes:
        environ = {"PATH_INFO": "/metrics", "QUERY_STRING": "", "HTTP_ACCEPT": accept}
        return b"".join(app(environ, lambda status, headers: None))

    samples = interleaved(
        {
            "generate_latest": lambda: generate_latest(registry),
            "render": metrics.render,
            # The whole /metrics handler (negotiation included), as Prometheus
            # scrapes it: text format, and OpenMetrics (what Prometheus asks for first).
            "wsgi_text": lambda: scrape("text/plain; version=0.0.4"),
            "wsgi_openmetrics": lambda: scrape("application/openmetrics-text; version=1.0.0"),
        },
        calls=1,
        repeats=repeats,
    )
    ratio = ratios(samples["render"], samples["generate_latest"])
    return {
        "agents": agents,
        "samples": len(_samples(reference)),
        "bytes": len(rendered),
        "repeats": repeats,
        "samples_equal": same,
        "generate_latest_ms": {k: v * 1e3 for k, v in summary(samples["generate_latest"]).items()},
        "render_ms": {k: v * 1e3 for k, v in summary(samples["render"]).items()},
        "wsgi_text_ms": {k: v * 1e3 for k, v in summary(samples["wsgi_text"]).items()},
        "wsgi_openmetrics_ms": {
            k: v * 1e3 for k, v in summary(samples["wsgi_openmetrics"]).items()
        },
        "ratio": ratio,
        "target": TARGET,
        "met": ratio["median"] <= TARGET,
    }


def report(r: dict[str, Any]) -> str:
    return table(
        ["measure", "median (min-max)"],
        [
            [
                f"generate_latest, {r['agents']} agents, {r['samples']} samples",
                fmt(r["generate_latest_ms"], unit=" ms"),
            ],
            ["AgentMetrics.render, same series", fmt(r["render_ms"], unit=" ms")],
            ["GET /metrics through metrics_app, text format", fmt(r["wsgi_text_ms"], unit=" ms")],
            [
                "GET /metrics through metrics_app, OpenMetrics",
                fmt(r["wsgi_openmetrics_ms"], unit=" ms"),
            ],
            [f"ratio render/generate_latest (target <= {TARGET})", fmt(r["ratio"])],
            ["samples equal to the reference", str(r["samples_equal"])],
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exposition", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print("## /metrics exposition\n")
    print(report(result))
    print(f"\nwritten to {write_results('exposition', result, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
