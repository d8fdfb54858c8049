"""Alertmanager (Debian's 0.25 package) as a test server."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from .common import ConfiguredHTTPServer, http_get_json, require_executable

__all__ = ["AlertmanagerFactory", "AlertmanagerServer"]


class AlertmanagerServer(ConfiguredHTTPServer):
    """Alertmanager on a free 127.0.0.1 port reading ``config`` (a file the test wrote).

    Shrink ``group_wait``/``group_interval``/``repeat_interval`` in test configs;
    the defaults (30s, 5m, 4h) are far longer than a test.
    """

    name = "alertmanager"

    default_binary = "prometheus-alertmanager"

    def _command(self) -> Sequence[str]:
        return [
            require_executable(self.binary, "Alertmanager"),
            f"--config.file={self.config}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Empty turns gossip off: otherwise it binds 0.0.0.0:9094, which
            # clashes between parallel servers and waits for cluster settle.
            "--cluster.listen-address=",
            # Stable externalURL in webhook payloads (default uses the hostname).
            f"--web.external-url={self.url}",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager currently holds (GET /api/v2/alerts)."""
        result: list[dict[str, Any]] = http_get_json(f"{self.url}/api/v2/alerts")
        return result


class AlertmanagerFactory(Protocol):
    """Type of the ``alertmanager_factory`` fixture: YAML text (str) or a path -> started server."""

    def __call__(
        self, config: str | os.PathLike[str], port: int | None = None
    ) -> AlertmanagerServer: ...
