"""A throw-away certificate authority and broker keystore, made with the JDK's keytool.

For the Kafka SSL listener of :class:`~servers.kafka.KafkaServer`: a CA, a
broker key signed by it with ``127.0.0.1`` and ``localhost`` as subject
alternative names, in a PKCS12 keystore; clients get the CA as a PEM file.
For mutual TLS, :func:`make_client_certificate` signs a client key with the
same CA (keytool) and writes it as PEM files (openssl), the key encrypted
with a password; the broker trusts the CA through ``truststore``.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import require_executable

__all__ = ["BrokerKeystore", "ClientCertificate", "make_broker_keystore",
           "make_client_certificate"]


@dataclass(frozen=True)
class BrokerKeystore:
    """What the broker's SSL listener and its clients need."""

    keystore: Path  # PKCS12: the broker's key and its certificate chain
    password: str  # of the keystore and the key (PKCS12 uses one)
    ca_pem: Path  # the CA certificate, for clients' ``ssl_cafile``
    other_ca_pem: Path  # a CA that did not sign the broker (for a failing client)
    truststore: Path  # PKCS12 with the CA certificate: whom the broker trusts (mutual TLS)
    ca_store: Path  # PKCS12 with the CA's key (signs client certificates)


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate signed by the test CA, as kafka-python takes it."""

    certfile: Path  # PEM: the certificate, then the CA's
    keyfile: Path  # PEM: the private key, encrypted with ``key_password``
    key_password: str


def _keytool(*args: str, keytool: str) -> None:
    cmd = [keytool, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {done.stdout}{done.stderr}")


def _make_ca(directory: Path, name: str, password: str, keytool: str) -> tuple[Path, Path]:
    store, pem = directory / f"{name}.p12", directory / f"{name}.pem"
    _keytool("-genkeypair", "-alias", name, "-keyalg", "RSA", "-keysize", "2048",
             "-dname", f"CN={name}", "-ext", "bc:c", "-validity", "2",
             "-keystore", str(store), "-storetype", "PKCS12", "-storepass", password,
             keytool=keytool)
    _keytool("-exportcert", "-rfc", "-alias", name, "-keystore", str(store),
             "-storepass", password, "-file", str(pem), keytool=keytool)
    return store, pem


def make_broker_keystore(directory: Path, keytool: str = "keytool") -> BrokerKeystore:
    """Generate a CA and a broker keystore signed by it in ``directory`` (a few JVM starts)."""
    require_executable(keytool, "the JDK's keytool")
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    ca_store, ca_pem = _make_ca(directory, "test-ca", password, keytool)
    _, other_pem = _make_ca(directory, "other-ca", password, keytool)
    keystore = directory / "broker.p12"
    csr, signed = directory / "broker.csr", directory / "broker.pem"
    _keytool("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
             "-dname", "CN=localhost", "-validity", "2", "-keystore", str(keystore),
             "-storetype", "PKCS12", "-storepass", password, keytool=keytool)
    _keytool("-certreq", "-alias", "broker", "-keystore", str(keystore),
             "-storepass", password, "-file", str(csr), keytool=keytool)
    _keytool("-gencert", "-alias", "test-ca", "-keystore", str(ca_store),
             "-storepass", password, "-infile", str(csr), "-outfile", str(signed), "-rfc",
             "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-validity", "2", keytool=keytool)
    _keytool("-importcert", "-noprompt", "-alias", "test-ca", "-file", str(ca_pem),
             "-keystore", str(keystore), "-storepass", password, keytool=keytool)
    _keytool("-importcert", "-alias", "broker", "-file", str(signed),
             "-keystore", str(keystore), "-storepass", password, keytool=keytool)
    truststore = directory / "truststore.p12"
    _keytool("-importcert", "-noprompt", "-alias", "test-ca", "-file", str(ca_pem),
             "-keystore", str(truststore), "-storetype", "PKCS12", "-storepass", password,
             keytool=keytool)
    return BrokerKeystore(keystore=keystore, password=password, ca_pem=ca_pem,
                          other_ca_pem=other_pem, truststore=truststore, ca_store=ca_store)


def make_client_certificate(directory: Path, ca: BrokerKeystore, name: str = "client",
                            keytool: str = "keytool", openssl: str = "openssl"
                            ) -> ClientCertificate:
    """A client key and certificate signed by ``ca``'s CA, as PEM files in ``directory``."""
    require_executable(openssl, "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    store, password = directory / f"{name}.p12", ca.password
    csr, signed = directory / f"{name}.csr", directory / f"{name}.signed.pem"
    _keytool("-genkeypair", "-alias", name, "-keyalg", "RSA", "-keysize", "2048",
             "-dname", f"CN={name}", "-validity", "2", "-keystore", str(store),
             "-storetype", "PKCS12", "-storepass", password, keytool=keytool)
    _keytool("-certreq", "-alias", name, "-keystore", str(store), "-storepass", password,
             "-file", str(csr), keytool=keytool)
    _keytool("-gencert", "-alias", "test-ca", "-keystore", str(ca.ca_store),
             "-storepass", password, "-infile", str(csr), "-outfile", str(signed), "-rfc",
             "-validity", "2", keytool=keytool)
    certfile = directory / f"{name}.cert.pem"
    certfile.write_text(signed.read_text() + ca.ca_pem.read_text())
    key_password = secrets.token_hex(12)
    keyfile = directory / f"{name}.key.pem"
    _openssl(openssl, "pkcs12", "-in", str(store), "-nocerts", "-passin", f"pass:{password}",
             "-passout", f"pass:{key_password}", "-out", str(keyfile))
    return ClientCertificate(certfile=certfile, keyfile=keyfile, key_password=key_password)


def _openssl(openssl: str, *args: str) -> None:
    cmd = [openssl, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stdout}{done.stderr}")
