"""Real Kafka, Prometheus and Alertmanager servers started as local processes for tests.

Nothing here runs at import time; the fixtures in ``tests/conftest.py`` build and
start the servers. Install the servers with ``scripts/install-test-deps``.
"""

from .alertmanager import AlertmanagerFactory, AlertmanagerServer
from .common import ServerProcess, ServerStartError, ServerUnavailableError, free_port
from .kafka import KafkaServer, default_kafka_libs
from .prometheus import PrometheusFactory, PrometheusServer

__all__ = [
    "AlertmanagerFactory",
    "AlertmanagerServer",
    "KafkaServer",
    "PrometheusFactory",
    "PrometheusServer",
    "ServerProcess",
    "ServerStartError",
    "ServerUnavailableError",
    "default_kafka_libs",
    "free_port",
]
