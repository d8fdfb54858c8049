"""A small WSGI app for ``/metrics``, ``/healthz`` and ``/readyz``, and its server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

__all__ = ["ReadyCheck", "metrics_app", "render_metrics", "serve"]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str]]


class _Collectors:
    def __init__(self, collectors: list[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Any]:
        for collector in self._collectors:
            yield from collector.collect()


def _split(registry: CollectorRegistry) -> tuple[list[Any], list[Collector]] | None:
    # prometheus_client keeps its collectors in a private dict, read the same
    # way under the same lock by CollectorRegistry.collect(); a registry
    # without it (or with target info) takes the generic path.
    lock = getattr(registry, "_lock", None)
    names = getattr(registry, "_collector_to_names", None)
    if lock is None or names is None or getattr(registry, "_target_info", None):
        return None
    with lock:
        collectors = list(names)
    fast = [c for c in collectors if callable(getattr(c, "render", None))]
    return fast, [c for c in collectors if c not in fast]


def render_metrics(*registries: CollectorRegistry) -> bytes:
    """Text exposition of the registries; collectors with ``render()`` format themselves.

    ``AgentMetrics.render`` is an order of magnitude faster than
    ``generate_latest`` for many agents and yields the same samples.
    """
    out: list[bytes] = []
    for registry in registries:
        split = _split(registry)
        if split is None:
            out.append(generate_latest(registry))
            continue
        fast, rest = split
        out.extend(c.render().encode() for c in fast)
        out.append(generate_latest(_Collectors(rest)))
    return b"".join(out)


def metrics_app(
    registry: CollectorRegistry | list[CollectorRegistry], ready: ReadyCheck | None = None
) -> Callable[..., Any]:
    """WSGI app: ``/metrics`` (Prometheus text), ``/healthz`` (alive), ``/readyz``.

    ``ready()`` returns ``(ok, reason)``; ``/readyz`` answers 503 with the
    reason when not ok. Any other path is 404. Several registries are
    served as one exposition.
    """
    registries = registry if isinstance(registry, list) else [registry]
    generic = make_wsgi_app(registries[0]) if len(registries) == 1 else None

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            if generic is not None and "name[]" in environ.get("QUERY_STRING", ""):
                return generic(environ, start_response)  # series filtering: the library's path
            body = render_metrics(*registries)
            start_response(
                "200 OK",
                [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))],
            )
            return [body]
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/readyz":
            ok, reason = ready() if ready is not None else (True, "ready")
            status = "200 OK" if ok else "503 Service Unavailable"
            return _json(start_response, status, {"ready": ok, "reason": reason})
        return _json(start_response, "404 Not Found", {"error": f"no such path {path[:100]!r}"})

    return app


def _json(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every second: debug only
        log.debug("%s - %s", self.address_string(), format % args)


def serve(app: Callable[..., Any], addr: str, port: int) -> tuple[Any, threading.Thread]:
    """Serve ``app`` on ``addr:port`` in a daemon thread; returns (server, thread).

    ``port=0`` picks a free port (read ``server.server_port``).
    """
    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="autoretrain-http", daemon=True)
    thread.start()
    return server, thread
