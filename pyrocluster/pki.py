"""The cluster's certificates: a CA and the member certificates it signs (``pyrocluster tls``).

Keys are ECDSA P-256. A member certificate is good for both TLS usages (server and client), since
every pyrocluster process is both: a worker serves calls and calls the name server. Its subject
alternative names are the host names and addresses the operator gives; the cluster's own
clients trust the CA rather than names (see ``pyrocluster.tls``), other clients may check them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyrocluster.errors import ConfigError

CA_DAYS = 3650
"""How long a CA made by ``tls init`` is valid."""
MEMBER_DAYS = 365
"""How long a certificate made by ``tls issue`` is valid unless ``--days`` says otherwise."""
BACKDATE = datetime.timedelta(minutes=5)
"""Certificates are valid from a little before now, for hosts whose clocks are a little behind."""

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(common_name: str, days: int = CA_DAYS) -> tuple[x509.Certificate, Key]:
    """A self-signed CA certificate (it may sign members only, not other CAs) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: Key,
    common_name: str,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = MEMBER_DAYS,
) -> tuple[x509.Certificate, Key]:
    """A member certificate for ``common_name`` (server and client use) signed by the CA; ValueError
    for an IP address that is not one."""
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (mode 0600 from the first byte, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        out.write(data)


# -- the CA directory of ``pyrocluster tls`` ----------------------------------------------------


def init_directory(directory: Path, common_name: str = "pyrocluster CA", days: int = CA_DAYS) -> Path:
    """Make ``ca.crt`` and ``ca.key`` (0600) in ``directory``; ConfigError if a CA is already there."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = directory / "ca.crt", directory / "ca.key"
    for path in (ca_crt, ca_key):
        if path.exists():
            raise ConfigError(f"{path} already exists: refusing to replace the cluster CA")
    cert, key = make_ca(common_name, days)
    write_private(ca_key, key_pem(key))
    ca_crt.write_bytes(cert_pem(cert))
    return ca_crt


def _load_ca(directory: Path) -> tuple[x509.Certificate, Key]:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    except OSError as exc:
        hint = f"run `pyrocluster tls init {directory}` first"
        raise ConfigError(f"{exc.filename}: {exc.strerror} ({hint})") from None
    except ValueError as exc:
        raise ConfigError(f"{directory}: ca.crt or ca.key is not a PEM certificate or key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{directory / 'ca.key'}: not an ECDSA key made by `pyrocluster tls init`")
    return cert, key


def issue_in_directory(
    directory: Path, name: str, hosts: Sequence[str], ips: Sequence[str], days: int = MEMBER_DAYS
) -> tuple[Path, Path]:
    """Write ``NAME.crt`` and ``NAME.key`` (0600) signed by the CA in ``directory``; their paths."""
    if not name or "/" in name or name.startswith(".") or name == "ca":
        raise ConfigError(f"tls issue: {name!r} cannot name a certificate (no '/', not 'ca')")
    ca_cert, ca_key = _load_ca(directory)
    try:
        cert, key = issue(ca_cert, ca_key, name, hosts, ips, days)
    except ValueError as exc:
        raise ConfigError(f"--ip: {exc}") from None
    crt_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    write_private(key_path, key_pem(key))
    crt_path.write_bytes(cert_pem(cert))
    return crt_path, key_path
