"""``GET /api/model/ranking``: the model's ranking for orchestrators in any language.

``?task_type=T&top_k=K&explore=B`` answers
``{"model_version": N, "task_type": T, "objective": {...}, "ranking": [{"agent",
"score", "quality", "cost", "latency_seconds"}, ...]}``, the same list
``predict_best_agent(T, top_k=K, explore=B)`` returns, ranked by the model's
objective, with each agent's expected quality (success x accuracy), cost and
latency per run (null while not known), from anything that has
``predict_best_agent`` (and ``rank_agents`` for the estimates), ``version``
and ``model`` (a
:class:`~autoretrain.RealTimeModelUpdater` in the webhook, a
:class:`~autoretrain.ModelFollower` in the selector).

Parameters (each at most once; others are refused):

``task_type`` (required)
    A task type the served model knows. An unknown one is a **404**
    ``unknown_task_type`` (the query is well formed; the model has no such
    resource yet, and may after a later version), not a silent ranking by
    the aggregate as the Python API gives: a caller over HTTP should know.
``top_k``
    Integer in 1..:data:`MAX_TOP_K`, default 3.
``explore``
    ``true`` or ``false`` (also ``1`` / ``0``), default false: Thompson
    sampling, as ``explore=True``.

Errors are JSON ``{"error", "message"}``: 400 ``invalid_request`` naming the
parameter and what is allowed, 401 ``unauthorized`` when a read token is set
and missing or wrong, 404 ``unknown_task_type``, 503 ``no_model`` before the
first model (nothing learnt yet).
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import orjson
from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["MAX_TOP_K", "RANKING_PATH", "RANKING_RESULTS", "RankingFastPath", "RankingHandler",
           "ranking_blueprint"]

RANKING_PATH = "/api/model/ranking"
MAX_TOP_K = 100
_MAX_TASK_TYPE = 200
_PARAMS = ("task_type", "top_k", "explore")
_TRUE = ("true", "1")
_FALSE = ("false", "0")
_REALM = 'Bearer realm="autoretrain"'
_STATUS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 404: "404 Not Found",
           503: "503 Service Unavailable"}
#: ``result`` label values of ``autoretrain_ranking_requests_total``.
RANKING_RESULTS = ("ok", "invalid_request", "unauthorized", "unknown_task_type", "no_model")


class _Refused(Exception):
    def __init__(self, status: int, error: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}


def _parse(args: Mapping[str, list[str]]) -> tuple[str, int, bool]:
    """(task_type, top_k, explore) from the query's values per name; _Refused naming the fault."""
    unknown = sorted(set(args) - set(_PARAMS))
    if unknown:
        raise _Refused(400, "invalid_request", f"unknown query parameter {unknown[0][:40]!r}; "
                                               f"allowed: {', '.join(_PARAMS)}")

    def _param(name: str) -> str | None:
        values = args.get(name) or []
        if len(values) > 1:
            raise _Refused(400, "invalid_request", f"{name} must be given at most once")
        return values[0] if values else None

    task_type = _param("task_type")
    if task_type is None or not task_type:
        raise _Refused(400, "invalid_request", "task_type is required")
    if len(task_type) > _MAX_TASK_TYPE or not task_type.isprintable():
        raise _Refused(400, "invalid_request", f"task_type must be printable text of at most "
                                               f"{_MAX_TASK_TYPE} characters")
    text = _param("top_k")
    top_k = 3
    if text is not None:
        if not text.isascii() or not text.isdigit() or not 1 <= int(text[:6]) <= MAX_TOP_K:
            raise _Refused(400, "invalid_request",
                           f"top_k must be an integer in [1, {MAX_TOP_K}], got {text[:40]!r}")
        top_k = int(text)
    text = _param("explore")
    explore = False
    if text is not None:
        if text.lower() not in _TRUE + _FALSE:
            raise _Refused(400, "invalid_request",
                           f"explore must be true or false, got {text[:40]!r}")
        explore = text.lower() in _TRUE
    return task_type, top_k, explore


def _authenticate(token: str | None, header: str) -> None:
    if token is None:
        return
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise _Refused(401, "unauthorized", "an Authorization: Bearer token is required",
                       {"WWW-Authenticate": _REALM})
    # Constant time: the comparison must not reveal how much of a guess was right.
    if not hmac.compare_digest(credentials.encode(), token.encode()):
        raise _Refused(401, "unauthorized", "the Bearer token is not valid",
                       {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'})


def ranking_blueprint(
    source: Callable[[], Any] | RankingHandler,
    *,
    read_token: str | None = None,
    registry: CollectorRegistry | None = None,
) -> Blueprint:
    """A blueprint serving :data:`RANKING_PATH` from ``source()`` (called per request).

    ``source()`` returns an object with ``predict_best_agent(task_type,
    context, top_k, explore)``, ``version`` (None or 0 before a model) and
    ``model`` (an ``AgentSelectionModel`` or None). ``read_token``: when set,
    requests need ``Authorization: Bearer <read_token>``. ``registry``
    receives ``autoretrain_ranking_requests_total{result}`` and the latency
    histogram. ``source`` may instead be a :class:`RankingHandler` (shared with a
    :class:`RankingFastPath`); ``read_token`` and ``registry`` are then its own.
    """
    handler = (source if isinstance(source, RankingHandler)
               else RankingHandler(source, read_token=read_token, registry=registry))
    bp = Blueprint("ranking", __name__)

    @bp.get(RANKING_PATH)
    def ranking() -> Response:
        status, body, headers = handler.answer(
            {name: request.args.getlist(name) for name in request.args},
            request.headers.get("Authorization", ""))
        return Response(body, status=status, headers=headers, mimetype="application/json")

    return bp


class RankingHandler:
    """Parse, rank, answer: the endpoint without a framework (the blueprint and
    :class:`RankingFastPath` share it), with its metrics in ``registry``."""

    def __init__(self, source: Callable[[], Any], *, read_token: str | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        registry = CollectorRegistry() if registry is None else registry
        self.source = source
        self.read_token = read_token
        self.requests = Counter(
            "autoretrain_ranking_requests",
            "Ranking requests by result "
            "(ok | invalid_request | unauthorized | unknown_task_type | no_model).",
            ["result"], registry=registry)
        self._by_result = {result: self.requests.labels(result) for result in RANKING_RESULTS}
        self.latency = Histogram(
            "autoretrain_ranking_request_duration_seconds",
            "Time to answer a ranking request in the application.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=registry)

    def answer(self, args: Mapping[str, list[str]],
               authorization: str) -> tuple[int, bytes, dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        started = time.perf_counter()
        try:
            _authenticate(self.read_token, authorization)
            task_type, top_k, explore = _parse(args)
            body = _rank(self.source(), task_type, top_k, explore)
        except _Refused as exc:
            self._by_result[exc.error].inc()
            return (exc.status, orjson.dumps({"error": exc.error, "message": exc.message}),
                    exc.headers)
        self._by_result["ok"].inc()
        self.latency.observe(time.perf_counter() - started)
        return 200, orjson.dumps(body), {}


class RankingFastPath:
    """WSGI middleware answering ``GET`` :data:`RANKING_PATH` itself and passing
    everything else to ``app``: the selector's one hot path skips the
    framework's per-request work (routing, request and response objects),
    which cost it half the throughput of the bare server (BENCHMARKS.md).
    Same handler, same answers, same headers as the blueprint."""

    def __init__(self, app: Callable[..., Any], handler: RankingHandler) -> None:
        self.app = app
        self.handler = handler

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != RANKING_PATH or environ.get("REQUEST_METHOD") != "GET":
            return self.app(environ, start_response)
        query = environ.get("QUERY_STRING", "")
        try:
            args = parse_qs(query, keep_blank_values=True, strict_parsing=False,
                            errors="strict", max_num_fields=20)
        except (ValueError, UnicodeDecodeError):
            args = {"": ["undecodable"]}  # refused below as an unknown parameter
        status, body, headers = self.handler.answer(args, environ.get("HTTP_AUTHORIZATION", ""))
        start_response(_STATUS[status], [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"),
            *headers.items()])
        return [body]


def _rank(served: Any, task_type: str, top_k: int, explore: bool) -> dict[str, Any]:
    # The version and the ranking must describe the same model: a swap
    # between reading one and computing the other is retried.
    for _ in range(3):
        version = served.version
        model = served.model
        if not version and (model is None or not model.agents):
            raise _Refused(503, "no_model", "no model has been loaded yet; retry later")
        if model is None or task_type not in model.task_types:
            known = sorted(model.task_types)[:20] if model is not None else []
            raise _Refused(404, "unknown_task_type",
                           f"the model (version {version}) does not know task type "
                           f"{task_type[:80]!r}; known: {', '.join(known) or 'none'}")
        rank_agents = getattr(served, "rank_agents", None)
        if rank_agents is not None:
            entries = [{"agent": e.agent, "score": _finite(e.score), "quality": _finite(e.quality),
                        "cost": e.cost, "latency_seconds": e.latency_seconds}
                       for e in rank_agents(task_type, None, top_k, explore)]
        else:  # a source without estimates (an older orchestrator object)
            entries = [{"agent": agent, "score": _finite(score)}
                       for agent, score in served.predict_best_agent(task_type, None, top_k,
                                                                     explore)]
        if served.version == version:
            break
    body: dict[str, Any] = {"model_version": version, "task_type": task_type}
    objective = getattr(model, "objective", None)
    if objective is not None:
        body["objective"] = objective.as_dict()
    body["ranking"] = entries
    return body


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
