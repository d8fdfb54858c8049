"""``python -m autoretrain.webhook`` (console script ``autoretrain-webhook``): the webhook server.

One process, waitress worker threads: the model lives in this process, so
it is never served by several processes. Settings come from
``AUTORETRAIN_WEBHOOK_*`` environment variables (see :mod:`webhook.config`);
``--host``, ``--port`` and ``--log-level`` override them. SIGTERM or SIGINT
stops the server, lets a retrain in progress finish, stops the updater
(which saves the model) and closes the ledger.
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

    from .app import EXTENSION, create_app
    from .serving.model_topic import publisher_for
    from .updater import RealTimeModelUpdater

    # One registry for the webhook, the updater and the process metrics.
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    try:
        # serving: with Kafka, every saved version goes to the model topic.
        publisher = publisher_for(settings, registry)
        updater = RealTimeModelUpdater(**settings.updater_kwargs(), registry=registry,
                                       model_publisher=publisher)
        app = create_app(overrides, updater=updater, registry=registry)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 2
    service = app.extensions[EXTENSION]
    try:
        updater.start()
        server = waitress.create_server(
            app, host=settings.host, port=settings.port, threads=settings.threads,
            # The app answers 413 in JSON up to a little past the limit; beyond
            # that waitress refuses the body without buffering it.
            max_request_body_size=settings.max_body_bytes + 65536,
            ident=PROG, asyncore_use_poll=True)
    except OSError as exc:
        print(f"{PROG}: cannot listen on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)
        service.close()
        updater.stop()
        if publisher is not None:
            publisher.close()
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    log.info("serving on http://%s:%s (%d threads, auth %s)", settings.host,
             server.effective_port, settings.threads,
             "required" if settings.auth_required else "DISABLED")
    try:
        server.run()
    finally:
        # A second signal must not interrupt the shutdown below.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        log.info("stopping")
        server.close()
        service.close()
        updater.stop()
        if publisher is not None:
            publisher.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
