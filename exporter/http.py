"""A small WSGI app for ``/metrics``, ``/healthz`` and ``/readyz``, and its server.

``/metrics`` negotiates as prometheus_client's ``make_wsgi_app`` does (text
format or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``, ``name[]``
filtering) through the library's public exposition functions. Collectors
with a fast ``render()`` (:class:`~exporter.metrics.AgentMetrics`) are
passed explicitly: their text is rendered directly and the library encodes
the rest of the registries.

The server (:func:`serve`, also what ``PerformanceMonitor.serve_metrics``
starts inside an orchestrator) is waitress in a background thread, with the
bounds of :class:`ServerLimits`: an idle or half-sent request holds a
socket, not a thread, and is closed after ``channel_timeout_seconds``; at
most ``connection_limit`` connections are open. wsgiref's threading server
it replaces spent one thread per connection without a timeout (200 idle
half-requests held 201 threads). The webhook and the selector pass the same
limits to their own waitress servers (:meth:`ServerLimits.waitress_options`).
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.registry import Collector

__all__ = [
    "DEFAULT_ADDRESS",
    "BackgroundServer",
    "FastCollector",
    "ReadyCheck",
    "ServerLimits",
    "exposition",
    "metrics_app",
    "render_metrics",
    "serve",
    "without_created",
]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str]]
# Loopback unless told otherwise: /metrics, /healthz and /readyz are
# unauthenticated; a container passes 0.0.0.0 explicitly (docker-compose.yml).
DEFAULT_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class ServerLimits:
    """Connection bounds of a waitress server.

    ``channel_timeout_seconds``: a connection with no complete request and no
    activity for this long is closed (waitress checks every few seconds), so
    slow or idle clients cannot pile up. ``connection_limit``: beyond it new
    connections wait in the listen backlog; idle ones cost a socket each,
    not a thread, so the limit can be well above what a probe of a few
    hundred slow connections reaches. ``threads``: requests served at once.
    """

    threads: int = 4
    connection_limit: int = 500
    channel_timeout_seconds: int = 15

    def __post_init__(self) -> None:
        for name in ("threads", "connection_limit", "channel_timeout_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    def waitress_options(self) -> dict[str, Any]:
        """Keyword arguments for ``waitress.create_server``."""
        return {
            "threads": self.threads,
            "connection_limit": self.connection_limit,
            "channel_timeout": self.channel_timeout_seconds,
            # How often idle channels are looked for; at most the timeout.
            "cleanup_interval": max(1, min(5, self.channel_timeout_seconds)),
            # poll(), not select(): select() fails beyond 1024 descriptors.
            "asyncore_use_poll": True,
        }


class FastCollector(Protocol):
    """A registered collector that formats its own exposition (``AgentMetrics``)."""

    def render(self, openmetrics: bool = False) -> str:
        """Its series as text format 0.0.4, or OpenMetrics without ``# EOF``."""
        ...

    def rendered_apart(self) -> AbstractContextManager[None]:
        """While active, its ``collect()`` yields nothing (in this thread)."""
        ...


def without_created(metric: Metric) -> Metric:
    """``metric`` without its ``<name>_created`` samples.

    prometheus_client writes a ``_created`` series beside every counter and
    histogram; Prometheus stores it as a gauge per series, doubling the
    series count for nothing the dashboards or rules read. The library's
    switch, ``disable_created_metrics()``, is process-global: inside an
    orchestrator it would also strip the orchestrator's own metrics. So the
    ``/metrics`` handlers of autoretrain drop them from what they serve, and
    nothing else in the process changes.
    """
    created = metric.name + "_created"
    if not any(s.name == created for s in metric.samples):
        return metric
    copy = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    copy.samples = [s for s in metric.samples if s.name != created]
    return copy


class _Registries:
    """Several registries as one collector, for one encoder call (one ``# EOF``),
    without ``_created`` series (:func:`without_created`)."""

    def __init__(self, registries: Sequence[Collector]) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Any]:
        for registry in self._registries:
            for metric in registry.collect():
                yield without_created(metric)


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
    """The text format (0.0.4) exposition of ``registries``, without ``_created``
    series; see :func:`exposition`."""
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


class BackgroundServer:
    """A waitress server running in a daemon thread.

    ``server_port`` is the bound port (useful with port 0); ``shutdown()``
    closes every connection and stops the thread; ``server_close()`` is
    kept for callers written against ``socketserver`` (a no-op after
    ``shutdown``).
    """

    def __init__(self, app: Callable[..., Any], addr: str, port: int,
                 limits: ServerLimits) -> None:
        import waitress  # the server only: importing the exporter stays light

        # Our own socket map, so shutdown() closes exactly this server's channels.
        self._map: dict[int, Any] = {}
        self._server: Any = waitress.create_server(
            app, host=addr, port=port, map=self._map, ident="autoretrain-exporter",
            **limits.waitress_options())
        self.server_port: int = int(self._server.effective_port)
        self.server_address = (str(self._server.effective_host), self.server_port)
        self.limits = limits
        self._thread = threading.Thread(
            target=self._server.run, name="autoretrain-http", daemon=True)
        self._closed = False

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection; stop the thread."""
        if self._closed:
            return
        self._closed = True
        from waitress import wasyncore

        # The worker threads first: a task finishing after the trigger below
        # is closed would write its wake-up byte to the closed descriptor,
        # which by then may be another server's socket in this process (seen
        # as EBADF, or as a stray "x" before another server's response).
        self._server.task_dispatcher.shutdown(timeout=timeout)
        # Closed from inside the loop thread: closing sockets from here would
        # pull them out from under its poll().
        try:
            self._server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        except OSError:
            # The wake-up pipe is gone (seen with many servers started and
            # stopped at once in one process): close from here; the loop
            # finds its map empty within its poll timeout and returns.
            wasyncore.close_all(self._map)
        self._thread.join(timeout)

    def server_close(self) -> None:
        self.shutdown()


def serve(
    app: Callable[..., Any],
    addr: str = DEFAULT_ADDRESS,
    port: int = 0,
    limits: ServerLimits | None = None,
) -> tuple[BackgroundServer, threading.Thread]:
    """Serve ``app`` on ``addr:port`` in a daemon thread; returns (server, thread).

    ``port=0`` picks a free port (read ``server.server_port``);
    ``server.shutdown()`` stops it.
    """
    server = BackgroundServer(app, addr, port, limits or ServerLimits())
    server.start()
    return server, server.thread
