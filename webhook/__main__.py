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
import sys
from collections.abc import Sequence

from .config import ENV_PREFIX, load_config
from .serve import configure_logging, listen, load_settings, process_registry, serve_until_signalled

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: value for key, value in (
        ("host", args.host), ("port", args.port), ("log_level", args.log_level))
        if value is not None}
    settings = load_settings(PROG, load_config, overrides)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    if args.check_config:
        print(f"{PROG}: configuration OK")
        return 0

    from .app import EXTENSION, create_app
    from .standby import StoreLocked

    # One registry for the webhook, the updater and the process metrics.
    registry = process_registry()
    try:
        # start=False: nothing is opened or started before the port is bound,
        # so an instance that cannot listen never touches the store or ledger.
        app = create_app(overrides, registry=registry, start=False)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 2
    service = app.extensions[EXTENSION]
    # The app answers 413 in JSON up to a little past the limit; beyond that
    # waitress refuses the body without buffering it.
    server = listen(PROG, app, settings, max_request_body_size=settings.max_body_bytes + 65536)
    if server is None:
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
    log.info("serving on http://%s:%s (%d threads, auth %s, %s)", settings.host,
             server.effective_port, settings.threads,
             "required" if settings.auth_required else "DISABLED",
             "active" if service.active else "standby")
    serve_until_signalled(server, service.close, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
