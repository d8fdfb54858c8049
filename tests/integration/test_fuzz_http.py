"""Property-based fuzz of every HTTP endpoint of the real ``python -m autoretrain.webhook``
(waitress).

Hypothesis draws batches of requests; each batch goes out in parallel over
keep-alive connections to one server process on 127.0.0.1 (max_body_bytes
64 KiB, so waitress' own cap is 128 KiB). Every request carries the status
(and ``error`` code) that the API contract gives for it: an oracle that
applies the documented checks in the webhook's order (waitress' cap, route,
method, token, media type, size, JSON, schema). Per response:

- the status is the oracle's, never a 5xx (one exception, by RFC 9112:
  waitress answers 501 to a transfer-coding it does not implement);
- for a documented operation, the status is among its responses in
  ``webhook/openapi.yaml``;
- the webhook's own errors are JSON ``{"error", "message"}`` with the
  expected code, no traceback; 401 has ``WWW-Authenticate``, 405 ``Allow``.

Afterwards the process is alive, ``/healthz`` is 200, a valid ``POST
/alerts`` is 202, the log has no traceback, and
``autoretrain_webhook_requests_rejected_total`` counts exactly the webhook's 4xx. The
request counts by category and the status histogram go to
``reliability/webhook.json`` under ``http_fuzz``.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import string
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from servers.webhook import LIMIT, TOKEN, WebhookProcess
from servers.webhook import REPO as _REPO
from servers.webhook import record_figures as _record

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
# waitress refuses bodies of this size and more itself, counting chunked framing
# (python -m autoretrain.webhook sets it 64 KiB past max_body_bytes, so the webhook answers
# the first 64 KiB over the limit in JSON).
CAP = LIMIT + 65536
CONNECTIONS = 6
EXAMPLES = 1200  # batches; 8 to 12 requests each
MIN_REQUESTS = 10_000

JSON_TYPE = "application/json"
ALERTS = "/alerts"
TRIGGER = "/api/performance/trigger-retraining"
RETRAINING = "/api/performance/retraining"
GET_PATHS = (RETRAINING, "/api/performance/stats", "/metrics", "/healthz", "/readyz",
             "/openapi.yaml", "/openapi.json")
POST_PATHS = (ALERTS, TRIGGER)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO",
           "PROPFIND", "M-SEARCH")
TRIGGER_KEYS = ("reason", "force_full_retrain", "model_type")


def documented_statuses() -> dict[tuple[str, str], frozenset[int]]:
    """(path, METHOD) -> the statuses ``webhook/openapi.yaml`` documents for it."""
    doc = yaml.safe_load((REPO / "webhook" / "openapi.yaml").read_text())
    return {(path, method.upper()): frozenset(int(code) for code in op["responses"])
            for path, item in doc["paths"].items() for method, op in item.items()}


DOCUMENTED = documented_statuses()


# -- a request and what the contract says about it ---------------------------------------
@dataclass(frozen=True)
class Probe:
    """One request. ``verdict`` is what the body is worth once it reaches parsing."""

    category: str
    method: str
    target: str
    body: bytes = b""
    authorization: str | None = f"Bearer {TOKEN}"
    content_type: str | None = JSON_TYPE
    # "length" (Content-Length), "chunked", or "announce" (a Content-Length of
    # ``announced`` and no body: waitress must refuse it from the header alone).
    transfer: str = "length"
    announced: int = 0
    verdict: str = "valid"
    raw: bytes | None = None  # a whole request sent as is on a fresh socket


@dataclass(frozen=True)
class Expected:
    status: int
    error: str | None = None  # the webhook's JSON error code; None: any or none
    by_waitress: bool = False  # answered before the app: text, not JSON


def _path(target: str) -> str:
    # What Flask routes on: waitress percent-decodes the path (%2F included),
    # and Werkzeug collapses leading slashes (//healthz is /healthz; a slash
    # doubled further in is a 404, as merge_slashes is off).
    decoded = urllib.parse.unquote(target.partition("?")[0], errors="replace")
    return "/" + decoded.lstrip("/")


def _authorized(value: str | None) -> bool:
    # RFC 6750: the scheme is case-insensitive; waitress strips the value's ends.
    if value is None:
        return False
    scheme, _, credentials = value.strip().partition(" ")
    return scheme.lower() == "bearer" and credentials.strip() == TOKEN


def _mimetype(value: str | None) -> str:
    return (value or "").partition(";")[0].strip().lower()


def _query_ok(target: str) -> bool:
    pairs = urllib.parse.parse_qsl(target.partition("?")[2], keep_blank_values=True)
    names = [name for name, _ in pairs]
    if set(names) - {"limit", "offset"} or len(names) != len(set(names)):
        return False
    bounds = {"limit": (1, 100), "offset": (0, 10**9)}
    for name, text in pairs:
        low, high = bounds[name]
        if not (text.isascii() and text.isdigit() and len(text) <= 12
                and low <= int(text) <= high):
            return False
    return True


def expect(probe: Probe) -> Expected:
    """The contract for ``probe``, checks in the order the server applies them."""
    if probe.raw is not None:
        return Expected(501 if probe.verdict == "unsupported_coding" else 400,
                        by_waitress=True)
    if probe.transfer == "announce" and probe.announced >= CAP:
        return Expected(413, by_waitress=True)
    path = _path(probe.target)
    if path not in GET_PATHS + POST_PATHS:
        return Expected(404, "not_found")
    if probe.method == "OPTIONS":
        return Expected(200)  # Flask's automatic OPTIONS, with Allow
    allowed = ("GET", "HEAD") if path in GET_PATHS else ("POST",)
    if probe.method not in allowed:
        return Expected(405, "method_not_allowed")
    if path in GET_PATHS:
        if path == RETRAINING and not _query_ok(probe.target):
            return Expected(400, "invalid_request")
        return Expected(200)
    if not _authorized(probe.authorization):
        return Expected(401, "unauthorized")
    mimetype = _mimetype(probe.content_type)
    size = len(probe.body)
    if path == ALERTS:
        if mimetype != JSON_TYPE:
            return Expected(415, "unsupported_media_type")
        if size > LIMIT:
            return Expected(413, "payload_too_large")
        return {"valid": Expected(202), "invalid_json": Expected(400, "invalid_json"),
                "invalid_payload": Expected(400, "invalid_payload"),
                "too_deep": Expected(400)}[probe.verdict]
    # trigger-retraining: a body is optional, but one that is there must be JSON.
    if mimetype and mimetype != JSON_TYPE:
        return Expected(415, "unsupported_media_type")
    if size > LIMIT:
        return Expected(413, "payload_too_large")
    if size and not mimetype:
        return Expected(415, "unsupported_media_type")
    if not size:
        return Expected(200)
    return {"valid": Expected(200), "invalid_json": Expected(400, "invalid_json"),
            "invalid_request": Expected(400, "invalid_request"),
            "too_deep": Expected(400)}[probe.verdict]


# -- strategies ----------------------------------------------------------------------------
def _json(value: Any) -> bytes:
    # ensure_ascii: lone surrogates travel as \udXXX escapes, as a hostile sender's would.
    return json.dumps(value).encode()


label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)
label_values = st.text(max_size=30)  # no surrogates: Hypothesis' text() leaves them out
labels = st.dictionaries(label_names, label_values, max_size=5)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                         timezone(-timedelta(hours=8))])


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    when = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                             timezones=zones))
    text = when.isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


@st.composite
def alerts(draw: st.DrawFn) -> dict[str, Any]:
    alert_labels = {"alertname": draw(st.sampled_from(["SystemAccuracyLow", "AgentErrorsHigh",
                                                        "Other"])),
                    **draw(labels)}
    if draw(st.booleans()):
        alert_labels["retrain"] = draw(st.sampled_from(["incremental", "full", "bogus"]))
    alert: dict[str, Any] = {
        "status": draw(st.sampled_from(["firing", "resolved"])),
        "labels": alert_labels,
        "startsAt": draw(timestamps()),
        "fingerprint": draw(st.text("0123456789abcdefABCDEF", min_size=1, max_size=64)),
    }
    if draw(st.booleans()):
        alert["endsAt"] = draw(st.just("0001-01-01T00:00:00Z") | timestamps())
        alert["annotations"] = draw(labels)
        alert["generatorURL"] = draw(st.text(max_size=40))
    return alert


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"version": "4",
                               "status": draw(st.sampled_from(["firing", "resolved"])),
                               "alerts": draw(st.lists(alerts(), min_size=1, max_size=4))}
    if draw(st.booleans()):
        message.update(receiver="autoretrain-webhook", groupKey=draw(st.text(max_size=40)),
                       groupLabels=draw(labels), commonLabels=draw(labels),
                       commonAnnotations=draw(labels), externalURL="http://127.0.0.1:9093",
                       truncatedAlerts=draw(st.integers(0, 10**6)))
    return message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
lone_surrogates = st.builds(lambda a, s, b: a + s + b, st.text(max_size=5),
                            st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                            st.text(max_size=5))
out_of_range_times = st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                                      "2024-02-30T00:00:00Z", "2024-05-01T24:00:00Z",
                                      "2024-05-01T10:00:60Z", "0000-01-01T00:00:00Z"])
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T")
_HEX = re.compile(r"^[0-9a-fA-F]{1,64}$")


def _not(*allowed: Any) -> st.SearchStrategy[Any]:
    return json_values.filter(lambda v: not any(v == a and type(v) is type(a) for a in allowed))


# Per field of a valid message: values that make it invalid.
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "version": _not("4"),
    "status": _not("firing", "resolved"),
    "alerts": json_values.filter(lambda v: not isinstance(v, list)) | st.just([]),
    "truncatedAlerts": json_values.filter(
        lambda v: v is not None and not (type(v) is int and v >= 0)),
    "receiver": json_values.filter(lambda v: v is not None and not isinstance(v, str))
    | lone_surrogates,
    "groupLabels": json_values.filter(lambda v: v is not None and not isinstance(v, dict)),
    "commonLabels": st.dictionaries(label_names, json_values.filter(
        lambda v: not isinstance(v, str)), min_size=1, max_size=2),
    "alerts.0": json_values.filter(lambda v: not isinstance(v, dict)),
    "alerts.0.status": _not("firing", "resolved"),
    "alerts.0.labels": json_values.filter(lambda v: not isinstance(v, dict)),
    "alerts.0.labels.alertname": json_values.filter(lambda v: not isinstance(v, str))
    | lone_surrogates,
    "alerts.0.annotations": st.dictionaries(
        st.text(max_size=8).filter(lambda k: re.fullmatch(r"[a-zA-Z_]\w*", k, re.A) is None),
        st.text(max_size=5), min_size=1, max_size=2),
    "alerts.0.startsAt": json_values.filter(
        lambda v: not (isinstance(v, str) and _RFC3339.match(v))) | out_of_range_times,
    "alerts.0.endsAt": json_values.filter(
        lambda v: v is not None and not (isinstance(v, str) and _RFC3339.match(v)))
    | out_of_range_times,
    "alerts.0.fingerprint": json_values.filter(
        lambda v: not (isinstance(v, str) and _HEX.match(v)))
    | st.sampled_from(["../../etc/passwd", "abc/def", "0x1f", "a" * 65, ""]),
    "alerts.0.generatorURL": json_values.filter(
        lambda v: v is not None and not isinstance(v, str)) | lone_surrogates,
}
_MISSING = st.sampled_from(["version", "status", "alerts", "alerts.0.status", "alerts.0.labels",
                            "alerts.0.startsAt", "alerts.0.fingerprint"])


def _set(message: dict[str, Any], dotted: str, value: Any, delete: bool = False) -> None:
    *parents, last = dotted.split(".")
    node: Any = message
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    elif delete:
        node.pop(last, None)
    else:
        node[last] = value


def _post(category: str, body: bytes, verdict: str, **kw: Any) -> Probe:
    return Probe(category, "POST", kw.pop("target", ALERTS), body, verdict=verdict, **kw)


content_types_ok = st.sampled_from([JSON_TYPE, "application/json; charset=utf-8",
                                    "Application/JSON", "application/json;charset=UTF-8"])


@st.composite
def valid_alerts(draw: st.DrawFn) -> Probe:
    return _post("valid_alerts", _json(draw(messages())), "valid",
                 content_type=draw(content_types_ok))


@st.composite
def wrong_types(draw: st.DrawFn) -> Probe:
    message = draw(messages())
    if draw(st.integers(0, 4)) == 0:
        _set(message, draw(_MISSING), None, delete=True)
    else:
        target = draw(st.sampled_from(sorted(BAD_VALUES)))
        _set(message, target, draw(BAD_VALUES[target]))
    return _post("wrong_types", _json(message), "invalid_payload")


@st.composite
def arbitrary_json(draw: st.DrawFn) -> Probe:
    return _post("arbitrary_json", _json(draw(json_values)), "invalid_payload")


def _parses(body: bytes) -> bool:
    def reject(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(body, parse_constant=reject)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        return False
    return True


@st.composite
def invalid_json(draw: st.DrawFn) -> Probe:
    valid = _json(draw(messages()))
    kind = draw(st.sampled_from(["cut", "bytes", "nan", "quotes", "garbage", "latin1",
                                 "empty", "bigint"]))
    body = {
        "cut": lambda: valid[: draw(st.integers(0, len(valid) - 1))],
        "bytes": lambda: draw(st.binary(max_size=200)),
        "nan": lambda: valid.replace(b'"4"', draw(st.sampled_from([b"NaN", b"Infinity",
                                                                   b"-Infinity"])), 1),
        "quotes": lambda: valid.replace(b'"', b"'"),
        "garbage": lambda: valid + b"x" + draw(st.binary(max_size=20)),
        "latin1": lambda: b'{"version": "4", "status": "firing", "x": "caf\xe9"}',
        "empty": lambda: b"",
        "bigint": lambda: b'{"truncatedAlerts": ' + b"9" * 5000 + b"}",
    }[kind]()
    if _parses(body):  # random bytes that happen to be JSON (b"1", UTF-16 "[]"): no message
        return _post("invalid_json", body, "invalid_payload")
    return _post("invalid_json", body, "invalid_json")


@st.composite
def deep_nesting(draw: st.DrawFn) -> Probe:
    # Up to 40 KB of brackets or 120 KB of objects (413 beyond 64 KiB), and
    # densely around the recursion limit, where the parser and the error
    # messages part ways.
    depth = draw(st.integers(1, 20_000) | st.integers(960, 1010))
    opener, closer, leaf = draw(st.sampled_from([(b"[", b"]", b""), (b'{"a":', b"}", b"1")]))
    nested = opener * depth + leaf + closer * depth
    where = draw(st.sampled_from(["top", "version", "status", "alerts", "labels", "reason"]))
    if where == "reason":
        return _post("deep_nesting", b'{"reason": ' + nested + b"}", "too_deep", target=TRIGGER)
    if where == "top":
        body = nested
    elif where == "labels":
        body = (b'{"version": "4", "status": "firing", "alerts": [{"status": "firing", '
                b'"startsAt": "2024-05-01T10:00:00Z", "fingerprint": "ab", "labels": '
                b'{"alertname": ' + nested + b"}}]}")
    else:
        rest = {"version": b'"4"', "status": b'"firing"', "alerts": b"[1]"}
        rest[where] = nested
        body = b"{" + b", ".join(b'"%s": %s' % (k.encode(), v) for k, v in rest.items()) + b"}"
    return _post("deep_nesting", body, "too_deep")


@st.composite
def huge_bodies(draw: st.DrawFn) -> Probe:
    target = draw(st.sampled_from(POST_PATHS))
    authorization = draw(st.sampled_from([f"Bearer {TOKEN}"] * 4 + [None, "Bearer wrong"]))
    how = draw(st.sampled_from(["length", "chunked", "announce"]))
    if how == "announce":
        return Probe("huge_body", "POST", target, b"", authorization, transfer="announce",
                     announced=draw(st.integers(CAP, 10**12)), verdict="invalid_json")
    # Below waitress' cap, so all of it is read and the webhook answers; a
    # client still sending when waitress refuses would see a reset instead.
    top = CAP - 1 if how == "length" else CAP - 1024
    size = draw(st.integers(LIMIT + 1, top) | st.just(LIMIT + 1))
    return Probe("huge_body", "POST", target, b" " * size, authorization, transfer=how,
                 verdict="invalid_json")


_TOKEN_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
wrong_content_types = st.sampled_from([
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/jsonp", "text/json", "application/json-seq",
    "application/problem+json", "*/*", "application", "json",
]) | st.text(_TOKEN_CHARS, min_size=1, max_size=30).filter(
    lambda t: _mimetype(t) != JSON_TYPE and '"' not in t and "," not in t)


@st.composite
def content_types(draw: st.DrawFn) -> Probe:
    target = draw(st.sampled_from(POST_PATHS))
    body = _json(draw(messages())) if target == ALERTS else b'{"reason": "fuzz"}'
    return _post("content_type", body, "valid", target=target,
                 content_type=draw(wrong_content_types))


@st.composite
def tokens(draw: st.DrawFn) -> Probe:
    target = draw(st.sampled_from(POST_PATHS))
    authorization = draw(st.sampled_from([
        None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Token {TOKEN}", TOKEN,
        f"Bearer{TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Bearer {TOKEN.upper()}",
        f"Bearer {TOKEN} {TOKEN}", f"Bearer x{TOKEN}", "Bearer " + "a" * 5000,
        # Right token, other spellings the scheme allows: accepted.
        f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN}",
    ]) | st.builds(lambda t: f"Bearer {t}", st.text(_TOKEN_CHARS, max_size=60))
       | st.text(_TOKEN_CHARS, max_size=60))
    body = _json(draw(messages())) if target == ALERTS else b""
    return _post("auth", body, "valid", target=target, authorization=authorization)


_SEGMENT = st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@", max_size=12)
_ESCAPE = st.sampled_from(["%2F", "%2e", "%00", "%ff", "%C0%AF", "%zz", "%", "%68", "%61", "%20"])
unknown_paths = st.one_of(
    st.lists(st.one_of(_SEGMENT, _ESCAPE), min_size=1, max_size=5).map(lambda s: "/" + "/".join(s)),
    st.sampled_from(GET_PATHS + POST_PATHS).flatmap(lambda p: st.sampled_from([
        p + "/", p.upper(), "/" + p, p + "/x", p + "%2F", "/" + p[1:].replace("/", "%2F"),
        p.replace("a", "%61"), "/x/.." + p, "/." + p, p + ".bak", p[:-1],
        # A slash doubled before the last segment: 404 inside a path, the same
        # path when it is the leading one (/alerts).
        p[:p.rfind("/")] + "/" + p[p.rfind("/"):]])),
)


@st.composite
def methods_and_paths(draw: st.DrawFn) -> Probe:
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(GET_PATHS + POST_PATHS) | unknown_paths)
    body, verdict = b"", "valid"
    if method == "POST" and _path(target) == ALERTS:
        body = _json(draw(messages()))
    elif method in ("POST", "PUT", "PATCH") and draw(st.booleans()):
        body, verdict = b'{"reason": "fuzz"}', "valid"
    authorization = draw(st.sampled_from([f"Bearer {TOKEN}", None, "Bearer wrong"]))
    return Probe("method_path", method, target, body, authorization, verdict=verdict)


_PARAM_VALUES = st.one_of(
    st.integers(-10, 10**13).map(str), st.text(max_size=12),
    # Arabic-Indic one and superscript two: isdigit() but not ASCII.
    st.sampled_from(["", "1.5", "1e2", "0x10", "\u0661", "\u00b2", " 5", "5 ", "+5", "-0",
                     "00000000000001", "0" * 13, "100", "101", "0"]))
_PARAM_NAMES = st.sampled_from(["limit", "offset"]) | st.text(max_size=8)


@st.composite
def query_params(draw: st.DrawFn) -> Probe:
    path = draw(st.sampled_from(GET_PATHS) | st.just(RETRAINING))
    if draw(st.integers(0, 5)) == 0:  # raw, possibly malformed escapes
        query = draw(st.text("abcdeflimoftsx=&;%+0123456789zZ", max_size=30))
    else:
        query = urllib.parse.urlencode(draw(st.lists(st.tuples(_PARAM_NAMES, _PARAM_VALUES),
                                                     max_size=3)))
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD"]))
    return Probe("query_params", method, f"{path}?{query}", authorization=None,
                 content_type=None)


@st.composite
def trigger_bodies(draw: st.DrawFn) -> Probe:
    data: dict[str, Any] = {}
    valid = True
    for key in TRIGGER_KEYS:
        if draw(st.booleans()):
            continue
        good = {"reason": st.text(st.characters(categories=["L", "N", "P", "S"]) | st.just(" "),
                                  min_size=1, max_size=500).filter(lambda r: r.strip() != ""),
                "force_full_retrain": st.booleans(),
                "model_type": st.just("agent_selection")}[key]
        if draw(st.integers(0, 2)):
            data[key] = draw(good)
        else:
            bad = {"reason": json_values.filter(lambda v: not isinstance(v, str))
                   | st.sampled_from(["", "   ", "a" * 501, "two\nlines", "tab\there", "nul\x00"])
                   | lone_surrogates,
                   "force_full_retrain": json_values.filter(lambda v: not isinstance(v, bool)),
                   "model_type": _not("agent_selection")}[key]
            data[key] = draw(bad)
            valid = False
    if draw(st.integers(0, 5)) == 0:
        data[draw(st.text(max_size=10).filter(lambda k: k not in TRIGGER_KEYS))] = 1
        valid = False
    body: Any = data if draw(st.integers(0, 8)) else draw(json_values.filter(
        lambda v: not isinstance(v, dict)))
    verdict = "valid" if valid and isinstance(body, dict) else "invalid_request"
    return _post("trigger_body", _json(body), verdict, target=TRIGGER)


@st.composite
def http_framing(draw: st.DrawFn) -> Probe:
    head = f"POST {ALERTS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
    kind = draw(st.sampled_from(["length", "header", "chunk", "coding"]))
    verdict = "bad_framing"
    if kind == "length":
        value = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
                     .filter(lambda v: not v.strip().isdigit()))
        raw = f"{head}Content-Length: {value}\r\n\r\n".encode()
    elif kind == "header":
        # No colon, or nothing before it; not starting with a space (that is
        # obs-fold, a continuation of the header before).
        line = draw(st.text("abcXYZ- ", min_size=1, max_size=12).filter(
            lambda n: not n[0].isspace()) | st.text("abc ", max_size=8).map(lambda v: ": " + v))
        raw = f"{head}{line}\r\nContent-Length: 0\r\n\r\n".encode()
    elif kind == "chunk":
        size = draw(st.text("ghijkxyzGHZ-+", min_size=1, max_size=6))
        raw = f"{head}Transfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n".encode()
    else:
        coding = draw(st.sampled_from(["gzip", "deflate", "identity", "compress",
                                       "chunked, gzip", "br"]))
        raw = f"{head}Transfer-Encoding: {coding}\r\n\r\n0\r\n\r\n".encode()
        verdict = "unsupported_coding"
    return Probe("http_framing", "POST", ALERTS, raw=raw, verdict=verdict)


PROBES = st.one_of(valid_alerts(), wrong_types(), arbitrary_json(), invalid_json(),
                   deep_nesting(), huge_bodies(), content_types(), tokens(),
                   methods_and_paths(), query_params(), trigger_bodies(), http_framing())


# -- sending -----------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage | None
    body: bytes


@dataclass
class Tally:
    """What was sent and answered, across all batches (shrinking included)."""

    requests: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    by_category_status: dict[str, Counter[int]] = field(default_factory=dict)
    webhook_rejections: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, probe: Probe, expected: Expected, response: Response) -> None:
        with self.lock:
            self.requests += 1
            self.by_category[probe.category] += 1
            self.statuses[response.status] += 1
            self.by_category_status.setdefault(probe.category, Counter())[response.status] += 1
            if 400 <= response.status < 500 and not expected.by_waitress:
                # The webhook counts every refusal in autoretrain_webhook_requests_rejected_total.
                reason = json.loads(response.body)["error"] if response.body else \
                    expected.error or "?"
                self.webhook_rejections[reason] += 1


class Client:
    """Keep-alive connections, one per sending thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()
        self.reconnects = 0

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.local.conn = conn
        return conn

    def send(self, probe: Probe) -> Response:
        if probe.raw is not None:
            return self._send_raw(probe.raw)
        try:
            return self._send(self._connection(), probe)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed an idle keep-alive connection (e.g. after a
            # waitress 413): what every HTTP client does, once, on a new one.
            self.reconnects += 1
            return self._send(self._connection(fresh=True), probe)
        except BaseException:
            # Any other failure leaves the connection mid-exchange: the next
            # request (of a later batch, or of Hypothesis' replay) needs a new one.
            self._connection(fresh=True)
            raise

    def _send(self, conn: http.client.HTTPConnection, probe: Probe) -> Response:
        headers: dict[str, str] = {}
        if probe.authorization is not None:
            headers["Authorization"] = probe.authorization
        if probe.content_type is not None:
            headers["Content-Type"] = probe.content_type
        if probe.transfer == "announce":
            conn.putrequest(probe.method, probe.target)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(probe.announced))
            conn.endheaders()
        elif probe.transfer == "chunked":
            pieces = iter([probe.body[i:i + 16384] for i in range(0, len(probe.body), 16384)])
            conn.request(probe.method, probe.target, body=pieces, headers=headers,
                         encode_chunked=True)
        else:
            conn.request(probe.method, probe.target, body=probe.body, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.will_close or probe.transfer == "announce":
            self._connection(fresh=True)
        return Response(response.status, response.headers, body)

    def _send_raw(self, raw: bytes) -> Response:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(raw)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        status_line = data.partition(b"\r\n")[0].split()
        return Response(int(status_line[1]), None, data)


def check(probe: Probe, response: Response) -> Expected:
    """Assert ``response`` is what the contract says for ``probe``."""
    expected = expect(probe)
    where = f"{probe.category}: {probe.method} {probe.target[:120]} -> {response.status}"
    if probe.verdict != "unsupported_coding":
        assert response.status < 500, f"{where}: {response.body[:300]!r}"
    assert response.status == expected.status, f"{where}, expected {expected.status}: " \
        f"{response.body[:300]!r}"
    path, method = _path(probe.target), "GET" if probe.method == "HEAD" else probe.method
    if (path, method) in DOCUMENTED and not expected.by_waitress:
        assert response.status in DOCUMENTED[path, method], f"{where}: not in openapi.yaml"
    assert b"Traceback" not in response.body, where
    if response.status >= 400 and not expected.by_waitress:
        assert response.headers is not None
        if probe.method != "HEAD":
            assert response.headers.get_content_type() == JSON_TYPE, where
            error = json.loads(response.body)
            assert set(error) == {"error", "message"}, where
            if expected.error is not None:
                assert error["error"] == expected.error, f"{where}: {error}"
        if response.status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), where
        if response.status == 405:
            assert response.headers["Allow"], where
    return expected


# -- the test ------------------------------------------------------------------------------
@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[WebhookProcess]:
    process = WebhookProcess(tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


def rejected_counts(webhook: WebhookProcess) -> Counter[str]:
    status, _, body = webhook.request("GET", "/metrics")
    assert status == 200
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "autoretrain_webhook_requests_rejected_total" and sample.value:
                counts[sample.labels["reason"]] = int(sample.value)
    return counts


def test_fuzz_every_endpoint(webhook: WebhookProcess) -> None:
    started = time.monotonic()
    tally = Tally()
    client = Client(webhook.port)
    with ThreadPoolExecutor(CONNECTIONS, thread_name_prefix="fuzz") as pool:

        # No shrinking: against a live server it would replay batches for many
        # minutes; the failing batch is reported as drawn, and check() names the
        # request that broke the contract.
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(PROBES, min_size=8, max_size=12))
        def fuzz(batch: list[Probe]) -> None:
            for probe, response in zip(batch, pool.map(client.send, batch), strict=True):
                expected = check(probe, response)
                tally.add(probe, expected, response)

        fuzz()
    elapsed = time.monotonic() - started
    tally.reconnects = client.reconnects

    # Still serving, and correctly.
    assert webhook.proc is not None and webhook.proc.poll() is None
    assert webhook.request("GET", "/healthz")[0] == 200
    body = json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "AfterFuzz", "retrain": "incremental"},
         "startsAt": "2030-01-01T00:00:00Z", "fingerprint": "affe"}]}).encode()
    status, _, answer = webhook.request(
        "POST", ALERTS, body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": JSON_TYPE})
    assert status == 202 and json.loads(answer)["decisions"][0]["action"] in (
        "queued_incremental", "cooldown")
    log = webhook.log.read_text()
    assert "Traceback" not in log and "unhandled error" not in log and TOKEN not in log
    assert rejected_counts(webhook) == tally.webhook_rejections
    assert tally.requests >= MIN_REQUESTS, tally.requests

    five_xx = {s: n for s, n in tally.statuses.items() if s >= 500}
    record_figures("http_fuzz", {
        "command": "python -m pytest tests/integration/test_fuzz_http.py",
        "requests": tally.requests,
        "batches": EXAMPLES,
        "connections": CONNECTIONS,
        "by_category": dict(sorted(tally.by_category.items())),
        "statuses": {str(s): n for s, n in sorted(tally.statuses.items())},
        "statuses_by_category": {c: {str(s): n for s, n in sorted(h.items())}
                                 for c, h in sorted(tally.by_category_status.items())},
        "webhook_rejections_by_reason": dict(sorted(tally.webhook_rejections.items())),
        "five_xx": {str(s): n for s, n in five_xx.items()},
        "five_xx_note": "501 only: waitress, Transfer-Encoding it does not implement "
                        "(RFC 9112 6.1); the webhook itself answered no 5xx",
        "reconnects_after_server_close": tally.reconnects,
        "max_body_bytes": LIMIT,
        "runtime_s": round(elapsed, 1),
        "requests_per_s": round(tally.requests / elapsed),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    print(f"\nfuzzed {tally.requests} requests in {elapsed:.1f} s: "
          f"{dict(sorted(tally.statuses.items()))}")


def record_figures(key: str, figures: dict[str, Any]) -> None:
    """Merge ``figures`` under ``key`` into reliability/webhook.json (RELIABILITY.md cites it)."""
    _record(_REPO / "reliability" / "webhook.json", key, figures)
