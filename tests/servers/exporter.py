"""``python -m autoretrain.exporter`` as a process, configured by its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .common import free_port

__all__ = ["ExporterProcess", "exporter_env"]


def exporter_env(bootstrap: str, topic: str, group: str | None = None,
                 **kafka: str) -> dict[str, str]:
    """The exporter's variables: Kafka servers, topic, group (default ``g-<topic>``) and
    ``AUTORETRAIN_EXPORTER_KAFKA_<KEY>`` for each security setting in ``kafka``."""
    env = {"AUTORETRAIN_EXPORTER_KAFKA_SERVERS": bootstrap,
           "AUTORETRAIN_EXPORTER_TOPIC": topic,
           "AUTORETRAIN_EXPORTER_GROUP": group or f"g-{topic}"}
    env.update({f"AUTORETRAIN_EXPORTER_KAFKA_{k.upper()}": v for k, v in kafka.items()})
    return env


class ExporterProcess:
    """The standalone exporter on a free port of 127.0.0.1, its output in a log file."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"exporter-{self.port}.log"
        self.base = f"http://127.0.0.1:{self.port}"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autoretrain.exporter", "--listen-address", "127.0.0.1",
                 "--port", str(self.port)],
                env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        """Terminate (kill after 15 s); the exit status."""
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
