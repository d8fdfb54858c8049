"""A small WSGI app for ``/metrics``, ``/healthz`` and ``/readyz``, and its server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["ReadyCheck", "metrics_app", "serve"]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str]]


def metrics_app(registry: CollectorRegistry, ready: ReadyCheck | None = None) -> Callable[..., Any]:
    """WSGI app: ``/metrics`` (Prometheus text), ``/healthz`` (alive), ``/readyz``.

    ``ready()`` returns ``(ok, reason)``; ``/readyz`` answers 503 with the
    reason when not ok. Any other path is 404.
    """
    prometheus = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return prometheus(environ, start_response)
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
