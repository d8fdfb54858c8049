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
