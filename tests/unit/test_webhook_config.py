"""Webhook configuration: defaults < AUTORETRAIN_WEBHOOK_* < mapping, validated at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from autoretrain.webhook.config import WebhookConfig, load_config

TOKEN = "s3cret-token-0123456789"


def test_defaults_need_a_token() -> None:
    with pytest.raises(ValueError, match=r"^no token configured: set token or token_file"):
        load_config()


def test_allow_unauthenticated_is_explicit() -> None:
    config = load_config({"allow_unauthenticated": True})
    assert config.token is None and not config.auth_required
    assert config == WebhookConfig(allow_unauthenticated=True)
    assert (config.cooldown_seconds, config.max_body_bytes, config.port) == (600.0, 1_048_576,
                                                                              9109)


def test_layers_env_over_defaults_and_mapping_over_env() -> None:
    env = {"AUTORETRAIN_WEBHOOK_TOKEN": TOKEN, "AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS": "30",
           "AUTORETRAIN_WEBHOOK_MAX_BODY_BYTES": "2048", "AUTORETRAIN_WEBHOOK_PORT": "8000",
           "AUTORETRAIN_WEBHOOK_KAFKA_SERVERS": "", "OTHER_VARIABLE": "ignored"}
    config = load_config({"cooldown_seconds": 5}, env)
    assert config.token == TOKEN and config.auth_required
    assert config.cooldown_seconds == 5.0  # the mapping wins
    assert config.max_body_bytes == 2048 and config.port == 8000
    assert config.kafka_servers is None  # empty means unset (embedded bus)


@pytest.mark.parametrize("text, value", [("true", True), ("1", True), ("YES", True),
                                         ("false", False), ("0", False), ("", False)])
def test_env_booleans(text: str, value: bool) -> None:
    env = {"AUTORETRAIN_WEBHOOK_ALLOW_UNAUTHENTICATED": text,
           "AUTORETRAIN_WEBHOOK_TOKEN": TOKEN}
    assert load_config(None, env).allow_unauthenticated is value


def test_token_file_is_read_at_start(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    config = load_config({"token_file": str(path)})
    assert config.token == TOKEN


@pytest.mark.parametrize("overrides, env, message", [
    ({"cooldown_seconds": -1}, {},
     r"^cooldown_seconds \(from config\) must be a finite number >= 0, got -1$"),
    ({"max_body_bytes": 0}, {}, r"^max_body_bytes \(from config\) must be an integer >= 1"),
    ({"max_body_bytes": 1.5}, {}, r"max_body_bytes \(from config\) must be an integer, got 1.5"),
    ({"port": 70000}, {}, r"port \(from config\) must be an integer in \[0, 65535\]"),
    ({"allow_unauthenticated": "yes"}, {}, r"allow_unauthenticated \(from config\) must be "
                                           r"true or false"),
    ({"update_strategy": "magic"}, {}, r"update_strategy \(from config\) must be one of "
                                       r"moving_average, exponential, bayesian, gradient"),
    ({"log_level": "LOUD"}, {}, r"log_level \(from config\) must be one of DEBUG"),
    ({"ledger_path": ""}, {}, r"ledger_path \(from config\) must be a non-empty string"),
    ({"colldown_seconds": 1}, {}, r"^unknown config key 'colldown_seconds'; known: token,"),
    ({}, {"AUTORETRAIN_WEBHOOK_COOLDOWN": "1"},
     r"^unknown environment variable AUTORETRAIN_WEBHOOK_COOLDOWN; known: "),
    ({}, {"AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS": "soon"},
     r"^AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS must be a number, got 'soon'$"),
    ({}, {"AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS": "nan"},
     r"COOLDOWN_SECONDS\) must be a finite number >= 0, got nan"),
    ({}, {"AUTORETRAIN_WEBHOOK_PORT": "80.5"},
     r"^AUTORETRAIN_WEBHOOK_PORT must be an integer, got '80.5'$"),
    ({}, {"AUTORETRAIN_WEBHOOK_ALLOW_UNAUTHENTICATED": "maybe"},
     r"^AUTORETRAIN_WEBHOOK_ALLOW_UNAUTHENTICATED must be one of 1, true, yes, on, 0, false"),
    ({"token": "short"}, {}, r"^token must be 16 to 4096 printable ASCII characters"),
    ({"token": "has a space in it, long enough"}, {}, r"^token must be 16 to 4096 printable"),
    ({"token": TOKEN, "token_file": "/x"}, {}, r"^set token or token_file, not both$"),
    ({"token_file": "/nonexistent/token"}, {},
     r"^token_file '/nonexistent/token' cannot be read: "),
])
def test_invalid_settings_say_what_is_wrong(overrides: dict[str, Any], env: dict[str, str],
                                            message: str) -> None:
    overrides = {"allow_unauthenticated": True, **overrides}
    with pytest.raises(ValueError, match=message):
        load_config(overrides, env)


def test_errors_and_repr_never_show_the_token() -> None:
    config = load_config({"token": TOKEN})
    assert TOKEN not in repr(config)
    with pytest.raises(ValueError) as info:
        load_config({"token": 12345678901234567890})
    assert str(info.value) == (
        "token (from config) must be a non-empty string, got a value of type int")
    with pytest.raises(ValueError) as info:
        load_config({"token": "no spaces allowed " + TOKEN})
    assert TOKEN not in str(info.value)


def test_empty_token_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(ValueError, match=r"^token must be .* \(read from token_file '"):
        load_config({"token_file": str(path)})


def test_updater_kwargs() -> None:
    config = load_config({"allow_unauthenticated": True, "model_storage_path": "/m",
                          "batch_size": 5, "kafka_servers": "k:9092"})
    assert config.updater_kwargs() == {
        "kafka_servers": "k:9092", "kafka_topic": "agent-outcomes",
        "consumer_group": "autoretrain-updater", "batch_size": 5,
        "batch_timeout_seconds": 30.0, "model_storage_path": "/m",
        "save_interval_seconds": 300.0, "update_strategy": "exponential",
        "buffer_size": None, "half_life_seconds": 365 * 86400.0, "retry_after_seconds": 600.0,
        "detect_drops": None, "retrain_discount": 1.0, "recency_weight": 1.0}


def test_model_hyperparameters_from_env_reach_the_updater(tmp_path: Path) -> None:
    from autoretrain.webhook import RealTimeModelUpdater

    env = {"AUTORETRAIN_WEBHOOK_BUFFER_SIZE": "400", "AUTORETRAIN_WEBHOOK_RECENCY_WEIGHT": "4",
           "AUTORETRAIN_WEBHOOK_HALF_LIFE_SECONDS": "600",
           "AUTORETRAIN_WEBHOOK_RETRAIN_DISCOUNT": "0",
           "AUTORETRAIN_WEBHOOK_RETRY_AFTER_SECONDS": "120",
           "AUTORETRAIN_WEBHOOK_DETECT_DROPS": "true"}
    config = load_config({"allow_unauthenticated": True,
                          "model_storage_path": str(tmp_path)}, env)
    updater = RealTimeModelUpdater(**config.updater_kwargs())
    assert (updater.buffer_size, updater.recency_weight, updater.half_life_seconds,
            updater.retrain_discount) == (400, 4.0, 600.0, 0.0)
    rule = updater.model.rule
    assert (rule.retry_after_seconds, rule.detect_drops) == (120.0, True)
    blank = load_config({"allow_unauthenticated": True},
                        {"AUTORETRAIN_WEBHOOK_BUFFER_SIZE": "",
                         "AUTORETRAIN_WEBHOOK_RETRY_AFTER_SECONDS": ""})
    assert blank.buffer_size is None and blank.retry_after_seconds is None
    assert RealTimeModelUpdater(**{**blank.updater_kwargs(),
                                   "model_storage_path": str(tmp_path)}).model.hyperparameters()[
        "retry_after_seconds"] is None


@pytest.mark.parametrize("overrides, message", [
    ({"retrain_discount": 1.5}, r"retrain_discount \(from config\) must be in \[0, 1\]"),
    ({"recency_weight": 0.5}, r"recency_weight \(from config\) must be >= 1"),
    ({"half_life_seconds": 0}, r"half_life_seconds \(from config\) must be a finite number > 0"),
    ({"buffer_size": 0}, r"buffer_size \(from config\) must be an integer >= 1"),
    ({"retry_after_seconds": -5},
     r"retry_after_seconds \(from config\) must be a finite number > 0"),
    ({"detect_drops": "yes"}, r"detect_drops \(from config\) must be true or false"),
    ({"ledger_retention_days": -1},
     r"ledger_retention_days \(from config\) must be a finite number >= 0"),
])
def test_bad_model_hyperparameters(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config({"allow_unauthenticated": True, **overrides})


def test_ledger_retention_reaches_the_ledger(tmp_path: Path) -> None:
    from autoretrain.webhook import create_app
    from autoretrain.webhook.app import EXTENSION

    def retention(extra: dict[str, Any], env: dict[str, str]) -> float | None:
        config = {"allow_unauthenticated": True, "model_storage_path": str(tmp_path / "m"),
                  "ledger_path": str(tmp_path / "ledger.db"), **extra}
        with patch.dict(os.environ, env, clear=False):
            app = create_app(config)
        service = app.extensions[EXTENSION]
        value = service.ledger.retention_seconds
        service.close()
        return value

    assert retention({}, {}) == 90 * 86400.0
    assert retention({}, {"AUTORETRAIN_WEBHOOK_LEDGER_RETENTION_DAYS": "7"}) == 7 * 86400.0
    assert retention({"ledger_retention_days": 0}, {}) is None  # kept forever
