"""Refuse request paths that do not name one route unambiguously, before routing.

Werkzeug's router drops empty leading path segments, so ``//api/x`` (or
``///api/x``) reaches the handler of ``/api/x`` even with
``merge_slashes = False`` (which only refuses doubled slashes further in).
A proxy rule keyed on the exact path (SECURITY.md recommends one) would
then be sidestepped by a second slash. :class:`RejectAmbiguousPaths` is WSGI
middleware, the outermost layer of the webhook and of the selector, that
answers such paths with a JSON 404 before any routing, authentication or
fast path runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["RejectAmbiguousPaths", "ambiguous_path"]

_BODY = json.dumps({"error": "not_found",
                    "message": "no such path (a path starts with exactly one '/')"}).encode()


def ambiguous_path(path: str) -> bool:
    """True for a path the router would not take literally: it starts with ``//``."""
    return path.startswith("//")


class RejectAmbiguousPaths:
    """WSGI middleware: 404 JSON for :func:`ambiguous_path`; everything else to ``app``.

    ``on_reject()`` (optional) is called for each refused request (the
    webhook counts it as ``autoretrain_webhook_requests_rejected_total{reason="not_found"}``).
    """

    def __init__(self, app: Callable[..., Any],
                 on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.on_reject = on_reject

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not ambiguous_path(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        if self.on_reject is not None:
            self.on_reject()
        start_response("404 Not Found", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(_BODY))),
            ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store")])
        return [_BODY]
