"""Test-time PKI for mutual TLS: a cluster CA and member certificates, written as PEM files.

A member certificate carries ``IP:127.0.0.1`` and ``DNS:localhost`` as subject alternative names
and both TLS usages (server and client), so the same one serves a name server, a worker and a
coordinator on loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)
"""How long the generated certificates are valid (from five minutes ago)."""


@dataclass(frozen=True)
class Member:
    """One certificate and its key, as PEM file paths, with the CA that signed it."""

    cert: str
    key: str
    ca: str

    def env(self) -> dict[str, str]:
        """The ``PYROCLUSTER_TLS_*`` variables that select this certificate."""
        return {
            "PYROCLUSTER_TLS_CERT": self.cert,
            "PYROCLUSTER_TLS_KEY": self.key,
            "PYROCLUSTER_TLS_CA": self.ca,
        }

    def flags(self) -> list[str]:
        """The ``--tls-cert/--tls-key/--tls-ca`` flags that select this certificate."""
        return ["--tls-cert", self.cert, "--tls-key", self.key, "--tls-ca", self.ca]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class CertificateAuthority:
    """A self-signed CA whose files live in ``directory``; ``issue(name)`` makes member certificates."""

    def __init__(self, directory: Path, name: str = "pyrocluster test") -> None:
        self.directory = directory
        self.name = name
        self._now = datetime.datetime.now(datetime.timezone.utc)
        self._key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} CA"))
            .issuer_name(_name(f"{name} CA"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / f"{_slug(name)}-ca.pem"
        self.ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str) -> Member:
        """A member certificate (server and client use, SAN IP:127.0.0.1) signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(f"{self.name} CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        stem = self.directory / f"{_slug(self.name)}-{_slug(common_name)}"
        cert_path, key_path = Path(f"{stem}-cert.pem"), Path(f"{stem}-key.pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return Member(str(cert_path), str(key_path), str(self.ca_path))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def make_member(directory: Path, common_name: str = "member", ca_name: str = "pyrocluster test") -> Member:
    """A fresh CA in ``directory`` and one member certificate it signed."""
    return CertificateAuthority(directory, ca_name).issue(common_name)
