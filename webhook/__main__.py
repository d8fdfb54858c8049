"""``python -m autoretrain.webhook`` (console script ``autoretrain-webhook``): the webhook server.

One process, waitress worker threads: the model lives in this process, so
it is never served by several processes. Settings come from
``AUTORETRAIN_WEBHOOK_*`` environment variables (see :mod:`webhook.config`);
``--host``, ``--port`` and ``--log-level`` override them. SIGTERM or SIGINT
stops the server, lets a retrain in progress finish, stops the updater
(which saves the model) and closes the ledger.

Nothing touches the model store or the ledger before the port is bound and
the store lock is held (see :mod:`webhook.standby`): a second instance on the
same store serves as a standby (``/readyz`` 503 "standby") and takes over
when the active one exits; with ``AUTORETRAIN_WEBHOOK_STANDBY=exit`` it
exits with status 1 instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from .config import ENV_PREFIX, load_config

__all__ = ["build_parser", "main"]

log = logging.getLogger("webhook")

PROG = "autoretrain-webhook"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Serve the autoretrain webhook: the Alertmanager receiver, the retraining API, "
            "/metrics, /healthz and /readyz. Settings are environment variables "
            f"{ENV_PREFIX}<KEY> (TOKEN or TOKEN_FILE, LEDGER_PATH, COOLDOWN_SECONDS, "
            "MAX_BODY_BYTES, MODEL_STORAGE_PATH, KAFKA_SERVERS, ...); the options below "
            "override them."
        ),
    )
    p.add_argument("--host", help=f"listen address [{ENV_PREFIX}HOST] (default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"listen port [{ENV_PREFIX}PORT] (default 9109)")
    p.add_argument("--log-level", help=f"[{ENV_PREFIX}LOG_LEVEL] (default INFO)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the settings and exit (0 when valid)")
    return p


def _stop(signum: int, frame: Any) -> None:
    # Raised in the main thread inside waitress' loop, whose run() catches
    # SystemExit and shuts its worker threads down.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: value for key, value in (
        ("host", args.host), ("port", args.port), ("log_level", args.log_level))
        if value is not None}
    try:
        settings = load_config(overrides, os.environ)
    except ValueError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.check_config:
        print(f"{PROG}: configuration OK")
        return 0

    import waitress

    from autoretrain.exporter.http import ServerLimits

    from .app import EXTENSION, create_app
    from .standby import StoreLocked

    # One registry for the webhook, the updater and the process metrics.
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    try:
        # start=False: nothing is opened or started before the port is bound,
        # so an instance that cannot listen never touches the store or ledger.
        app = create_app(overrides, registry=registry, start=False)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 2
    service = app.extensions[EXTENSION]
    try:
        # Idle and half-sent connections are closed after the channel timeout
        # and bounded in number: with waitress' defaults (100, 120 s) 100 slow
        # connections made the webhook unreachable.
        limits = ServerLimits(threads=settings.threads,
                              connection_limit=settings.connection_limit,
                              channel_timeout_seconds=settings.channel_timeout_seconds)
        server = waitress.create_server(
            app, host=settings.host, port=settings.port,
            # The app answers 413 in JSON up to a little past the limit; beyond
            # that waitress refuses the body without buffering it.
            max_request_body_size=settings.max_body_bytes + 65536,
            ident=PROG, **limits.waitress_options())
    except OSError as exc:
        print(f"{PROG}: cannot listen on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)
        service.close()
        return 1
    try:
        # The store lock, then the ledger, the updater and the retrain worker;
        # or a standby that takes over when the active instance exits.
        service.start()
    except StoreLocked as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        server.close()
        service.close()
        return 1
    except (ValueError, OSError) as exc:
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        server.close()
        service.close()
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    log.info("serving on http://%s:%s (%d threads, auth %s, %s)", settings.host,
             server.effective_port, settings.threads,
             "required" if settings.auth_required else "DISABLED",
             "active" if service.active else "standby")
    try:
        server.run()
    finally:
        # A second signal must not interrupt the shutdown below.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        log.info("stopping")
        server.close()
        service.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
