"""Smoke tests: the server fixtures start real Kafka, Prometheus and Alertmanager processes."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from servers import (
    AlertmanagerFactory,
    KafkaServer,
    PrometheusFactory,
    PrometheusServer,
    ServerUnavailableError,
    common,
    free_port,
)
from servers.common import http_ok


def produce(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for value in values:
            producer.send(topic, value).get(timeout=10)
    finally:
        producer.close()


def consume(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """Read ``count`` values from the start of ``topic`` through a consumer group."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"group-{topic}",  # a group, so the group coordinator is exercised too
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(record.value for record in records)
    finally:
        consumer.close()
    return values


def port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def test_kafka_round_trip(kafka_server: KafkaServer, kafka_topic: str) -> None:
    produce(kafka_server.bootstrap, kafka_topic, b"hello")
    assert consume(kafka_server.bootstrap, kafka_topic, 1) == [b"hello"]


def test_kafka_kill_and_restart_keeps_address_and_data(
    kafka_server: KafkaServer, kafka_topic: str
) -> None:
    bootstrap = kafka_server.bootstrap
    produce(bootstrap, kafka_topic, b"before")

    kafka_server.kill()
    assert not kafka_server.running()
    assert not port_open(bootstrap)

    kafka_server.restart()
    assert kafka_server.bootstrap == bootstrap
    produce(bootstrap, kafka_topic, b"after")
    assert sorted(consume(bootstrap, kafka_topic, 2)) == [b"after", b"before"]


def test_prometheus_scrapes_itself(prometheus_factory: PrometheusFactory, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: self\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    subprocess.run(["promtool", "check", "config", str(config)], check=True, capture_output=True)

    prometheus = prometheus_factory(config, port=port)

    assert prometheus.url == f"http://127.0.0.1:{port}"
    # Prometheus 2.42 hands discovered targets to the scraper only every 5s.
    result = prometheus.wait_for('up{job="self"}', lambda r: len(r) == 1, timeout=30)
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{port}"
    assert result[0]["value"][1] == "1"


def test_prometheus_factory_accepts_yaml_text(prometheus_factory: PrometheusFactory) -> None:
    prometheus = prometheus_factory("global: {scrape_interval: 1s}\n")
    assert prometheus.query("vector(1)")[0]["value"][1] == "1"


def test_alertmanager_starts_and_is_ready(
    alertmanager_factory: AlertmanagerFactory, tmp_path: Path
) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route: {receiver: hook, group_wait: 1s, group_interval: 1s, repeat_interval: 1h}\n"
        "receivers:\n"
        "  - name: hook\n"
        f"    webhook_configs: [{{url: 'http://127.0.0.1:{free_port()}/unused'}}]\n"
    )
    subprocess.run(["amtool", "check-config", str(config)], check=True, capture_output=True)

    alertmanager = alertmanager_factory(config)

    assert http_ok(f"{alertmanager.url}/-/ready")
    assert alertmanager.alerts() == []


@pytest.mark.integration
@pytest.mark.parametrize("tool", ["promtool", "amtool"])
def test_config_checkers_are_installed(tool: str) -> None:
    completed = subprocess.run([tool, "--version"], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert "version" in (completed.stdout + completed.stderr)


def test_missing_binary_is_an_error_naming_the_install_script(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, tmp_path / "p.yml", binary="no-such-prometheus")
    with pytest.raises(ServerUnavailableError, match="scripts/install-test-deps"):
        server.start()


def test_missing_kafka_jars_is_an_error_naming_the_install_script(tmp_path: Path) -> None:
    server = KafkaServer(tmp_path / "kafka", libs=tmp_path / "empty")
    with pytest.raises(ServerUnavailableError, match="scripts/install-test-deps"):
        server.start()


def test_free_port_is_outside_the_range_outgoing_connections_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A port the kernel picks comes from the ephemeral range, where every
    # outgoing connection takes its source port: one could take it before the
    # server binds it ("address already in use", seen in CI). Ports handed
    # out come from below that range, are free, and are never repeated.
    low, high = common.ephemeral_range()
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        assert low <= client.getsockname()[1] <= high
    if low - 10000 < 1000:
        # This machine's range leaves no room below it (the kernel fallback has
        # its own test): check the choice against Linux's default range.
        low = 32768
        monkeypatch.setattr(common, "ephemeral_range", lambda: (low, 60999))
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= p < low for p in ports)
    # Free: a listener can bind each of the last few.
    for port in ports[-5:]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def _unlisted_free_ports(count: int) -> list[int]:
    """Ports below the ephemeral range that are free and were never handed out."""
    found = []
    for port in range(10000, common.ephemeral_range()[0]):
        if port not in common._handed_out and common._bindable(port):
            found.append(port)
            if len(found) == count:
                return found
    raise AssertionError("no free port below the ephemeral range")


def test_free_port_skips_a_port_something_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    if common.ephemeral_range()[0] - 10000 < 1000:  # as in the test above
        monkeypatch.setattr(common, "ephemeral_range", lambda: (32768, 60999))
    taken, other = _unlisted_free_ports(2)
    with socket.create_server(("127.0.0.1", taken)):
        picks = iter([taken, other])
        monkeypatch.setattr(common._random, "randrange", lambda a, b: next(picks))
        assert free_port() == other


def test_free_port_falls_back_to_the_kernel_when_no_room_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "ephemeral_range", lambda: (1024, 65535))
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports[-3:]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
