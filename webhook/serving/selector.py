"""The selector: a read-only ranking server built on a :class:`ModelFollower`.

``python -m autoretrain.selector`` (console script ``autoretrain-selector``)
serves ``GET /api/model/ranking`` (see :mod:`.ranking`), ``/metrics``,
``/healthz``, ``/readyz`` (503 until a model is loaded) and its OpenAPI
document. It never trains and holds no state but the followed model, so
any number of replicas can run behind a load balancer; each follows the
model topic (``AUTORETRAIN_SELECTOR_KAFKA_SERVERS``) or the trainer's store
directory on a shared volume (``AUTORETRAIN_SELECTOR_MODEL_STORAGE_PATH``).

Settings, lowest layer first: the defaults of :class:`SelectorConfig`,
environment variables ``AUTORETRAIN_SELECTOR_<KEY>``, then the mapping
given to :func:`create_selector_app` (or the command line). The optional
read token (``READ_TOKEN`` or ``READ_TOKEN_FILE``) protects the ranking;
``/metrics``, ``/healthz`` and ``/readyz`` stay open, as the webhook's are.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import TYPE_CHECKING, Any

from autoretrain.exporter.http import ServerLimits
from autoretrain.exporter.kafka_security import (
    SECRET_KEYS,
    SETTING_KEYS,
)

from ..layering import LOG_LEVELS, KafkaSecurityFields, choice, layer, resolve_token

if TYPE_CHECKING:
    from ..updater.objective import Objective

__all__ = ["ENV_PREFIX", "SelectorConfig", "create_selector_app", "load_selector_config",
           "main"]

log = logging.getLogger(__name__)

ENV_PREFIX = "AUTORETRAIN_SELECTOR_"
PROG = "autoretrain-selector"
EXTENSION = "autoretrain-selector"
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class SelectorConfig(KafkaSecurityFields):
    """Validated settings of the selector.

    Attributes
    ----------
    kafka_servers, model_topic
        Follow the model topic (exactly one of this and ``model_storage_path``).
    model_storage_path
        Follow the trainer's model store directory instead.
    poll_interval_seconds
        How often the store is listed; the longest a Kafka poll waits.
    read_token, read_token_file
        Optional Bearer token for the ranking (inline or from a file; at most one).
    host, port, threads
        Listen address and waitress worker threads.
    connection_limit, channel_timeout_seconds
        Open connections served at once, and the seconds after which an idle
        or half-sent connection is closed (slow clients cannot block it).
    log_level
        Logging level.
    kafka_security_protocol, kafka_sasl_mechanism, kafka_sasl_username,
    kafka_sasl_password_file, kafka_ssl_cafile, kafka_ssl_check_hostname,
    kafka_ssl_certfile, kafka_ssl_keyfile, kafka_ssl_password_file,
    kafka_sasl_password, kafka_ssl_password
        How the follower's consumer connects to Kafka: the fields of
        :class:`~autoretrain.exporter.kafka_security.KafkaSecurity` (text; a
        client certificate for mutual TLS; the secrets from a file or from the
        environment, never echoed). Default PLAINTEXT.
    objective, cost_weight, latency_weight, quality_tolerance
        The selection objective (see
        :class:`~autoretrain.webhook.updater.objective.Objective`; the same
        names as the webhook's settings). Unset (the default): rank by the
        trainer's objective, recorded in each model version.
    """

    kafka_servers: str | None = None
    model_topic: str = "agent-models"
    model_storage_path: str | None = None
    poll_interval_seconds: float = 0.5
    read_token: str | None = field(default=None, repr=False)
    read_token_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 9110
    threads: int = 8
    connection_limit: int = ServerLimits.connection_limit
    channel_timeout_seconds: int = ServerLimits.channel_timeout_seconds
    log_level: str = "INFO"
    objective: str | None = None
    cost_weight: float | None = None
    latency_weight: float | None = None
    quality_tolerance: float | None = None
    # Kafka connection security: the fields of KafkaSecurityFields.

    def selection_objective(self) -> Objective | None:
        """The objective set here; None: the trainer's (ValueError when invalid)."""
        from ..updater.objective import Objective  # the model's package: only when used

        weights = {k: getattr(self, k) for k in _OBJECTIVE_NUMBERS if getattr(self, k) is not None}
        if self.objective is None:
            if weights:
                raise ValueError(f"{', '.join(weights)} need objective to be set")
            return None
        return Objective(self.objective, **weights)


_KEYS = (*(f.name for f in fields(SelectorConfig) if f.name not in SETTING_KEYS), *SETTING_KEYS)
_OBJECTIVE_NUMBERS = ("cost_weight", "latency_weight", "quality_tolerance")
_OPTIONAL = ("kafka_servers", "model_storage_path", "read_token", "read_token_file",
             "objective", *SETTING_KEYS)
_INTS = {"port": (0, 65535), "threads": (1, 1000), "connection_limit": (1, 100_000),
         "channel_timeout_seconds": (1, 86_400)}


def _check(key: str, value: Any, where: str) -> Any:
    shown = "a value" if key in ("read_token", *SECRET_KEYS) else repr(value)
    if key in _INTS:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"{key} (from {where}) must be an integer, got {shown}") from None
        low, high = _INTS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{key} (from {where}) must be an integer in [{low}, {high}], "
                             f"got {shown}")
        return value
    if key in _OBJECTIVE_NUMBERS:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"{key} (from {where}) must be a number, got {shown}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 <= value < math.inf):
            raise ValueError(f"{key} (from {where}) must be a finite number >= 0, got {shown}")
        return float(value)
    if key == "poll_interval_seconds":
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"{key} (from {where}) must be a number, got {shown}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 < value < math.inf):
            raise ValueError(f"{key} (from {where}) must be a number > 0, got {shown}")
        return float(value)
    if key in _OPTIONAL and (value is None or (isinstance(value, str) and not value.strip())):
        return None  # empty means unset, so a deployment can blank a variable out
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} (from {where}) must be a non-empty string, got {shown}")
    if key == "log_level":
        return choice(key, value.upper(), where, LOG_LEVELS)
    return value


def load_selector_config(overrides: Mapping[str, Any] | None = None,
                         environ: Mapping[str, str] | None = None) -> SelectorConfig:
    """Layer defaults < ``environ`` (``AUTORETRAIN_SELECTOR_*``) < ``overrides``; validate.
    Unknown keys are errors; the token file is read here."""
    config = SelectorConfig(**layer(_KEYS, ENV_PREFIX, environ, overrides, _check))
    if (config.kafka_servers is None) == (config.model_storage_path is None):
        raise ValueError(f"set exactly one of {ENV_PREFIX}KAFKA_SERVERS (follow the model topic) "
                         f"and {ENV_PREFIX}MODEL_STORAGE_PATH (follow a store directory)")
    try:
        config.kafka_security()
    except ValueError as exc:
        raise ValueError(f"Kafka security ({ENV_PREFIX}KAFKA_*): {exc}") from None
    config.selection_objective()  # checked once, here
    return resolve_token(config, "read_token")


def _openapi_text() -> str:
    return resources.files(__package__ or "autoretrain.webhook.serving").joinpath(
        "openapi-selector.yaml").read_text(encoding="utf-8")


def create_selector_app(config: Mapping[str, Any] | None = None, *, follower: Any = None,
                        registry: Any = None) -> Any:
    """The selector's Flask app.

    ``follower`` is any object with ``predict_best_agent``, ``version``,
    ``model`` (and, for the readiness check, ``status()``); its lifecycle
    stays with the caller. Without one a :class:`ModelFollower` is built from
    the config and started (stop it with ``app.extensions[EXTENSION].stop()``).
    """
    import yaml
    from flask import Flask, Response, jsonify
    from prometheus_client import CollectorRegistry
    from werkzeug.exceptions import HTTPException, MethodNotAllowed

    from autoretrain.exporter.build_info import register_build_info
    from autoretrain.exporter.http import render_metrics

    from ..pathguard import RejectAmbiguousPaths
    from .follower import ModelFollower
    from .ranking import RankingFastPath, RankingHandler, ranking_blueprint

    settings = load_selector_config(config, os.environ)
    registry = CollectorRegistry() if registry is None else registry
    owns = follower is None
    if follower is None:
        follower = ModelFollower(settings.model_storage_path,
                                 kafka_servers=settings.kafka_servers,
                                 topic=settings.model_topic,
                                 poll_interval_seconds=settings.poll_interval_seconds,
                                 registry=registry,
                                 consumer_config=settings.kafka_security().client_config(),
                                 objective=settings.selection_objective())
    app = Flask(__name__, static_folder=None)
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = follower
    handler = RankingHandler(lambda: follower, read_token=settings.read_token,
                             registry=registry)
    app.register_blueprint(ranking_blueprint(handler))
    # The hot path without the framework; the blueprint answers HEAD and documents the route.
    app.wsgi_app = RankingFastPath(app.wsgi_app, handler)  # type: ignore[method-assign]
    # Outermost, also before the fast path: //path must not reach /path's route.
    app.wsgi_app = RejectAmbiguousPaths(app.wsgi_app)  # type: ignore[method-assign]
    follower_registry = getattr(follower, "registry", None)
    register_build_info(registry)

    @app.get("/metrics")
    def metrics() -> Response:
        registries = [registry]
        if isinstance(follower_registry, CollectorRegistry) and follower_registry is not registry:
            registries.append(follower_registry)
        return Response(render_metrics(*registries), headers={"Content-Type": _PROMETHEUS_TEXT})

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "alive"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        version = follower.version
        status = follower.status() if callable(getattr(follower, "status", None)) else None
        checks = {"model": f"loaded (version {version})" if version else "none yet",
                  "source": "ok" if status is None else f"failing: {status}"}
        if not version:
            reason = "no model has been loaded yet" + (f" ({status})" if status else "")
            return jsonify({"ready": False, "reason": reason, "checks": checks}), 503
        # A source that fails after a load does not make the replica unready:
        # it keeps serving its last good model; the check says so.
        return jsonify({"ready": True, "reason": "ready", "checks": checks}), 200

    @app.get("/openapi.yaml")
    def openapi_yaml() -> Response:
        return Response(_openapi_text(), mimetype="application/yaml")

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(yaml.safe_load(_openapi_text()))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        error = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        response = jsonify({"error": error, "message": exc.description or exc.name})
        response.status_code = status
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        response = jsonify({"error": "internal_error", "message": "internal server error"})
        response.status_code = 500
        return response

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    if owns:
        follower.start()
    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=("Serve GET /api/model/ranking from the trainer's newest model, followed "
                     "from the model topic or the model store; read-only, scale it out. "
                     f"Settings are environment variables {ENV_PREFIX}<KEY> (KAFKA_SERVERS or "
                     "MODEL_STORAGE_PATH, MODEL_TOPIC, READ_TOKEN or READ_TOKEN_FILE, "
                     "POLL_INTERVAL_SECONDS, THREADS); the options below override them."))
    p.add_argument("--host", help=f"listen address [{ENV_PREFIX}HOST] (default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"listen port [{ENV_PREFIX}PORT] (default 9110)")
    p.add_argument("--kafka-servers", help=f"[{ENV_PREFIX}KAFKA_SERVERS]")
    p.add_argument("--model-topic", help=f"[{ENV_PREFIX}MODEL_TOPIC] (default agent-models)")
    p.add_argument("--model-storage-path", help=f"[{ENV_PREFIX}MODEL_STORAGE_PATH]")
    p.add_argument("--log-level", help=f"[{ENV_PREFIX}LOG_LEVEL] (default INFO)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the settings and exit (0 when valid)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..serve import (
        configure_logging,
        listen,
        load_settings,
        process_registry,
        serve_until_signalled,
    )

    args = build_parser().parse_args(argv)
    overrides = {key: value for key, value in (
        ("host", args.host), ("port", args.port), ("kafka_servers", args.kafka_servers),
        ("model_topic", args.model_topic), ("model_storage_path", args.model_storage_path),
        ("log_level", args.log_level)) if value is not None}
    settings = load_settings(PROG, load_selector_config, overrides)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.check_config:
        print(f"{PROG}: configuration OK")
        return 0
    app = create_selector_app(overrides, registry=process_registry())
    follower = app.extensions[EXTENSION]
    server = listen(PROG, app, settings)
    if server is None:
        follower.stop()
        return 1
    log.info("serving on http://%s:%s (%d threads, read token %s)", settings.host,
             server.effective_port, settings.threads,
             "required" if settings.read_token else "not required")
    serve_until_signalled(server, follower.stop, log)
    return 0
