"""Test-time PKI for mutual TLS: a cluster CA and member certificates, written as PEM files.

A member certificate carries ``IP:127.0.0.1`` and ``DNS:localhost`` as subject alternative names
and both TLS usages (server and client), so the same one serves a name server, a worker and a
coordinator on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyrocluster import pki

VALIDITY_DAYS = 1
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


class CertificateAuthority:
    """A CA (``pyrocluster.pki``) whose files live in ``directory``; ``issue(name)`` makes members."""

    def __init__(self, directory: Path, name: str = "pyrocluster test") -> None:
        self.directory = directory
        self.name = name
        self._cert, self._key = pki.make_ca(f"{name} CA", days=VALIDITY_DAYS)
        self.ca_path = directory / f"{_slug(name)}-ca.pem"
        self.ca_path.write_bytes(pki.cert_pem(self._cert))

    def issue(self, common_name: str) -> Member:
        """A member certificate (server and client use, SAN IP:127.0.0.1) signed by this CA."""
        cert, key = pki.issue(
            self._cert, self._key, common_name, ["localhost"], ["127.0.0.1"], days=VALIDITY_DAYS
        )
        stem = self.directory / f"{_slug(self.name)}-{_slug(common_name)}"
        cert_path, key_path = Path(f"{stem}-cert.pem"), Path(f"{stem}-key.pem")
        cert_path.write_bytes(pki.cert_pem(cert))
        pki.write_private(key_path, pki.key_pem(key))
        return Member(str(cert_path), str(key_path), str(self.ca_path))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def make_member(directory: Path, common_name: str = "member", ca_name: str = "pyrocluster test") -> Member:
    """A fresh CA in ``directory`` and one member certificate it signed."""
    return CertificateAuthority(directory, ca_name).issue(common_name)
