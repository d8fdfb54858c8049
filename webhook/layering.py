"""Settings layered once: defaults < ``<PREFIX><KEY>`` environment variables < a mapping.

The webhook (:mod:`.config`) and the selector (:mod:`.serving.selector`)
take their settings the same way; this module is that way, written once:
unknown keys in either layer are errors (a misspelt setting must not be
ignored silently), each value is checked by the component's own ``check``
naming where it came from, and a Bearer token (inline or from a file) is
read and validated at start, never echoed back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from autoretrain.exporter.kafka_security import KafkaSecurity, security_from_settings

__all__ = ["LOG_LEVELS", "KafkaSecurityFields", "choice", "layer", "resolve_token"]

#: The logging levels a ``log_level`` setting may name.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A token is sent in an HTTP header: printable ASCII without spaces.
_TOKEN = re.compile(r"^[\x21-\x7e]{16,4096}$")

C = TypeVar("C")


@dataclass(frozen=True)
class KafkaSecurityFields:
    """The Kafka security settings of a component's settings (a base of its dataclass):
    the fields of :class:`~autoretrain.exporter.kafka_security.KafkaSecurity` as text
    (a client certificate for mutual TLS; the secrets from a file or from the
    environment, never shown). None everywhere is PLAINTEXT."""

    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password_file: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_check_hostname: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_password_file: str | None = None
    # Secrets: from the environment (or a mapping), never shown.
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_password: str | None = field(default=None, repr=False)

    def kafka_security(self) -> KafkaSecurity:
        """The Kafka clients' security settings (reads the password file)."""
        return security_from_settings(self)


def layer(
    keys: Collection[str],
    prefix: str,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any] | None,
    check: Callable[[str, Any, str], Any],
    from_env: Callable[[str, str, str], Any] | None = None,
) -> dict[str, Any]:
    """The values the two layers set, each checked; the defaults are the caller's.

    ``from_env(key, text, variable)`` turns a variable's text into a value
    (default: the text itself); ``check(key, value, where)`` validates and
    returns it, ``where`` being the variable's name or ``"config"``.
    """
    values: dict[str, Any] = {}
    for name, text in sorted((environ or {}).items()):
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):].lower()
        if key not in keys:
            raise ValueError(f"unknown environment variable {name}; known: "
                             f"{', '.join(prefix + k.upper() for k in keys)}")
        values[key] = check(key, text if from_env is None else from_env(key, text, name), name)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"config must be a mapping, got {type(overrides).__name__}")
    for key, value in (overrides or {}).items():
        if key not in keys:
            raise ValueError(f"unknown config key {key!r}; known: {', '.join(keys)}")
        values[key] = check(key, value, "config")
    return values


def choice(key: str, value: str, where: str, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``; ValueError naming the key, its source and them."""
    if value not in allowed:
        raise ValueError(f"{key} (from {where}) must be one of {', '.join(allowed)}, "
                         f"got {value!r}")
    return value


def resolve_token(config: C, key: str) -> C:
    """``config`` with the token ``key`` read from ``<key>_file`` when that is set; ValueError
    when both are set, the file cannot be read, or the token is not 16 to 4096 printable
    ASCII characters without spaces (the message never shows the token)."""
    token: str | None = getattr(config, key)
    path: str | None = getattr(config, f"{key}_file")
    if path is not None:
        if token is not None:
            raise ValueError(f"set {key} or {key}_file, not both")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{key}_file {path!r} cannot be read: "
                             f"{exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{key}_file {path!r} is not UTF-8 text") from None
        token = text.rstrip("\r\n")
        config = replace(config, **{key: token})  # type: ignore[type-var]
    if token is not None and not _TOKEN.match(token):
        raise ValueError(f"{key} must be 16 to 4096 printable ASCII characters without spaces"
                         + (f" (read from {key}_file {path!r})" if path else ""))
    return config
