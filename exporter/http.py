"""A small WSGI app for ``/metrics``, ``/healthz`` and ``/readyz``, and its server.

``/metrics`` negotiates as prometheus_client's ``make_wsgi_app`` does (text
format or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``, ``name[]``
filtering) through the library's public exposition functions. Collectors
with a fast ``render()`` (:class:`~exporter.metrics.AgentMetrics`) are
passed explicitly: their text is rendered directly and the library encodes
the rest of the registries.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any, Protocol
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, gzip_accepted
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.registry import Collector

__all__ = [
    "FastCollector",
    "ReadyCheck",
    "exposition",
    "metrics_app",
    "render_metrics",
    "serve",
]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str]]


class FastCollector(Protocol):
    """A registered collector that formats its own exposition (``AgentMetrics``)."""

    def render(self, openmetrics: bool = False) -> str:
        """Its series as text format 0.0.4, or OpenMetrics without ``# EOF``."""
        ...

    def rendered_apart(self) -> AbstractContextManager[None]:
        """While active, its ``collect()`` yields nothing (in this thread)."""
        ...


class _Registries:
    """Several registries as one collector, for one encoder call (one ``# EOF``)."""

    def __init__(self, registries: Sequence[Collector]) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Any]:
        for registry in self._registries:
            yield from registry.collect()


def exposition(
    *registries: CollectorRegistry,
    fast: Sequence[FastCollector] = (),
    accept: str | None = None,
    names: Sequence[str] = (),
) -> tuple[bytes, str]:
    """The exposition of ``registries`` for an ``Accept`` header: ``(body, content type)``.

    ``fast`` collectors (registered in one of the registries) are rendered
    by their ``render()``, an order of magnitude faster than the library's
    encoders for many agents with the same samples; prometheus_client's
    encoder chosen by :func:`~prometheus_client.exposition.choose_encoder`
    encodes everything else. ``names`` restricts the output to those series
    (the library's ``name[]`` filter; the fast path is not taken then).
    """
    encoder, content_type = choose_encoder(accept or "")
    if names:
        restricted = [r.restricted_registry(names) for r in registries]
        return encoder(_Registries(restricted)), content_type
    openmetrics = content_type.split(";")[0] == OPENMETRICS_TYPE.split(";")[0]
    with ExitStack() as stack:
        for collector in fast:
            stack.enter_context(collector.rendered_apart())
        rest = encoder(_Registries(registries))
    parts = [collector.render(openmetrics).encode() for collector in fast]
    parts.append(rest)  # last: it carries OpenMetrics' closing "# EOF"
    return b"".join(parts), content_type


def render_metrics(*registries: CollectorRegistry, fast: Sequence[FastCollector] = ()) -> bytes:
    """The text format (0.0.4) exposition of ``registries``; see :func:`exposition`."""
    return exposition(*registries, fast=fast)[0]


def metrics_app(
    registry: CollectorRegistry | list[CollectorRegistry],
    ready: ReadyCheck | None = None,
    fast: Sequence[FastCollector] = (),
    disable_compression: bool = False,
) -> Callable[..., Any]:
    """WSGI app: ``/metrics`` (Prometheus exposition), ``/healthz`` (alive), ``/readyz``.

    ``/metrics`` serves the registries (several are served as one
    exposition) as :func:`exposition` does, gzip-compressed when the client
    accepts it. ``ready()`` returns ``(ok, reason)``; ``/readyz``
    answers 503 with the reason when not ok. Any other path is 404.
    """
    registries = registry if isinstance(registry, list) else [registry]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]", [])
            body, content_type = exposition(
                *registries, fast=fast, accept=environ.get("HTTP_ACCEPT"), names=names
            )
            headers = [("Content-Type", content_type)]
            if not disable_compression and gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
                # Level 6 (zlib's default), not gzip's 9: several times faster
                # on a large body for a few per cent more bytes.
                body = gzip.compress(body, compresslevel=6)
                headers.append(("Content-Encoding", "gzip"))
            headers.append(("Content-Length", str(len(body))))
            start_response("200 OK", headers)
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
