"""The Flask application: Alertmanager receiver, retraining API, health and metrics.

``create_app(config=None, *, updater=None, registry=None)`` is the factory.
Every view follows parse, then decide, then act: the request is checked
(token, media type, size, JSON, schema) and turned into typed values; the
:class:`~webhook.controller.RetrainController` decides and queues; only the
worker thread retrains. Client mistakes get a JSON ``{"error", "message"}``
with a 4xx status and are counted in ``autoretrain_webhook_requests_rejected_total``;
nothing a client sends can produce a 500 or a stack trace.

The app keeps its collaborators in ``app.extensions["autoretrain"]`` (a
:class:`WebhookService`); call its ``close()`` when done (``python -m
webhook`` does on SIGTERM).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NoReturn

import yaml
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from autoretrain.exporter.background import BackgroundLoop
from autoretrain.exporter.build_info import register_build_info
from autoretrain.exporter.http import render_metrics
from autoretrain.exporter.timefmt import utc_iso

from .alerts import InvalidPayload, parse_notification
from .config import WebhookConfig, load_config
from .controller import ControllerUnavailable, RateLimited, RetrainController
from .effects import RetrainEffects
from .ledger import Ledger
from .metrics import REJECT_REASONS, WebhookMetrics
from .pathguard import RejectAmbiguousPaths
from .standby import Failover
from .storelock import StoreLock
from .updater.results import MODEL_TYPE, MODEL_TYPES
from .updater.status import UpdaterStatus

__all__ = ["ClientError", "WebhookService", "create_app"]

log = logging.getLogger(__name__)

EXTENSION = "autoretrain"
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_REALM = 'Bearer realm="autoretrain"'
_TRIGGER_KEYS = ("reason", "force_full_retrain", "model_type")
_MAX_REASON = 500
_EFFECTS_INTERVAL = 5.0  # seconds between checks for retrains whose after-window closed
# What generate_latest writes (prometheus_client >= 0.22 calls 1.0.0 "latest"
# but still writes this compatible format unless asked otherwise).
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class ClientError(Exception):
    """A request refused with a 4xx: ``reason`` is the metric label and the ``error`` code."""

    def __init__(
        self, status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class WebhookService:
    """What the views use; owned by one app.

    The ledger and the retrain worker exist only while this instance is the
    active one (it holds the lock on the model store and the ledger, see
    :mod:`webhook.standby`); a standby's views never reach them.
    """

    config: WebhookConfig
    updater: Any
    registry: CollectorRegistry
    metrics: WebhookMetrics
    owns_updater: bool
    failover: Failover = field(init=False, repr=False)
    _ledger: Ledger | None = field(default=None, init=False, repr=False)
    _controller: RetrainController | None = field(default=None, init=False, repr=False)
    _effects: RetrainEffects | None = field(default=None, init=False, repr=False)
    _effects_loop: BackgroundLoop | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        store = getattr(getattr(self.updater, "store", None), "path", None)
        self.failover = Failover(StoreLock.for_webhook(store, self.config.ledger_path),
                                 self._activate, self.registry, mode=self.config.standby)

    @property
    def active(self) -> bool:
        """True while this instance holds the store lock and runs the retrain worker."""
        return self.failover.active

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the ledger is open only while this webhook is active")
        return self._ledger

    @property
    def controller(self) -> RetrainController:
        if self._controller is None:
            raise RuntimeError("the retrain worker exists only while this webhook is active")
        return self._controller

    def start(self) -> None:
        """Take the store lock and start the writers, or wait as a standby (see
        :class:`~webhook.standby.Failover`; raises ``StoreLocked`` in mode exit)."""
        self.failover.start()

    def _activate(self) -> None:
        # Called with the lock held: only now may anything write the ledger or the store.
        settings = self.config
        ledger = Ledger(settings.ledger_path, retention_seconds=(
            settings.ledger_retention_days * 86400 if settings.ledger_retention_days else None))
        controller = RetrainController(
            self.updater, ledger, self.metrics, cooldown_seconds=settings.cooldown_seconds,
            api_min_interval_seconds=settings.api_retrain_min_interval_seconds,
            time_limit_seconds=settings.retrain_time_limit_seconds,
            schedule=settings.retrain_schedule(),
            # Alert retrains wait until the updater re-read its source after the start.
            source_ready=getattr(self.updater, "caught_up", None),
            catch_up_seconds=settings.retrain_catch_up_seconds)
        # Retrain effects are measured on the updater's outcome counts; an
        # updater without them (any object with trigger_retraining may be
        # passed in) leaves the ledger's effects empty.
        outcomes = getattr(getattr(self.updater, "outcomes", None), "outcomes", None)
        effects = effects_loop = None
        if callable(outcomes):
            effects = RetrainEffects(ledger, outcomes, self.metrics,
                                     settings.effect_settings())
            metrics = self.metrics

            def failed(exc: BaseException, retry_in: float) -> None:
                metrics.controller_errors.inc()
                log.error("measuring retrain effects failed; retrying in %.1f s", retry_in,
                          exc_info=exc)

            effects_loop = BackgroundLoop("retrain-effects", effects.check,
                                          interval=_EFFECTS_INTERVAL, on_error=failed)
        try:
            if self.owns_updater:
                self.updater.start()  # loads the newest saved model
            controller.start()
            if effects_loop is not None:
                effects_loop.start()
        except BaseException:
            if effects_loop is not None:
                effects_loop.stop()
            controller.stop()
            if self.owns_updater and self.updater.running:
                self.updater.stop()
            ledger.close()
            raise
        self._ledger, self._controller = ledger, controller
        self._effects, self._effects_loop = effects, effects_loop

    @property
    def effects(self) -> RetrainEffects | None:
        """What measures each retrain's effect (None: the updater keeps no outcome counts)."""
        return self._effects

    def close(self) -> None:
        """Stop the retrain worker (after a retrain in progress), the updater if the
        app built it, close the ledger, then give the store lock up."""
        self.failover.stop_waiting()
        writers_stopped = True
        if self.failover.active:
            if self._effects_loop is not None:
                self._effects_loop.stop()
            self.controller.stop()
            if self.owns_updater:
                self.updater.stop()
                writers_stopped = not self.updater.running
            writers_stopped = writers_stopped and not self.controller.running
            self.ledger.close()
        publisher = getattr(self.updater, "model_publisher", None)
        if self.owns_updater and publisher is not None:
            publisher.close()  # built with the updater (standby or not), closed with it
        if not writers_stopped:
            log.error("a writer did not stop: keeping the store lock until this process exits")
        self.failover.close(release=writers_stopped)


def _service() -> WebhookService:
    service: WebhookService = current_app.extensions[EXTENSION]
    return service


# -- request checks (parse) ---------------------------------------------------------------
def _authenticate(service: WebhookService) -> None:
    token = service.config.token
    if token is None:  # allow_unauthenticated: checked at start
        return
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise ClientError(401, "unauthorized", "an Authorization: Bearer token is required",
                          {"WWW-Authenticate": _REALM})
    # Constant time: the comparison must not reveal how much of a guess was right.
    if not hmac.compare_digest(credentials.encode(), token.encode()):
        raise ClientError(401, "unauthorized", "the Bearer token is not valid",
                          {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'})


def _read_body(service: WebhookService) -> bytes:
    """The body, at most ``max_body_bytes``: Content-Length first, then a capped read
    (chunked bodies have no length)."""
    limit = service.config.max_body_bytes
    too_large = f"the body exceeds the limit of {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        raise ClientError(413, "payload_too_large", too_large)
    chunks: list[bytes] = []
    size = 0
    stream = request.stream
    while True:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise ClientError(413, "payload_too_large", too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise ClientError(400, "invalid_json", "the JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise ClientError(400, "invalid_json", "the body is not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, NaN / Infinity
        raise ClientError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _require_json_type() -> None:
    if request.mimetype != "application/json":
        shown = (request.mimetype or "none")[:60]
        raise ClientError(415, "unsupported_media_type",
                          f"Content-Type must be application/json, got {shown!r}")


def _int_param(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 12 or not low <= int(text) <= high:
        raise ClientError(400, "invalid_request",
                          f"{name} must be an integer in [{low}, {high}], got {text[:40]!r}")
    return int(text)


def _json_safe(value: Any) -> Any:
    # The updater's scores can be NaN; JSON has no NaN, so it becomes null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# -- blueprints -----------------------------------------------------------------------
alerts_bp = Blueprint("alerts", __name__)
api_bp = Blueprint("api", __name__, url_prefix="/api/performance")
ops_bp = Blueprint("ops", __name__)


@alerts_bp.post("/alerts")
def receive_alerts() -> tuple[Response, int]:
    """Alertmanager webhook (version 4): decide per alert, queue retrains, answer 202 at once."""
    service = _service()
    _authenticate(service)
    _require_json_type()
    data = _decode_json(_read_body(service))
    try:
        notification = parse_notification(data)
    except InvalidPayload as exc:
        raise ClientError(400, "invalid_payload", str(exc)) from None
    plan = service.controller.handle(notification)
    return jsonify({
        "status": "accepted",
        "alerts": len(notification.alerts),
        "truncated_alerts": notification.truncated_alerts,
        "decisions": [d.as_json() for d in plan.decisions],
    }), 202


def _parse_trigger(data: Any) -> tuple[str, bool, str]:
    if not isinstance(data, dict):
        raise ClientError(400, "invalid_request", "the body must be a JSON object")
    unknown = sorted(set(data) - set(_TRIGGER_KEYS))
    if unknown:
        raise ClientError(400, "invalid_request",
                          f"unknown field(s) {', '.join(repr(k[:40]) for k in unknown[:5])}; "
                          f"allowed: {', '.join(_TRIGGER_KEYS)}")
    reason = data.get("reason", "manual_api_trigger")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > _MAX_REASON:
        raise ClientError(400, "invalid_request",
                          f"reason must be a non-empty string of at most {_MAX_REASON} characters")
    # The reason goes to the ledger and to log lines: printable text on one
    # line, so it cannot forge log entries; isprintable() is also False for
    # lone surrogates, which SQLite could not store.
    if not reason.isprintable():
        raise ClientError(400, "invalid_request",
                          "reason must be printable text on one line (no control characters)")
    full = data.get("force_full_retrain", False)
    if not isinstance(full, bool):
        raise ClientError(400, "invalid_request", "force_full_retrain must be true or false")
    model_type = data.get("model_type", MODEL_TYPE)
    if model_type not in MODEL_TYPES:
        raise ClientError(400, "invalid_request",
                          f"model_type must be one of {', '.join(MODEL_TYPES)}")
    return reason, full, model_type


@api_bp.post("/trigger-retraining")
def trigger_retraining() -> tuple[Response, int]:
    """The original synchronous API, serialised with alert retrains on the worker thread."""
    service = _service()
    _authenticate(service)
    if request.mimetype:
        _require_json_type()
    body = _read_body(service)
    if body and not request.mimetype:
        _require_json_type()  # a body must say what it is
    reason, full, model_type = _parse_trigger(_decode_json(body) if body else {})
    try:
        future = service.controller.submit(reason, full, model_type)
    except ControllerUnavailable as exc:
        return _error_response(503, "unavailable", str(exc)), 503
    except RateLimited as exc:
        raise ClientError(429, "rate_limited", str(exc),
                          {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}) from None
    timeout = service.config.retrain_timeout_seconds
    try:
        failure = future.exception(timeout)
    except FutureTimeout:
        withdrawn = future.cancel()
        message = (f"the retrain did not start within {timeout:g} s and was withdrawn"
                   if withdrawn else f"the retrain did not finish within {timeout:g} s; "
                   "it goes on, see GET /api/performance/retraining")
        return _error_response(503, "timeout", message), 503
    if failure is not None:
        if isinstance(failure, ControllerUnavailable):
            return _error_response(503, "unavailable", str(failure)), 503
        # The updater raised: a server fault, logged by the worker.
        return jsonify({"status": "error", "message": f"the retrain failed: "
                        f"{type(failure).__name__}", "result": None,
                        "timestamp": utc_iso(time.time())}), 500
    retrain_id, result = future.result()
    if result.get("success"):
        message = ("retrained; the candidate was promoted" if result.get("promoted")
                   else "retrained; the candidate was rejected (the serving model scored better)")
        if result.get("saved") is False:
            message += (" but could not be saved (it serves from memory; model_version is "
                        "the last saved version, the next save retries)")
    else:
        message = f"not retrained: {result.get('error', 'unknown reason')}"
    return jsonify({
        "status": "success" if result.get("success") else "error",
        "message": message,
        "result": _json_safe(result),
        "retrain_id": retrain_id,
        "timestamp": utc_iso(time.time()),
    }), 200


@api_bp.get("/retraining")
def list_retraining() -> Response:
    """The ledger of retrains, newest first: ``?limit=`` (1..100, 20) and ``?offset=``."""
    service = _service()
    unknown = sorted(set(request.args) - {"limit", "offset"})
    if unknown:
        raise ClientError(400, "invalid_request",
                          f"unknown query parameter {unknown[0][:40]!r}; allowed: limit, offset")
    # ?limit=5&limit=500: which one counts differs between proxies and frameworks,
    # so a repeated parameter is refused rather than resolved silently.
    for name in ("limit", "offset"):
        if len(request.args.getlist(name)) > 1:
            raise ClientError(400, "invalid_request", f"{name} must be given at most once")
    limit = _int_param("limit", 20, 1, 100)
    offset = _int_param("offset", 0, 0, 10**9)
    items, total = service.ledger.list_retrains(limit, offset)
    end = offset + len(items)
    return jsonify({
        "retrains": _json_safe(items),
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": end if end < total else None,
    })


@api_bp.get("/stats")
def stats() -> Response:
    """The updater's metrics, plus the retrain controller's state under ``webhook``."""
    service = _service()
    data = UpdaterStatus.of(service.updater).as_dict()
    data["webhook"] = service.controller.status()
    return jsonify(_json_safe(data))


@ops_bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text: the webhook's registry, and the updater's when it is another one."""
    service = _service()
    registries = [service.registry]
    updater_registry = getattr(service.updater, "registry", None)
    if isinstance(updater_registry, CollectorRegistry) and updater_registry is not service.registry:
        registries.append(updater_registry)
    # One exposition, without the _created series (see render_metrics).
    return Response(render_metrics(*registries), headers={"Content-Type": _PROMETHEUS_TEXT})


@ops_bp.get("/healthz")
def healthz() -> Response:
    """Alive: the process answers."""
    return jsonify({"status": "alive"})


def readiness(service: WebhookService) -> tuple[bool, str, dict[str, str]]:
    """(ready, reason, checks): a model is serving, the consumer and the retrain worker
    run, and with Kafka the broker is reachable; a standby is not ready."""
    if not service.active:
        # A standby must not touch the updater: loading would read (and tidy) the store.
        if service.failover.waiting:
            return False, "standby", {"role": "standby", "lock": service.failover.status()}
        return False, "not started (or stopped)", {"role": "none"}
    m = UpdaterStatus.of(service.updater)
    store = getattr(service.updater, "store", None)
    stored = bool(store.versions()) if store is not None else False
    checks: dict[str, str] = {}
    problems: list[str] = []
    skipped = m.corrupt_versions_skipped
    if m.model_loaded or m.model_version > 0:
        checks["model"] = f"loaded (version {m.model_version})" + (
            f"; {skipped} corrupt newer version(s) skipped" if skipped else "")
    elif not stored:
        checks["model"] = "new (no stored model yet)"
    else:
        checks["model"] = "not loaded"
        problems.append("the model store has versions but none could be loaded")
    checks["consumer"] = "running" if m.running else "stopped"
    if not m.running:
        problems.append("the updater's consumer is not running")
    if m.source == "kafka":
        # The updater probes the broker: its consumer polls quietly return
        # nothing while Kafka is down, which must not look ready.
        kafka_error = m.kafka_error
        checks["kafka"] = "reachable" if kafka_error is None else "unreachable"
        if kafka_error is not None:
            problems.append(str(kafka_error))
    checks["retrain_worker"] = "running" if service.controller.running else "stopped"
    if not service.controller.running:
        problems.append("the retrain worker is not running")
    controller = service.controller
    controller.check_time_limit()  # the ledger says timed_out as soon as a probe sees it
    current = controller.running_retrain()
    if current is not None:  # idle: no entry
        checks["retrain"] = (f"retrain {current.retrain_id} running for {current.seconds:.0f} s "
                             f"(time limit {controller.time_limit_seconds:g} s)")
        if current.timed_out:
            # The thread cannot be stopped: say what waits behind it, so an
            # operator knows a restart re-queues its episodes.
            state = controller.status()
            problems.append(
                f"retrain {current.retrain_id} ({current.trigger}, {current.retrain_type}) "
                f"has run for {current.seconds:.0f} s, past the time limit of "
                f"{controller.time_limit_seconds:g} s, and cannot be stopped; "
                f"{state['queued_episodes']} queued alert episode(s) and "
                f"{state['queued_api_requests']} API request(s) wait behind it")
    notes: list[str] = []  # said in the reason, not reasons to be unready
    publisher = getattr(service.updater, "model_publisher", None)
    if publisher is not None:
        # Said in the reason but not a reason to take the trainer out of
        # service: it still retrains, and followers keep the previous version.
        failure = publisher.status()
        checks["model_topic"] = (f"failing: {failure}" if failure is not None
                                 else f"published version {publisher.published_version}"
                                 if publisher.published_version is not None else "nothing yet")
        if failure is not None:
            notes.append(f"publishing to the model topic fails: {failure}")
    reason = "; ".join(problems) or "ready"
    return not problems, "; ".join([reason, *notes]), checks


@ops_bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready (200) or not (503) with the reason."""
    ok, reason, checks = readiness(_service())
    return jsonify({"ready": ok, "reason": reason, "checks": checks}), 200 if ok else 503


def _openapi_text() -> str:
    return resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")


@ops_bp.get("/openapi.yaml")
def openapi_yaml() -> Response:
    """This API's OpenAPI 3 document (the checked-in file)."""
    return Response(_openapi_text(), mimetype="application/yaml")


@ops_bp.get("/openapi.json")
def openapi_json() -> Response:
    """The same document as JSON."""
    return jsonify(yaml.safe_load(_openapi_text()))


# -- errors ------------------------------------------------------------------------------
def _error_response(status: int, error: str, message: str) -> Response:
    response = jsonify({"error": error, "message": message})
    response.status_code = status
    return response


def _client_error(exc: ClientError) -> Response:
    _service().metrics.rejected.labels(exc.reason).inc()
    response = _error_response(exc.status, exc.reason, exc.message)
    response.headers.update(exc.headers)
    return response


_HTTP_REASONS = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                 400: "invalid_request", 415: "unsupported_media_type"}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    reason = _HTTP_REASONS.get(status, "http_error")
    if reason in REJECT_REASONS:
        _service().metrics.rejected.labels(reason).inc()
    response = _error_response(status, reason, exc.description or exc.name)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _internal_error(exc: Exception) -> Response:
    # Never the traceback in the response; it goes to the log.
    log.error("unhandled error in %s %s", request.method, request.path[:200], exc_info=exc)
    return _error_response(500, "internal_error", "internal server error")


def _start_timer() -> None:
    g.started = time.perf_counter()


# What a standby answers itself; every other route (any route added later too)
# needs the ledger, the retrain worker or the loaded model, which only the active has.
_STANDBY_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.prometheus_metrics",
                                "ops.openapi_yaml", "ops.openapi_json"})


def _refuse_on_standby() -> Response | None:
    if request.endpoint is None or request.endpoint in _STANDBY_ENDPOINTS:
        return None  # unknown paths keep their 404
    service = _service()
    if service.active:
        return None
    # 503: Alertmanager retries a 5xx (not a 4xx), so a notification that
    # reaches the standby is delivered again, to the active one or to this
    # one once it has taken over.
    # Before authentication, so it names no holder (/readyz and the log do).
    return _error_response(503, "standby", "this webhook is a standby: another instance "
                           "holds the model store and ledger; retry against the active one")


def _finish_request(response: Response) -> Response:
    started = g.pop("started", None)
    if started is not None:
        endpoint = request.url_rule.rule if request.url_rule is not None else "other"
        method = request.method if request.method in _METHODS else "other"
        _service().metrics.request_duration.labels(endpoint, method).observe(
            time.perf_counter() - started)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# -- the factory ------------------------------------------------------------------------------
def _is_flask_key(key: Any) -> bool:
    """Flask's configuration keys are upper case; the webhook's are lower case."""
    return isinstance(key, str) and key.isupper()


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    updater: Any = None,
    registry: CollectorRegistry | None = None,
    start: bool = True,
) -> Flask:
    """Build the webhook app.

    ``config`` overrides the environment (``AUTORETRAIN_WEBHOOK_*``), which
    overrides the defaults (see :mod:`webhook.config`); invalid settings
    raise ``ValueError`` here, not at the first request. ``updater`` is any
    object with ``trigger_retraining``, ``get_metrics`` (and for ``/metrics``
    a ``registry``); its lifecycle stays with the caller. Without one, a
    :class:`~webhook.RealTimeModelUpdater` is built from the config,
    started, and stopped by ``WebhookService.close()``. ``registry`` receives
    the webhook's metrics (a fresh one by default); pass the updater's to
    serve both from one registry.

    ``start`` (default True) calls ``WebhookService.start()``: take the lock
    on the model store and the ledger, then open the ledger and start the
    updater (when the app built it) and the retrain worker; if another
    process holds the lock, serve as a standby and take over when it exits
    (setting ``standby``). With ``start=False`` nothing is opened, started
    or written until the caller calls ``start()`` (``python -m
    autoretrain.webhook`` does so once its port is bound).

    Upper-case keys of ``config`` (``TESTING``, ``SECRET_KEY``, ...) are
    Flask's own and go to ``app.config`` unchecked, as in Flask's tutorial;
    every other key is the webhook's and is validated.
    """
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping, got {type(config).__name__}")
    flask_config = {k: v for k, v in (config or {}).items() if _is_flask_key(k)}
    own = {k: v for k, v in (config or {}).items() if not _is_flask_key(k)}
    settings = load_config(own if config is not None else None, os.environ)
    registry = CollectorRegistry() if registry is None else registry
    owns_updater = updater is None
    if updater is None and settings.kafka_servers:
        # kafka-python imported for the first time from two threads at once
        # (the updater's consumer and the model publisher) can fail with a
        # circular ImportError in one of them: import it here, on this thread,
        # before either starts (seen after a restart in test_faults_webhook).
        import kafka  # noqa: F401
    if updater is None:
        from .serving.model_topic import publisher_for
        from .updater import RealTimeModelUpdater

        updater = RealTimeModelUpdater.from_settings(
            settings.updater_settings(), settings.update_rule(), registry=registry,
            model_publisher=publisher_for(settings, registry))
    for method in ("trigger_retraining", "get_metrics"):
        if not callable(getattr(updater, method, None)):
            raise ValueError(f"updater must have a {method}() method")
    metrics = WebhookMetrics(registry, settings.max_alertnames)
    register_build_info(registry)
    service = WebhookService(settings, updater, registry, metrics, owns_updater)

    app = Flask(__name__, static_folder=None)
    # An API has no redirects: //alerts or /api//performance/stats is a 404 in
    # JSON, not a 308 to an address built from the client's Host header.
    app.url_map.merge_slashes = False
    # Werkzeug's own cap, in addition to ours: it also guards form parsing.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config.from_mapping(flask_config)
    app.extensions[EXTENSION] = service
    app.register_blueprint(alerts_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(ops_bp)
    if callable(getattr(updater, "predict_best_agent", None)):
        # GET /api/model/ranking from the in-process model (not for a fake updater).
        from .serving.ranking import ranking_blueprint

        app.register_blueprint(ranking_blueprint(lambda: service.updater,
                                                 read_token=settings.read_token,
                                                 registry=registry))
    app.register_error_handler(ClientError, _client_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    app.before_request(_start_timer)
    app.before_request(_refuse_on_standby)
    app.after_request(_finish_request)
    # Outermost: //path must not reach the route of /path (see pathguard).
    app.wsgi_app = RejectAmbiguousPaths(  # type: ignore[method-assign]
        app.wsgi_app, metrics.rejected.labels("not_found").inc)

    if start:
        try:
            service.start()
        except BaseException:
            service.close()
            raise
    log.info("webhook app %s (auth %s, ledger %s, cooldown %g s)",
             "ready" if service.active else "built (standby)" if start else "built",
             "required" if settings.auth_required else "DISABLED", settings.ledger_path,
             settings.cooldown_seconds)
    return app
