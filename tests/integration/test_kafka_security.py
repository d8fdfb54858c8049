"""Kafka with SASL (PLAIN, SCRAM-SHA-256/512), TLS and mutual TLS, against a real broker.

One broker for the module with every kind of listener: SASL_PLAINTEXT and
SASL_SSL (PLAIN user alice; SCRAM user carol, whose credentials the storage
format writes, ``--add-scram``), SSL, and an SSL listener that requires a
client certificate (mutual TLS). The CA, the broker's keystore and
truststore, and a client certificate with an encrypted key are generated
here (keytool, openssl). Each product client is run over them: the
standalone exporter process, the webhook process and the updater library
(consumers, and the model publisher), and the monitor's producer; secrets
come from files and from the environment. A wrong password, a wrong CA and
a missing client certificate fail clearly without printing a secret.
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
from servers.tls import (
    BrokerKeystore,
    ClientCertificate,
    make_broker_keystore,
    make_client_certificate,
)

from autoretrain.exporter.events import encode_event, run_event
from autoretrain.exporter.kafka_security import KafkaSecurity
from autoretrain.webhook.updater import RealTimeModelUpdater

PASSWORD = "alice-Pa55-" + uuid.uuid4().hex[:8]
WRONG = "wrong-Pa55-" + uuid.uuid4().hex[:8]
SCRAM_PASSWORD = "carol-Pa55-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> BrokerKeystore:
    return make_broker_keystore(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory,
                 tls: BrokerKeystore) -> Iterator[KafkaServer]:
    server = KafkaServer(tmp_path_factory.mktemp("kafka-secure"),
                         sasl_plain_users={"alice": PASSWORD}, ssl_keystore=tls,
                         scram_users={"carol": SCRAM_PASSWORD}, mtls=True)
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory,
                tls: BrokerKeystore) -> ClientCertificate:
    return make_client_certificate(tmp_path_factory.mktemp("client-tls"), tls)


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


# -- issue 13 item 14: SCRAM, SASL_SSL, mutual TLS; secrets from files and the environment ----
def client_settings(case: str, kafka: KafkaServer, tls: BrokerKeystore,
                    cert: ClientCertificate, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """(bootstrap, settings by KafkaSecurity field, as text) of one way to connect.

    ``*_env`` cases give their secret as ``sasl_password`` / ``ssl_password``
    (environment only); the others as ``*_password_file``.
    """
    if case == "scram256_env":
        return kafka.sasl_bootstrap, {
            "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "carol", "sasl_password": SCRAM_PASSWORD}
    if case == "scram512_sasl_ssl_file":
        return kafka.sasl_ssl_bootstrap, {
            "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "carol",
            "sasl_password_file": secret_file(tmp_path, SCRAM_PASSWORD),
            "ssl_cafile": str(tls.ca_pem)}
    if case == "scram512_sasl_ssl_env":
        return kafka.sasl_ssl_bootstrap, {
            "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "carol", "sasl_password": SCRAM_PASSWORD,
            "ssl_cafile": str(tls.ca_pem)}
    mtls = {"security_protocol": "SSL", "ssl_cafile": str(tls.ca_pem),
            "ssl_certfile": str(cert.certfile), "ssl_keyfile": str(cert.keyfile)}
    if case == "mtls_file":
        return kafka.mtls_bootstrap, {
            **mtls, "ssl_password_file": secret_file(tmp_path, cert.key_password)}
    if case == "mtls_env":
        return kafka.mtls_bootstrap, {**mtls, "ssl_password": cert.key_password}
    raise AssertionError(case)


def env_of(prefix: str, settings: dict[str, str]) -> dict[str, str]:
    return {f"{prefix}KAFKA_{k.upper()}": v for k, v in settings.items()}


def secrets_in(settings: dict[str, str], cert: ClientCertificate) -> list[str]:
    return [SCRAM_PASSWORD, PASSWORD, cert.key_password]


@pytest.mark.parametrize("case", ["scram256_env", "scram512_sasl_ssl_file", "mtls_file",
                                  "mtls_env"])
def test_exporter_consumes_over_scram_sasl_ssl_and_mutual_tls(
        secure_kafka, tls, client_cert, topic, tmp_path, case):
    bootstrap, settings = client_settings(case, secure_kafka, tls, client_cert, tmp_path)
    env = {**exporter_env(bootstrap, topic), **env_of("AUTORETRAIN_EXPORTER_", settings)}
    exporter = ExporterProcess(tmp_path, env)
    try:
        produce(secure_kafka.bootstrap, topic, 25, f"{case}-agent")
        line = (f'autoretrain_agent_runs_total{{agent="{case}-agent",agent_type="llm",'
                'status="success"} 25\n')
        assert wait(lambda: line in get(exporter.base + "/metrics")[1], 60), exporter.log()
        status, body = get(exporter.base + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True, body
    finally:
        exporter.stop()
    for secret in secrets_in(settings, client_cert):
        assert secret not in exporter.log()


def test_mutual_tls_without_a_client_certificate_fails_clearly(secure_kafka, tls, topic,
                                                                 tmp_path):
    exporter = ExporterProcess(tmp_path, exporter_env(
        secure_kafka.mtls_bootstrap, topic, security_protocol="SSL",
        ssl_cafile=str(tls.ca_pem)))
    try:
        assert wait(lambda: "handshake failed" in get(exporter.base + "/readyz")[1], 60), \
            exporter.log()
        status, body = get(exporter.base + "/readyz")
        assert status == 503 and "authentication failed or TLS was refused" in body, body
    finally:
        exporter.stop()


@pytest.mark.parametrize("case", ["scram512_sasl_ssl_env", "mtls_file"])
def test_webhook_process_learns_and_publishes_models_over_secured_kafka(
        secure_kafka, tls, client_cert, topic, tmp_path, case):
    from servers.webhook import WebhookProcess

    bootstrap, settings = client_settings(case, secure_kafka, tls, client_cert, tmp_path)
    webhook = WebhookProcess(tmp_path)
    webhook.env.update({
        "AUTORETRAIN_WEBHOOK_KAFKA_SERVERS": bootstrap, "AUTORETRAIN_WEBHOOK_KAFKA_TOPIC": topic,
        "AUTORETRAIN_WEBHOOK_MODEL_TOPIC": f"{topic}-models",
        "AUTORETRAIN_WEBHOOK_CONSUMER_GROUP": f"w-{topic}",
        "AUTORETRAIN_WEBHOOK_BATCH_SIZE": "10", "AUTORETRAIN_WEBHOOK_SAVE_INTERVAL_SECONDS": "1",
        **env_of("AUTORETRAIN_WEBHOOK_", settings)})
    produce(secure_kafka.bootstrap, topic, 40, f"{case}-agent")
    webhook.start()
    try:
        def applied() -> float:
            body = webhook.request("GET", "/metrics")[2].decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                       if line.startswith("autoretrain_model_updater_events_total{")
                       and 'result="applied"' in line)

        assert wait(lambda: applied() >= 40, 60), webhook.log.read_text()
        # The model publisher, over the same listener, put a saved version on the topic.
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(f"{topic}-models", bootstrap_servers=secure_kafka.bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=2000)
        try:
            assert wait(lambda: any(True for _ in consumer), 60), webhook.log.read_text()
        finally:
            consumer.close()
    finally:
        webhook.stop()
    log = webhook.log.read_text()
    for secret in secrets_in(settings, client_cert):
        assert secret not in log


@pytest.mark.parametrize("case", ["scram512_sasl_ssl_file", "mtls_env"])
def test_updater_consumes_over_scram_sasl_ssl_and_mutual_tls(
        secure_kafka, tls, client_cert, topic, tmp_path, case):
    from autoretrain.webhook.config import load_config

    bootstrap, settings = client_settings(case, secure_kafka, tls, client_cert, tmp_path)
    # Through the webhook's settings, as an orchestrator configures it from its environment.
    config = load_config({"allow_unauthenticated": True, "kafka_servers": bootstrap,
                          "kafka_topic": topic, "consumer_group": f"u-{topic}",
                          "model_storage_path": str(tmp_path / "models"), "batch_size": 10,
                          "batch_timeout_seconds": 0.2},
                         env_of("AUTORETRAIN_WEBHOOK_", settings))
    produce(secure_kafka.bootstrap, topic, 40, f"{case}-agent")
    updater = RealTimeModelUpdater(**config.updater_kwargs())
    updater.start()
    try:
        assert wait(lambda: updater.get_metrics()["events_applied"] >= 40, 60), \
            updater.get_metrics()
        assert updater.kafka_status() is None
        assert wait(updater.caught_up, 30)
    finally:
        updater.stop()
    assert updater.get_metrics()["events_applied"] == 40
    for secret in secrets_in(settings, client_cert):
        assert secret not in repr(updater.settings)


@pytest.mark.parametrize("case", ["scram256_env", "scram512_sasl_ssl_file", "mtls_env"])
def test_monitor_produces_over_scram_sasl_ssl_and_mutual_tls(
        secure_kafka, tls, client_cert, topic, tmp_path, case, monkeypatch):
    from kafka import KafkaConsumer

    from autoretrain.exporter import PerformanceMonitor
    from autoretrain.exporter.kafka_security import security_from_values

    bootstrap, settings = client_settings(case, secure_kafka, tls, client_cert, tmp_path)
    if case.endswith("_env"):
        # The orchestrator's environment secures a monitor built without any argument.
        for name, value in env_of("AUTORETRAIN_MONITOR_", settings).items():
            monkeypatch.setenv(name, value)
        monitor = PerformanceMonitor(kafka_servers=bootstrap, kafka_topic=topic)
    else:
        monitor = PerformanceMonitor(kafka_servers=bootstrap, kafka_topic=topic,
                                     kafka_security=security_from_values(settings.get))
    try:
        for i in range(20):
            monitor.record_agent_run(f"{case}-{i}", f"{case}-agent", "llm", "success", 50.0)
    finally:
        monitor.close()  # delivers what is queued
    consumer = KafkaConsumer(topic, bootstrap_servers=secure_kafka.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        received: list[bytes] = []
        assert wait(lambda: received.extend(m.value for m in consumer) or len(received) >= 20,
                    60), len(received)
    finally:
        consumer.close()
    assert len(received) == 20
    assert all(f"{case}-agent".encode() in value for value in received)


@pytest.mark.parametrize("case", ["scram256_env", "scram512_sasl_ssl_file", "mtls_env"])
def test_selector_follows_the_model_topic_over_scram_sasl_ssl_and_mutual_tls(
        secure_kafka, tls, client_cert, topic, tmp_path, case, monkeypatch):
    """The selector's ModelFollower (Kafka mode), configured from its environment
    as a deployment does, loads the models a publisher puts on the secured topic."""
    from servers.models import teach

    from autoretrain.exporter.kafka_security import security_from_values
    from autoretrain.webhook.serving import ModelPublisher
    from autoretrain.webhook.serving.selector import EXTENSION, create_selector_app

    bootstrap, settings = client_settings(case, secure_kafka, tls, client_cert, tmp_path)
    model_topic = f"{topic}-models"
    security = security_from_values(settings.get)
    publisher = ModelPublisher(bootstrap, model_topic, kafka_security=security)
    trainer = RealTimeModelUpdater(model_storage_path=str(tmp_path / "store"), seed=3,
                                   model_publisher=publisher)
    for key, value in {"KAFKA_SERVERS": bootstrap, "MODEL_TOPIC": model_topic,
                       "POLL_INTERVAL_SECONDS": "0.2",
                       **{k.removeprefix("AUTORETRAIN_SELECTOR_"): v
                          for k, v in env_of("AUTORETRAIN_SELECTOR_", settings).items()}
                       }.items():
        monkeypatch.setenv(f"AUTORETRAIN_SELECTOR_{key}", value)
    app = create_selector_app()
    follower = app.extensions[EXTENSION]
    client = app.test_client()
    try:
        teach(trainer, "a0", n=200)
        version = trainer.save()
        assert publisher.flush(60) and publisher.published_version == version, \
            publisher.status()

        def serving() -> bool:
            return client.get("/readyz").status_code == 200

        assert wait(serving, 60), (client.get("/readyz").get_json(), follower.status())
        assert follower.version == version and follower.status() is None
        assert (follower.predict_best_agent("t0")[0][0]
                == trainer.predict_best_agent("t0")[0][0])
        body = client.get("/readyz").get_data(as_text=True)
        assert [s for s in secrets_in(settings, client_cert) if s in body] == []
    finally:
        follower.stop()
        publisher.close()
