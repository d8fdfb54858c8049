"""What the webhook's and the selector's ``main`` do around their app, written once.

Both load their layered settings (a bad one: the message on stderr and
status 2), configure logging once, serve the app with waitress under
:class:`~autoretrain.exporter.http.ServerLimits` (a port that cannot be
bound: the message and status 1), and stop on SIGTERM or SIGINT; a second
signal cannot interrupt the shutdown.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from autoretrain.exporter.http import ServerLimits

__all__ = ["configure_logging", "listen", "load_settings", "process_registry",
           "serve_until_signalled"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def load_settings(prog: str, load: Callable[[Mapping[str, Any], Mapping[str, str]], Any],
                  overrides: Mapping[str, Any]) -> Any | None:
    """``load(overrides, os.environ)``; None (the error printed for the operator) when invalid."""
    try:
        return load(overrides, os.environ)
    except ValueError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return None


def configure_logging(level: str) -> None:
    """The entry point's one logging configuration."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def process_registry() -> Any:
    """A registry with the process and platform collectors, for the whole process."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def listen(prog: str, app: Any, settings: Any, **options: Any) -> Any | None:
    """A waitress server bound to ``settings.host``/``port`` with the settings' limits
    (``threads``, ``connection_limit``, ``channel_timeout_seconds``); None (printed) when
    the port cannot be bound."""
    import waitress

    try:
        # Idle and half-sent connections are closed after the channel timeout
        # and bounded in number: with waitress' defaults (100, 120 s) 100 slow
        # connections made a server unreachable.
        limits = ServerLimits(threads=settings.threads,
                              connection_limit=settings.connection_limit,
                              channel_timeout_seconds=settings.channel_timeout_seconds)
        return waitress.create_server(app, host=settings.host, port=settings.port, ident=prog,
                                      **options, **limits.waitress_options())
    except OSError as exc:
        print(f"{prog}: cannot listen on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)
        return None


def _stop(signum: int, frame: Any) -> None:
    # Raised in the main thread inside waitress' loop, whose run() catches
    # SystemExit and shuts its worker threads down.
    raise SystemExit(0)


def serve_until_signalled(server: Any, close: Callable[[], None], log: logging.Logger) -> None:
    """Serve until SIGTERM or SIGINT, then close the server and call ``close``."""
    for sig in _SIGNALS:
        signal.signal(sig, _stop)
    started = time.monotonic()
    try:
        server.run()
    finally:
        # A second signal must not interrupt the shutdown below.
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        log.info("stopping")
        server.close()
        close()
        log.info("stopped after %.0f s", time.monotonic() - started)
