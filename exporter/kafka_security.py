"""How a Kafka client of autoretrain authenticates and encrypts: one settings object.

Every Kafka client the product makes (the standalone exporter's consumer, the
monitor's :class:`~.kafka_sink.KafkaSink`, the updater's consumer, the model
publisher and the followers' consumers) takes a :class:`KafkaSecurity` and
passes :meth:`KafkaSecurity.client_config` to kafka-python. It is validated
once, when built. Clients authenticate with SASL (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512) or with a client certificate (mutual TLS: ``ssl_certfile``,
``ssl_keyfile``). The secrets (the SASL password, the password of an
encrypted client key) come from a file (``--kafka-sasl-password-file``,
``<PREFIX>KAFKA_SASL_PASSWORD_FILE``) or from the environment
(``<PREFIX>KAFKA_SASL_PASSWORD``, ``<PREFIX>KAFKA_SSL_PASSWORD``), never from
``argv`` (visible to every local user), and never appear in ``repr``, errors
or logs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SASL_MECHANISMS",
    "SECRET_KEYS",
    "SECURITY_PROTOCOLS",
    "SETTING_KEYS",
    "KafkaSecurity",
    "add_security_arguments",
    "read_secret_file",
    "security_from_args",
    "security_from_environ",
    "security_from_settings",
]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def read_secret_file(path: str, what: str) -> str:
    """The text of a secret file, one trailing newline stripped; ValueError naming
    ``what`` and the path (never the content) when it cannot be read or is empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path!r} is not UTF-8 text") from None
    text = text.rstrip("\r\n")
    if not text:
        raise ValueError(f"{what} {path!r} is empty")
    return text


@dataclass(frozen=True)
class KafkaSecurity:
    """Connection security of a Kafka client (kafka-python's names in brackets).

    Attributes
    ----------
    security_protocol
        ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``
        [``security_protocol``].
    sasl_mechanism
        With a ``SASL_*`` protocol (required there, refused otherwise):
        ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` [``sasl_mechanism``].
    sasl_username
        The SASL user [``sasl_plain_username``, also used by SCRAM].
    sasl_password, sasl_password_file
        The SASL password, given directly (library use) or read from a file
        here, at construction (one trailing newline stripped); at most one.
        Never shown in ``repr`` [``sasl_plain_password``].
    ssl_cafile
        With ``SSL``/``SASL_SSL``: PEM file of the CA(s) that signed the
        broker's certificate; default the system's trust store [``ssl_cafile``].
    ssl_check_hostname
        With ``SSL``/``SASL_SSL``: check that the broker's certificate names
        the host connected to (default true) [``ssl_check_hostname``].
    ssl_certfile, ssl_keyfile
        With ``SSL``/``SASL_SSL``: the client certificate (PEM, its chain
        after it) the broker authenticates this client by (mutual TLS), and
        its private key (PEM; may be left out when the certificate file
        holds it) [``ssl_certfile``, ``ssl_keyfile``].
    ssl_password, ssl_password_file
        The password of an encrypted ``ssl_keyfile``, given directly or read
        from a file (as ``sasl_password``); at most one [``ssl_password``].
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_check_hostname: bool = True
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_password_file: str | None = None

    def __post_init__(self) -> None:
        protocol = self.security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                             f"got {protocol!r}")
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ValueError("set sasl_password or sasl_password_file, not both")
        if self.sasl_password_file is not None:
            object.__setattr__(self, "sasl_password",
                               read_secret_file(self.sasl_password_file, "sasl_password_file"))
        if self.ssl_password is not None and self.ssl_password_file is not None:
            raise ValueError("set ssl_password or ssl_password_file, not both")
        if self.ssl_password_file is not None:
            object.__setattr__(self, "ssl_password",
                               read_secret_file(self.ssl_password_file, "ssl_password_file"))
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(f"security_protocol {protocol} needs sasl_mechanism, one of "
                                 f"{', '.join(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}")
            if not self.sasl_username:
                raise ValueError(f"security_protocol {protocol} needs sasl_username")
            if not self.sasl_password:
                raise ValueError(f"security_protocol {protocol} needs a password: set "
                                 "sasl_password_file (or the environment's "
                                 "..._KAFKA_SASL_PASSWORD)")
        else:
            given = [name for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                     if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set but security_protocol is {protocol}; "
                                 "use SASL_PLAINTEXT or SASL_SSL")
        if not self.uses_ssl:
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} set but security_protocol is {protocol}; "
                                     "use SSL or SASL_SSL")
            if self.ssl_check_hostname is not True:
                raise ValueError(f"ssl_check_hostname set but security_protocol is {protocol}; "
                                 "use SSL or SASL_SSL")
        if not isinstance(self.ssl_check_hostname, bool):
            raise ValueError("ssl_check_hostname must be true or false, got "
                             f"{self.ssl_check_hostname!r}")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"{name} {path!r} cannot be read")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile set without ssl_certfile (the client certificate)")
        if self.ssl_password is not None and self.ssl_certfile is None:
            raise ValueError("ssl_password set without ssl_certfile (the client certificate)")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's clients (consumer, producer, admin)."""
        config: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_sasl:
            config.update(sasl_mechanism=self.sasl_mechanism,
                          sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        if self.uses_ssl:
            config["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
                value = getattr(self, name)
                if value is not None:
                    config[name] = value
        return config

    def describe(self) -> str:
        """A log-safe summary, e.g. ``SASL_SSL (PLAIN as alice)``."""
        text = self.security_protocol
        if self.uses_sasl:
            text += f" ({self.sasl_mechanism} as {self.sasl_username})"
        if self.ssl_certfile is not None:
            text += " with a client certificate"
        return text

    def handshake_hint(self) -> str:
        """What to say when the broker accepts TCP but the client cannot connect.

        A broker closes the connection on a failed SASL authentication or TLS
        handshake without an error kafka-python reports (the client only sees
        "Unable to bootstrap"); a TCP probe that succeeds narrows it down.
        """
        return (f"the broker accepts TCP connections, so the {self.describe()} handshake "
                "failed: authentication failed or TLS was refused (check the credentials, "
                "the SASL mechanism, the CA file and the security protocol)")


# -- command line and environment ----------------------------------------

#: option suffix -> (KafkaSecurity field, help)
_OPTIONS = {
    "security-protocol": ("security_protocol",
                          f"one of {', '.join(SECURITY_PROTOCOLS)} (default PLAINTEXT)"),
    "sasl-mechanism": ("sasl_mechanism", f"with SASL_*: one of {', '.join(SASL_MECHANISMS)}"),
    "sasl-username": ("sasl_username", "with SASL_*: the user"),
    "sasl-password-file": ("sasl_password_file",
                           "with SASL_*: file holding the password (never inline)"),
    "ssl-cafile": ("ssl_cafile", "with SSL/SASL_SSL: PEM file of the CA that signed the "
                                 "broker's certificate (default: the system's)"),
    "ssl-check-hostname": ("ssl_check_hostname", "with SSL/SASL_SSL: true or false "
                                                 "(default true)"),
    "ssl-certfile": ("ssl_certfile", "with SSL/SASL_SSL: PEM file of this client's "
                                     "certificate (mutual TLS)"),
    "ssl-keyfile": ("ssl_keyfile", "with SSL/SASL_SSL: PEM file of the client "
                                   "certificate's private key"),
    "ssl-password-file": ("ssl_password_file",
                          "file holding the password of an encrypted ssl-keyfile"),
}
#: Secrets also accepted from the environment alone (``<PREFIX>KAFKA_<FIELD>``):
#: never options, since a command line is visible to every local user.
_ENV_SECRETS = ("sasl_password", "ssl_password")
_FIELDS = (*(dest for dest, _ in _OPTIONS.values()), *_ENV_SECRETS)


def add_security_arguments(parser: argparse.ArgumentParser, env_prefix: str | None,
                           environ: Mapping[str, str] | None = None) -> None:
    """Add ``--kafka-<setting>`` options, defaulting to ``<env_prefix>KAFKA_<SETTING>``
    variables when ``env_prefix`` is given (empty variables count as unset)."""
    env = os.environ if environ is None else environ
    group = parser.add_argument_group(
        "Kafka security",
        None if not env_prefix else
        f"Secrets may also come from {env_prefix}KAFKA_SASL_PASSWORD and "
        f"{env_prefix}KAFKA_SSL_PASSWORD (environment only).")
    for suffix, (dest, text) in _OPTIONS.items():
        var = f"{env_prefix}KAFKA_{suffix.upper().replace('-', '_')}" if env_prefix else None
        default = (env.get(var) or None) if var else None
        group.add_argument(f"--kafka-{suffix}", dest=f"kafka_{dest}", default=default,
                           metavar="VALUE", help=f"{text}" + (f" [{var}]" if var else ""))
    parser.set_defaults(**{
        f"kafka_{dest}": (env.get(f"{env_prefix}KAFKA_{dest.upper()}") or None)
        if env_prefix else None for dest in _ENV_SECRETS})


def parse_bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be one of {', '.join(_TRUE + _FALSE)}, got {text!r}")


def security_from_values(get: Callable[[str], str | None]) -> KafkaSecurity:
    """Build from text values by field name (None: unset); ValueError when invalid."""
    values: dict[str, Any] = {}
    for dest in _FIELDS:
        text = get(dest)
        if text is None:
            continue
        values[dest] = (parse_bool(text, "ssl_check_hostname") if dest == "ssl_check_hostname"
                        else text)
    return KafkaSecurity(**values)


#: The flat setting names of the webhook's and the selector's configuration
#: (``kafka_`` + field; environment ``<PREFIX>KAFKA_<FIELD>``).
SETTING_KEYS = tuple(f"kafka_{dest}" for dest in _FIELDS)
#: Those of them that are secrets (never echoed).
SECRET_KEYS = tuple(f"kafka_{dest}" for dest in _ENV_SECRETS)


def security_from_settings(config: Any) -> KafkaSecurity:
    """Build from an object with the :data:`SETTING_KEYS` attributes (text or None)."""
    return security_from_values(lambda dest: getattr(config, f"kafka_{dest}"))


def security_from_environ(prefix: str, environ: Mapping[str, str] | None = None
                          ) -> KafkaSecurity:
    """Build from ``<prefix>KAFKA_<FIELD>`` variables (empty ones count as unset),
    e.g. ``AUTORETRAIN_MONITOR_KAFKA_SECURITY_PROTOCOL``."""
    env = os.environ if environ is None else environ
    return security_from_values(lambda dest: env.get(f"{prefix}KAFKA_{dest.upper()}") or None)


def security_from_args(args: argparse.Namespace) -> KafkaSecurity:
    """The :class:`KafkaSecurity` of options added by :func:`add_security_arguments`."""
    return security_from_values(lambda dest: getattr(args, f"kafka_{dest}", None))
