"""A single-node KRaft Kafka 4.1 broker run from the Maven jars of scripts/install-kafka."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import (
    INSTALL_HINT,
    ServerProcess,
    ServerUnavailableError,
    free_port,
    log_tail,
    require_executable,
)
from .tls import BrokerKeystore

__all__ = ["KafkaServer", "default_kafka_libs"]

_REPO = Path(__file__).resolve().parents[2]
_LOG4J_CONFIG = _REPO / "scripts" / "kafka" / "log4j2.properties"


def default_kafka_libs() -> Path:
    """Jar dir of scripts/install-kafka: $AUTORETRAIN_KAFKA_LIBS or <repo>/.cache/kafka/libs."""
    env = os.environ.get("AUTORETRAIN_KAFKA_LIBS")
    return Path(env) if env else _REPO / ".cache" / "kafka" / "libs"


def _cluster_id() -> str:
    """A random id as `StorageTool random-uuid` makes it, without paying a JVM start."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Like Kafka's Uuid.randomUuid: an id starting with "-" would be read
        # as an option by StorageTool's argument parser (1 start in 64 failed).
        if not text.startswith("-"):
            return text


class KafkaServer(ServerProcess):
    """Kafka broker+controller in one JVM, listening on two free 127.0.0.1 ports.

    ``bootstrap`` is the client address. Data lives in ``workdir/data`` and
    survives ``kill()``/``restart()``, so tests can crash the broker and bring
    it back at the same address with the same topics and offsets.

    Optional extra client listeners, beside the PLAINTEXT one the tests and
    the broker itself use: ``sasl_plain_users`` (username -> password) adds a
    SASL_PLAINTEXT listener with the PLAIN mechanism at ``sasl_bootstrap``;
    ``scram_users`` (username -> password) enables SCRAM-SHA-256 and
    SCRAM-SHA-512 on it too (the credentials are written when the storage is
    formatted, ``--add-scram``, as KRaft wants them before the first start);
    ``ssl_keystore`` (see :func:`~servers.tls.make_broker_keystore`) adds an
    SSL listener at ``ssl_bootstrap``, with SASL users also a SASL_SSL one
    at ``sasl_ssl_bootstrap``, and with ``mtls`` an SSL listener that
    requires a client certificate signed by the test CA at ``mtls_bootstrap``.
    """

    name = "kafka"
    # A cold JVM on a busy 2-core CI box; the usual start is a few seconds.
    start_timeout = 90.0
    stop_timeout = 20.0

    def __init__(
        self,
        workdir: Path,
        libs: Path | None = None,
        java: str = "java",
        heap: str = "512m",
        extra_properties: dict[str, str] | None = None,
        sasl_plain_users: dict[str, str] | None = None,
        ssl_keystore: BrokerKeystore | None = None,
        scram_users: dict[str, str] | None = None,
        mtls: bool = False,
    ) -> None:
        super().__init__(workdir)
        self.libs = default_kafka_libs() if libs is None else libs
        self.java = java
        self.heap = heap
        # free_port() never hands out a port twice: each listener gets its own.
        self.port = free_port()
        self.controller_port = free_port()
        self.data_dir = workdir / "data"
        self.logs_dir = workdir / "logs"
        self.properties_path = workdir / "server.properties"
        self.extra_properties = dict(extra_properties or {})
        self.sasl_plain_users = dict(sasl_plain_users or {})
        self.ssl_keystore = ssl_keystore
        self.scram_users = dict(scram_users or {})
        sasl = bool(self.sasl_plain_users or self.scram_users)
        if mtls and ssl_keystore is None:
            raise ValueError("mtls needs ssl_keystore")
        self.sasl_port = free_port() if sasl else None
        self.ssl_port = free_port() if ssl_keystore is not None else None
        self.sasl_ssl_port = free_port() if sasl and ssl_keystore is not None else None
        self.mtls_port = free_port() if mtls else None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """``host:port`` of the SASL_PLAINTEXT (PLAIN) listener."""
        if self.sasl_port is None:
            raise ValueError("this broker was started without sasl_plain_users")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        """``host:port`` of the SSL listener."""
        if self.ssl_port is None:
            raise ValueError("this broker was started without ssl_keystore")
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """``host:port`` of the SASL_SSL listener (same users and mechanisms as SASL)."""
        if self.sasl_ssl_port is None:
            raise ValueError("this broker was started without SASL users and ssl_keystore")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def mtls_bootstrap(self) -> str:
        """``host:port`` of the SSL listener that requires a client certificate."""
        if self.mtls_port is None:
            raise ValueError("this broker was started without mtls")
        return f"127.0.0.1:{self.mtls_port}"

    def _sasl_listener(self, name: str) -> dict[str, str]:
        """SASL settings of listener ``name`` (lower case): its mechanisms and logins."""
        mechanisms = (["PLAIN"] if self.sasl_plain_users else []) + (
            ["SCRAM-SHA-256", "SCRAM-SHA-512"] if self.scram_users else [])
        props = {f"listener.name.{name}.sasl.enabled.mechanisms": ",".join(mechanisms)}
        if self.sasl_plain_users:
            # The broker's own login (unused: brokers talk over PLAINTEXT) and
            # one user_<name>="<password>" entry per client user.
            users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_plain_users.items())
            props[f"listener.name.{name}.plain.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="broker" password="broker" {users};')
        for mechanism in mechanisms[1 if self.sasl_plain_users else 0:]:
            # SCRAM users live in the cluster metadata (--add-scram at format time).
            props[f"listener.name.{name}.{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        return props

    def _ssl_listener(self, name: str, client_auth: str) -> dict[str, str]:
        assert self.ssl_keystore is not None
        ks = self.ssl_keystore
        props = {
            f"listener.name.{name}.ssl.keystore.type": "PKCS12",
            f"listener.name.{name}.ssl.keystore.location": str(ks.keystore),
            f"listener.name.{name}.ssl.keystore.password": ks.password,
            f"listener.name.{name}.ssl.key.password": ks.password,
            f"listener.name.{name}.ssl.client.auth": client_auth,
        }
        if client_auth == "required":
            props.update({
                f"listener.name.{name}.ssl.truststore.type": "PKCS12",
                f"listener.name.{name}.ssl.truststore.location": str(ks.truststore),
                f"listener.name.{name}.ssl.truststore.password": ks.password,
            })
        return props

    def _security_properties(self) -> tuple[list[str], dict[str, str]]:
        """The extra listeners (``NAME://host:port``) and their settings."""
        listeners: list[str] = []
        props: dict[str, str] = {}
        if self.sasl_port is not None:
            listeners.append(f"SASL_PLAINTEXT://{self.sasl_bootstrap}")
            props.update(self._sasl_listener("sasl_plaintext"))
        if self.ssl_keystore is not None:
            listeners.append(f"SSL://{self.ssl_bootstrap}")
            props.update(self._ssl_listener("ssl", "none"))
        if self.sasl_ssl_port is not None:
            listeners.append(f"SASL_SSL://{self.sasl_ssl_bootstrap}")
            props.update(self._sasl_listener("sasl_ssl"))
            props.update(self._ssl_listener("sasl_ssl", "none"))
        if self.mtls_port is not None:
            listeners.append(f"MTLS://{self.mtls_bootstrap}")
            props.update(self._ssl_listener("mtls", "required"))
        return listeners, props

    def _properties(self) -> dict[str, str]:
        controller = f"127.0.0.1:{self.controller_port}"
        extra_listeners, security = self._security_properties()
        listeners = ",".join(
            [f"PLAINTEXT://{self.bootstrap}", f"CONTROLLER://{controller}", *extra_listeners])
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" + "".join(
            f",{name}:{protocol}" for name, protocol in (
                ("SASL_PLAINTEXT", "SASL_PLAINTEXT"), ("SSL", "SSL"),
                ("SASL_SSL", "SASL_SSL"), ("MTLS", "SSL"))
            if any(x.startswith(name + "://") for x in extra_listeners))
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # The internal topics default to 50 partitions each; creating them on
            # the first consumer group / transaction costs seconds on 2 cores.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            # After kill() the controller keeps the dead broker's registration
            # until its session expires (default 9s) and rejects the restarted
            # one as a duplicate meanwhile. A short session makes restart() fast;
            # heartbeats every 500ms keep a busy broker from being fenced.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
        }
        props.update(security)
        props.update(self.extra_properties)
        return props

    def _prepare(self) -> None:
        require_executable(self.java, "Java 17+")
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise ServerUnavailableError(f"Kafka jars not found in {self.libs}; {INSTALL_HINT}")
        if not _LOG4J_CONFIG.is_file():
            raise ServerUnavailableError(f"{_LOG4J_CONFIG} is missing")
        self.logs_dir.mkdir(exist_ok=True)
        text = "".join(f"{k}={v}\n" for k, v in self._properties().items())
        self.properties_path.write_text(text)
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage()

    def _jvm(self, *args: str, heap: str) -> list[str]:
        return [
            self.java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            # Serial GC and C1-only JIT: start in ~3s instead of ~6.5s on 2 cores,
            # and a test broker never runs long enough for C2 to pay off.
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def _format_storage(self) -> None:
        scram = [arg for user, password in self.scram_users.items()
                 for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                 for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")]
        cmd = self._jvm(
            "kafka.tools.StorageTool", "format", "--standalone",
            "-t", _cluster_id(), "-c", str(self.properties_path), *scram,
            heap="128m",
        )  # fmt: skip
        try:
            with self.log_path.open("ab") as log:
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=60)
        except subprocess.CalledProcessError as exc:
            self._fail(f"storage format exited with code {exc.returncode}", cmd)
        except subprocess.TimeoutExpired:
            self._fail("storage format did not finish within 60s", cmd)

    def _command(self) -> Sequence[str]:
        return self._jvm("kafka.Kafka", str(self.properties_path), heap=self.heap)

    def _diagnostics(self) -> str:
        return (
            f"{log_tail(self.log_path, 20)}\n--- {self.logs_dir / 'server.log'} ---\n"
            f"{log_tail(self.logs_dir / 'server.log')}"
        )

    def _ready(self) -> bool:
        # A cheap TCP probe first, so the client below does not log a stream of
        # connection errors while the JVM boots.
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        # The port opens before the broker has registered with its controller;
        # only a metadata answer listing a broker means clients will work.
        try:
            admin = self._admin(bootstrap_timeout_ms=2000)
        except Exception:  # any client error here just means "not ready yet"
            return False
        try:
            return bool(admin.describe_cluster()["brokers"])
        except Exception:
            return False
        finally:
            admin.close()

    def _admin(self, bootstrap_timeout_ms: int = 10000) -> Any:  # a KafkaAdminClient (untyped)
        # Imported lazily: importing this module must not need kafka-python.
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="autoretrain-tests",
            bootstrap_timeout_ms=bootstrap_timeout_ms,
            request_timeout_ms=10000,
        )

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
        """Create ``name`` and return once every partition has a leader (ready to produce to)."""
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        admin = self._admin()
        try:
            admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
            # CreateTopics answers before leaders are known to the broker's
            # metadata cache; a producer sent too early gets UnknownTopicOrPartition.
            deadline = time.monotonic() + timeout
            while True:
                (topic,) = admin.describe_topics([name])
                parts = topic.get("partitions") or []
                if (
                    topic.get("error_code") == 0
                    and len(parts) == partitions
                    and all(p["error_code"] == 0 and p["leader_id"] >= 0 for p in parts)
                ):
                    return
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"topic {name!r} has no leaders after {timeout:.0f}s: {topic}"
                    )
                time.sleep(0.05)
        finally:
            admin.close()
