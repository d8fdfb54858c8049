"""Kafka with SASL (PLAIN) and TLS, against a real broker with such listeners.

One broker for the module: a SASL_PLAINTEXT listener (user alice) and an SSL
listener whose keystore is signed by a CA generated here with keytool. The
standalone exporter process consumes over each; the updater consumes over
SASL; a wrong password and a wrong CA fail clearly without printing a secret.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from servers import KafkaServer, ServerStartError
from servers.common import http_get as get
from servers.common import wait_until
from servers.exporter import ExporterProcess, exporter_env
from servers.tls import BrokerKeystore, make_broker_keystore

from autoretrain.exporter.events import encode_event, run_event
from autoretrain.exporter.kafka_security import KafkaSecurity
from autoretrain.webhook.updater import RealTimeModelUpdater

PASSWORD = "alice-Pa55-" + uuid.uuid4().hex[:8]
WRONG = "wrong-Pa55-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> BrokerKeystore:
    return make_broker_keystore(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory,
                 tls: BrokerKeystore) -> Iterator[KafkaServer]:
    server = KafkaServer(tmp_path_factory.mktemp("kafka-secure"),
                         sasl_plain_users={"alice": PASSWORD}, ssl_keystore=tls)
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def topic(secure_kafka: KafkaServer) -> str:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    secure_kafka.create_topic(name)
    return name


def secret_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"password-{uuid.uuid4().hex[:6]}"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


def produce(bootstrap: str, topic: str, n: int, agent: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)  # the PLAINTEXT listener
    for i in range(n):
        event = run_event(f"{agent}-{i}", time.time(), agent, "llm", "success", 100.0, 2, 0.1)
        producer.send(topic, key=agent.encode(), value=encode_event(event))
    producer.flush()
    producer.close()


def wait(predicate, timeout: float) -> bool:
    return wait_until(predicate, timeout, interval=0.2)


def sasl_settings(tmp_path: Path, password: str) -> dict[str, str]:
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_username": "alice", "sasl_password_file": secret_file(tmp_path, password)}


@pytest.mark.parametrize("listener", ["sasl", "ssl"])
def test_exporter_consumes_over_sasl_and_tls(secure_kafka, tls, topic, tmp_path, listener):
    if listener == "sasl":
        env = exporter_env(secure_kafka.sasl_bootstrap, topic, **sasl_settings(tmp_path, PASSWORD))
    else:
        env = exporter_env(secure_kafka.ssl_bootstrap, topic, security_protocol="SSL",
                           ssl_cafile=str(tls.ca_pem))
    exporter = ExporterProcess(tmp_path, env)
    try:
        produce(secure_kafka.bootstrap, topic, 25, f"{listener}-agent")
        line = (f'autoretrain_agent_runs_total{{agent="{listener}-agent",agent_type="llm",'
                'status="success"} 25\n')
        assert wait(lambda: line in get(exporter.base + "/metrics")[1], 60), exporter.log()
        status, body = get(exporter.base + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True, body
    finally:
        exporter.stop()
    assert PASSWORD not in exporter.log()


def test_wrong_password_or_ca_fails_clearly_without_the_secret(secure_kafka, tls, topic,
                                                               tmp_path):
    wrong_password = ExporterProcess(tmp_path, exporter_env(
        secure_kafka.sasl_bootstrap, topic, **sasl_settings(tmp_path, WRONG)))
    wrong_ca = ExporterProcess(tmp_path, exporter_env(
        secure_kafka.ssl_bootstrap, topic, security_protocol="SSL",
        ssl_cafile=str(tls.other_ca_pem)))
    try:
        for exporter in (wrong_password, wrong_ca):
            assert wait(lambda e=exporter: "handshake failed" in get(e.base + "/readyz")[1],
                        60), exporter.log()
            status, body = get(exporter.base + "/readyz")
            assert status == 503
            assert "authentication failed or TLS was refused" in body
        assert "SASL_PLAINTEXT (PLAIN as alice)" in get(wrong_password.base + "/readyz")[1]
        assert wait(lambda: "CERTIFICATE_VERIFY_FAILED" in wrong_ca.log(), 30)
    finally:
        wrong_password.stop()
        wrong_ca.stop()
    for text in (wrong_password.log(), get(wrong_password.base + "/readyz")[1]):
        assert WRONG not in text and PASSWORD not in text


def test_updater_consumes_over_sasl(secure_kafka, topic, tmp_path):
    security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "alice",
                             sasl_password_file=secret_file(tmp_path, PASSWORD))
    produce(secure_kafka.bootstrap, topic, 40, "updater-agent")
    updater = RealTimeModelUpdater(
        kafka_servers=secure_kafka.sasl_bootstrap, kafka_topic=topic,
        consumer_group=f"u-{topic}", model_storage_path=str(tmp_path / "models"),
        batch_size=10, batch_timeout_seconds=0.2, kafka_security=security)
    updater.start()
    try:
        assert wait(lambda: updater.get_metrics()["events_applied"] >= 40, 60), \
            updater.get_metrics()
        assert updater.kafka_status() is None
    finally:
        updater.stop()
    assert updater.get_metrics()["events_applied"] == 40
    assert PASSWORD not in repr(updater.settings)


def test_updater_with_wrong_password_reports_it(secure_kafka, topic, tmp_path):
    security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "alice",
                             sasl_password_file=secret_file(tmp_path, WRONG))
    updater = RealTimeModelUpdater(
        kafka_servers=secure_kafka.sasl_bootstrap, kafka_topic=topic,
        consumer_group=f"u-{topic}", model_storage_path=str(tmp_path / "models"),
        kafka_security=security)
    updater.start()
    try:
        assert wait(lambda: "authentication failed" in (updater.kafka_status() or ""), 60), \
            updater.kafka_status()
        assert WRONG not in (updater.kafka_status() or "")
    finally:
        updater.stop()
