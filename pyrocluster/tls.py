"""Mutual TLS for Pyro5: contexts that trust only the cluster CA, installed in Pyro5's cache."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import threading
from typing import Any

import Pyro5.socketutil

from pyrocluster.config import Settings
from pyrocluster.errors import ConfigError


class _ServerTLSContext(ssl.SSLContext):
    """Server context whose accepted sockets do the TLS handshake in their own worker thread.

    Pyro5 wraps the listening socket, so by default ``accept()`` runs each TLS handshake in the
    daemon's single accept loop: one client that connects and stays silent would stop the daemon
    from accepting anyone else.
    """

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """Wrap as usual, except that server sockets handshake on their first read."""
        return super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect and not server_side,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )


def tls_contexts(settings: Settings) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for mutual TLS that trust the cluster CA and nothing else.

    Both sides present ``tls_cert`` and require the peer's certificate to be signed by ``tls_ca``.
    Host names are not checked: membership is "holds a certificate from the cluster CA", which
    lets workers join by IP address without a certificate naming each one.
    """
    if not settings.tls_cert or not settings.tls_ca:
        raise ConfigError("mutual TLS needs --tls-cert and --tls-ca (and --tls-key unless the cert holds it)")
    files = (
        ("--tls-cert", settings.tls_cert),
        ("--tls-key", settings.tls_key),
        ("--tls-ca", settings.tls_ca),
    )
    for flag, path in files:
        _check_file(flag, path)
    server = _ServerTLSContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        _load_chain(context, settings.tls_cert, settings.tls_key or None)
        try:
            if os.path.isdir(settings.tls_ca):
                context.load_verify_locations(capath=settings.tls_ca)
            else:
                context.load_verify_locations(cafile=settings.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--tls-ca {settings.tls_ca}: cannot load the CA: {exc}") from None
    return server, client


def _check_file(flag: str, path: str | None) -> None:
    """ConfigError naming ``flag`` and ``path`` when the file cannot be read, or holds a certificate
    (``--tls-cert``: its first; ``--tls-ca``: every one) that is expired or not yet valid: every
    peer would refuse it, better not to start."""
    if not path or (flag == "--tls-ca" and os.path.isdir(path)):
        return
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    if flag == "--tls-key" or b"-----BEGIN CERTIFICATE-----" not in data:
        return  # not PEM certificates: the ssl module says what is wrong with it
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        return
    problems = [_out_of_date(cert) for cert in certificates[: 1 if flag == "--tls-cert" else None]]
    if problems and all(problems):  # a CA bundle may keep an old CA beside the current one
        raise ConfigError(f"{flag} {path}: {problems[0]}")


def _out_of_date(cert: Any) -> str | None:
    """Why ``cert`` is not valid now, or None."""
    now = datetime.datetime.now(datetime.timezone.utc)
    after, before = _utc(cert, "not_valid_after"), _utc(cert, "not_valid_before")
    if after < now:
        return f"the certificate expired on {_when(after)}"
    if before > now:
        return f"the certificate is not valid before {_when(before)} (is this host's clock right?)"
    return None


def _utc(cert: Any, field: str) -> datetime.datetime:
    """``cert.<field>_utc`` (cryptography 42+), else the naive UTC ``cert.<field>`` of older ones."""
    moment = getattr(cert, f"{field}_utc", None)
    return moment or getattr(cert, field).replace(tzinfo=datetime.timezone.utc)


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """``context.load_cert_chain``; ConfigError naming the files and what is wrong."""
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        if getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
            problem = f"the key in {key} does not belong to the certificate"
        elif key is None:
            problem = "no private key in the file (give --tls-key)"
        else:
            problem = f"cannot load the certificate and its key {key}: {exc}"
        raise ConfigError(f"--tls-cert {cert}: {problem}") from None


_tls_lock = threading.Lock()
_tls_installed: tuple[str | None, str | None, str | None] | None = None


def install_tls(settings: Settings) -> None:
    """Make Pyro5 use :func:`tls_contexts` for every TLS socket in this process.

    Pyro5 builds its contexts once per process and caches them in two module globals: its client
    context also trusts the system CAs and checks the server's host name (so a certificate
    without the IP address as a SAN fails on 127.0.0.1), and its server context completes each
    TLS handshake in the accept loop. We fill that cache with ours, again whenever the
    certificate files change.
    """
    global _tls_installed
    key = (settings.tls_cert, settings.tls_key, settings.tls_ca)
    with _tls_lock:
        if _tls_installed == key:
            return
        server, client = tls_contexts(settings)
        for name in ("__ssl_server_context", "__ssl_client_context"):
            if not hasattr(Pyro5.socketutil, name):
                raise RuntimeError(
                    f"this Pyro5 version has no socketutil.{name}: cannot install TLS contexts"
                )
        setattr(Pyro5.socketutil, "__ssl_server_context", server)  # noqa: B010 (a mangling-proof name)
        setattr(Pyro5.socketutil, "__ssl_client_context", client)  # noqa: B010
        _tls_installed = key
