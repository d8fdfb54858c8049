"""The ``/metrics`` bodies of every autoretrain process, built as their entry points build them.

:func:`expositions` returns, per process, the text a scrape gets: the
exporter library (``PerformanceMonitor.wsgi_app()``), the standalone
exporter (``python -m autoretrain.exporter``'s app), the webhook
(``python -m autoretrain.webhook``: its registry with the process
collectors, the updater, the model publisher and the ranking handler) and
the selector (``autoretrain-selector``: follower and ranking). Every
component has recorded something, so label-less families show their
samples. Nothing connects to Kafka: the publisher is built, not started.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from werkzeug.test import Client

from autoretrain.exporter import PerformanceMonitor
from autoretrain.exporter.http import metrics_app
from autoretrain.exporter.standalone import StandaloneExporter
from autoretrain.webhook.app import EXTENSION, create_app
from autoretrain.webhook.serving.selector import EXTENSION as SELECTOR_EXTENSION
from autoretrain.webhook.serving.selector import create_selector_app

__all__ = ["PROCESS_COLLECTOR_PREFIXES", "content_types", "expositions"]

#: Families of prometheus_client's ProcessCollector and PlatformCollector
#: (the webhook and the selector register them): the names every Python
#: exporter shares, kept unprefixed so the usual process dashboards work.
PROCESS_COLLECTOR_PREFIXES = ("process_", "python_info")

_TOKEN = "t" * 32


def _scrape(app: object, types: dict[str, str], process: str) -> str:
    response = Client(app).get("/metrics")  # type: ignore[arg-type]
    assert response.status_code == 200, response.status
    types[process] = response.headers.get("Content-Type", "")
    return response.get_data(as_text=True)


def content_types(tmp: Path) -> dict[str, str]:
    """The ``Content-Type`` each process's ``/metrics`` answers a plain GET with."""
    types: dict[str, str] = {}
    expositions(tmp, types)
    return types


def _process_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def expositions(tmp: Path, types: dict[str, str] | None = None) -> dict[str, str]:
    """``{"library" | "standalone" | "webhook" | "selector": /metrics text}``;
    their content types go to ``types`` when given."""
    out: dict[str, str] = {}
    types = {} if types is None else types

    monitor = PerformanceMonitor(enable_auto_retraining=False, registry=CollectorRegistry())
    try:
        monitor.record_agent_run(run_id="r", agent_name="a", agent_type="llm",
                                 status="success", duration_ms=120, tokens_used=3, cost=0.01)
        monitor.record_accuracy(agent_name="a", task_id="t", predicted_outcome={"x": 1.0},
                                actual_outcome={"x": 1.0})
        out["library"] = _scrape(monitor.wsgi_app(), types, "library")
    finally:
        monitor.close()

    standalone = StandaloneExporter("127.0.0.1:9", registry=CollectorRegistry())
    standalone.handle(b"{oops")
    out["standalone"] = _scrape(
        metrics_app(standalone.registry, standalone.ready, fast=[standalone.metrics]),
        types, "standalone")

    webhook = create_app(
        {"token": _TOKEN, "ledger_path": str(tmp / "ledger.sqlite3"),
         "model_storage_path": str(tmp / "models"), "kafka_servers": "127.0.0.1:9"},
        registry=_process_registry(), start=False)
    try:
        out["webhook"] = _scrape(webhook, types, "webhook")
    finally:
        webhook.extensions[EXTENSION].close()

    selector = create_selector_app({"model_storage_path": str(tmp / "models")},
                                   registry=_process_registry())
    try:
        out["selector"] = _scrape(selector, types, "selector")
    finally:
        selector.extensions[SELECTOR_EXTENSION].stop()
    return out
