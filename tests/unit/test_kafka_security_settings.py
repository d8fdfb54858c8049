"""KafkaSecurity: validated once, secrets never shown, kafka-python's keyword names."""

from __future__ import annotations

import argparse

import pytest

from autoretrain.exporter.kafka_security import (
    KafkaSecurity,
    add_security_arguments,
    security_from_args,
)
from autoretrain.webhook.config import load_config

SECRET = "s3cret-Pa55word-xyz"


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    return str(path)


def test_plaintext_is_the_default():
    assert KafkaSecurity().client_config() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_config_uses_kafka_python_names(password_file, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "alice",
                             sasl_password_file=password_file, ssl_cafile=str(ca))
    assert security.client_config() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice", "sasl_plain_password": SECRET,
        "ssl_check_hostname": True, "ssl_cafile": str(ca)}
    assert SECRET not in repr(security)
    assert SECRET not in security.describe() and SECRET not in security.handshake_hint()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"security_protocol": "TLS"}, r"security_protocol must be one of .* got 'TLS'"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "a", "sasl_password": "p"},
     r"needs sasl_mechanism.* got None"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI", "sasl_username": "a",
      "sasl_password": "p"}, "got 'GSSAPI'"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_password": "p"},
     "needs sasl_username"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "a"},
     "needs a password"),
    ({"security_protocol": "SSL", "sasl_mechanism": "PLAIN"},
     "sasl_mechanism set but security_protocol is SSL"),
    ({"ssl_cafile": "/x.pem"}, "ssl_cafile set but security_protocol is PLAINTEXT"),
    ({"security_protocol": "SASL_PLAINTEXT", "ssl_check_hostname": False,
      "sasl_mechanism": "PLAIN", "sasl_username": "a", "sasl_password": "p"},
     "ssl_check_hostname set but security_protocol is SASL_PLAINTEXT"),
    ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"},
     "ssl_cafile '/nonexistent/ca.pem' cannot be read"),
])
def test_bad_combinations_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KafkaSecurity(**kwargs)


def test_password_inline_and_file_refused(password_file):
    with pytest.raises(ValueError, match="not both"):
        KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "a", sasl_password="x",
                      sasl_password_file=password_file)


def test_unreadable_or_empty_password_file(tmp_path):
    with pytest.raises(ValueError, match=r"sasl_password_file '.*missing' cannot be read"):
        KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "a", sasl_password_file=str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "a", sasl_password_file=str(tmp_path / "empty"))


def test_errors_never_show_the_password(password_file):
    with pytest.raises(ValueError) as caught:
        KafkaSecurity("SSL", sasl_password_file=password_file)
    assert SECRET not in str(caught.value)


def test_options_default_to_environment(password_file):
    parser = argparse.ArgumentParser()
    add_security_arguments(parser, "X_", environ={
        "X_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "X_KAFKA_SASL_MECHANISM": "PLAIN",
        "X_KAFKA_SASL_USERNAME": "alice", "X_KAFKA_SASL_PASSWORD_FILE": password_file})
    security = security_from_args(parser.parse_args([]))
    assert security.client_config()["sasl_plain_password"] == SECRET
    args = parser.parse_args(["--kafka-sasl-username", "bob"])
    assert security_from_args(args).sasl_username == "bob"
    bad = parser.parse_args(["--kafka-security-protocol", "SSL", "--kafka-ssl-check-hostname",
                             "maybe"])
    with pytest.raises(ValueError, match=r"ssl_check_hostname must be one of .* got 'maybe'"):
        security_from_args(bad)


def test_webhook_config_builds_the_updater_and_publisher_security(password_file):
    config = load_config({"allow_unauthenticated": True, "kafka_servers": "k:9092"}, {
        "AUTORETRAIN_WEBHOOK_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "AUTORETRAIN_WEBHOOK_KAFKA_SASL_MECHANISM": "PLAIN",
        "AUTORETRAIN_WEBHOOK_KAFKA_SASL_USERNAME": "alice",
        "AUTORETRAIN_WEBHOOK_KAFKA_SASL_PASSWORD_FILE": password_file})
    settings = config.updater_settings()
    assert settings.kafka_security is not None
    assert settings.kafka_security.client_config()["sasl_plain_password"] == SECRET
    assert SECRET not in repr(config) and SECRET not in repr(settings)
    with pytest.raises(ValueError, match=r"AUTORETRAIN_WEBHOOK_KAFKA_.*needs sasl_username"):
        load_config({"allow_unauthenticated": True}, {
            "AUTORETRAIN_WEBHOOK_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "AUTORETRAIN_WEBHOOK_KAFKA_SASL_MECHANISM": "PLAIN",
            "AUTORETRAIN_WEBHOOK_KAFKA_SASL_PASSWORD_FILE": password_file})


def test_selector_config_refuses_bad_security():
    from autoretrain.webhook.serving.selector import load_selector_config

    with pytest.raises(ValueError, match=r"AUTORETRAIN_SELECTOR_KAFKA_.*got 'TLS'"):
        load_selector_config({"kafka_servers": "k:9092"},
                             {"AUTORETRAIN_SELECTOR_KAFKA_SECURITY_PROTOCOL": "TLS"})


# -- issue 13 item 14: mutual TLS, secrets from the environment, the monitor's producer ------
@pytest.fixture
def pem_files(tmp_path):
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert")
    key.write_text("key")
    return str(cert), str(key)


def test_client_certificate_config_uses_kafka_python_names(pem_files, tmp_path):
    cert, key = pem_files
    key_password = tmp_path / "key-password"
    key_password.write_text(SECRET + "\n")
    security = KafkaSecurity("SSL", ssl_certfile=cert, ssl_keyfile=key,
                             ssl_password_file=str(key_password))
    assert security.client_config() == {
        "security_protocol": "SSL", "ssl_check_hostname": True, "ssl_certfile": cert,
        "ssl_keyfile": key, "ssl_password": SECRET}
    assert SECRET not in repr(security)
    assert security.describe() == "SSL with a client certificate"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ssl_certfile": "/x.pem"}, "ssl_certfile set but security_protocol is PLAINTEXT"),
    ({"security_protocol": "SSL", "ssl_keyfile": "KEY"},
     "ssl_keyfile set without ssl_certfile"),
    ({"security_protocol": "SSL", "ssl_certfile": "/nonexistent/c.pem"},
     "ssl_certfile '/nonexistent/c.pem' cannot be read"),
    ({"security_protocol": "SSL", "ssl_certfile": "CERT", "ssl_password": "p",
      "ssl_password_file": "F"}, "set ssl_password or ssl_password_file, not both"),
])
def test_bad_client_certificate_settings_are_refused(kwargs, message, pem_files):
    cert, key = pem_files
    kwargs = {k: {"CERT": cert, "KEY": key}.get(v, v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        KafkaSecurity(**kwargs)


def test_secrets_from_the_environment_not_from_options(pem_files):
    cert, key = pem_files
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_security_arguments(parser, "X_", environ={
        "X_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "X_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "X_KAFKA_SASL_USERNAME": "alice", "X_KAFKA_SASL_PASSWORD": SECRET,
        "X_KAFKA_SSL_CERTFILE": cert, "X_KAFKA_SSL_KEYFILE": key,
        "X_KAFKA_SSL_PASSWORD": "key-" + SECRET})
    config = security_from_args(parser.parse_args([])).client_config()
    assert config["sasl_plain_password"] == SECRET
    assert config["ssl_password"] == "key-" + SECRET
    assert config["ssl_certfile"] == cert
    # A secret is never an option: argv is visible to every local user.
    with pytest.raises(SystemExit):
        parser.parse_args(["--kafka-sasl-password", SECRET])
    assert SECRET not in parser.format_help()


def test_the_exporter_command_line_refuses_a_password_option(capsys):
    from autoretrain.exporter.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--kafka-sasl-password", SECRET])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_webhook_config_takes_the_secrets_from_the_environment_and_never_echoes_them(
        pem_files):
    cert, key = pem_files
    config = load_config({"allow_unauthenticated": True, "kafka_servers": "k:9092"}, {
        "AUTORETRAIN_WEBHOOK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "AUTORETRAIN_WEBHOOK_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "AUTORETRAIN_WEBHOOK_KAFKA_SASL_USERNAME": "alice",
        "AUTORETRAIN_WEBHOOK_KAFKA_SASL_PASSWORD": SECRET,
        "AUTORETRAIN_WEBHOOK_KAFKA_SSL_CERTFILE": cert,
        "AUTORETRAIN_WEBHOOK_KAFKA_SSL_KEYFILE": key})
    security = config.updater_settings().kafka_security
    assert security is not None and security.client_config()["sasl_plain_password"] == SECRET
    assert security.client_config()["ssl_certfile"] == cert
    assert SECRET not in repr(config)
    with pytest.raises(ValueError) as caught:
        load_config({"allow_unauthenticated": True, "kafka_sasl_password": 5})
    assert "kafka_sasl_password" in str(caught.value) and "5" not in str(caught.value)


def test_monitor_producer_takes_its_security_from_the_argument_or_the_environment(
        monkeypatch, password_file):
    from autoretrain.exporter import PerformanceMonitor

    given = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", "alice",
                          sasl_password_file=password_file)
    monitor = PerformanceMonitor(kafka_servers="127.0.0.1:9", kafka_security=given)
    try:
        assert monitor.event_sink.kafka_security is given  # type: ignore[union-attr]
    finally:
        monitor.close()
    monkeypatch.setenv("AUTORETRAIN_MONITOR_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("AUTORETRAIN_MONITOR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("AUTORETRAIN_MONITOR_KAFKA_SASL_USERNAME", "bob")
    monkeypatch.setenv("AUTORETRAIN_MONITOR_KAFKA_SASL_PASSWORD", SECRET)
    monitor = PerformanceMonitor(kafka_servers="127.0.0.1:9")
    try:
        security = monitor.event_sink.kafka_security  # type: ignore[union-attr]
        assert security.describe() == "SASL_PLAINTEXT (SCRAM-SHA-512 as bob)"
        assert security.client_config()["sasl_plain_password"] == SECRET
    finally:
        monitor.close()
    monkeypatch.setenv("AUTORETRAIN_MONITOR_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ValueError, match="got 'GSSAPI'"):
        PerformanceMonitor(kafka_servers="127.0.0.1:9")


def test_the_standalone_updater_takes_security_and_secrets_from_the_environment(
        tmp_path, pem_files, capsys):
    from autoretrain.webhook.updater.__main__ import build_parser, build_updater

    cert, key = pem_files
    environ = {
        "AUTORETRAIN_UPDATER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "AUTORETRAIN_UPDATER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "AUTORETRAIN_UPDATER_KAFKA_SASL_USERNAME": "alice",
        "AUTORETRAIN_UPDATER_KAFKA_SASL_PASSWORD": SECRET,
        "AUTORETRAIN_UPDATER_KAFKA_SSL_CERTFILE": cert,
        "AUTORETRAIN_UPDATER_KAFKA_SSL_KEYFILE": key,
        "AUTORETRAIN_UPDATER_KAFKA_SSL_PASSWORD": "key-" + SECRET,
    }
    parser = build_parser(environ)
    updater = build_updater(parser.parse_args(
        ["--kafka-servers", "k:9092", "--model-dir", str(tmp_path / "models")]))
    security = updater.settings.kafka_security
    assert security is not None
    config = security.client_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == SECRET
    assert config["ssl_password"] == "key-" + SECRET and config["ssl_certfile"] == cert
    # An option still beats the environment; a secret is never an option.
    args = parser.parse_args(["--kafka-servers", "k:9092", "--model-dir", str(tmp_path),
                              "--kafka-sasl-username", "bob"])
    assert build_updater(args).settings.kafka_security.client_config()[
        "sasl_plain_username"] == "bob"
    with pytest.raises(SystemExit):
        parser.parse_args(["--kafka-servers", "k:9092", "--model-dir", str(tmp_path),
                           "--kafka-sasl-password", SECRET])
    assert "unrecognized arguments" in capsys.readouterr().err
    assert SECRET not in parser.format_help()
