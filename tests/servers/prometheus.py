"""Prometheus (Debian's 2.42 package) as a test server, with a tiny HTTP API client."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .common import (
    ConfiguredHTTPServer,
    http_get_json,
    poll_until,
    require_executable,
)

__all__ = ["PrometheusFactory", "PrometheusServer"]

Vector = list[dict[str, Any]]


class PrometheusServer(ConfiguredHTTPServer):
    """Prometheus on a free 127.0.0.1 port reading ``config`` (a file the test wrote).

    Use ``scrape_interval`` and ``evaluation_interval`` of 1s in test configs.
    Rule files and other paths in the config resolve relative to its directory.
    """

    name = "prometheus"

    default_binary = "prometheus"

    def _command(self) -> Sequence[str]:
        return [
            require_executable(self.binary, "Prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Resend firing alerts every second: the first one can be lost
            # before the Alertmanager is discovered (default resend is 1m).
            "--rules.alert.resend-delay=1s",
            f"--web.external-url={self.url}",
            "--web.enable-lifecycle",  # POST /-/reload, used by reload()
        ]

    def reload(self) -> None:
        """Re-read the config file (POST /-/reload); raises on a config error."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def query(self, expr: str) -> Vector:
        """Instant query; the ``result`` list of the API answer (one dict per series)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        body = http_get_json(url)
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        result: Vector = body["data"]["result"]
        return result

    def wait_for(
        self, expr: str, predicate: Callable[[Vector], bool], timeout: float = 30.0
    ) -> Vector:
        """Poll ``query(expr)`` until ``predicate(result)``; TimeoutError shows the last result."""
        last: list[Vector] = [[]]

        def check() -> Vector | None:
            last[0] = self.query(expr)
            return last[0] if predicate(last[0]) else None

        try:
            return poll_until(check, timeout, interval=0.25, what=f"predicate on {expr!r}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last result: {last[0]}") from None


class PrometheusFactory(Protocol):
    """Type of the ``prometheus_factory`` fixture: YAML text (str) or a path -> started server."""

    def __call__(
        self, config: str | os.PathLike[str], port: int | None = None
    ) -> PrometheusServer: ...
