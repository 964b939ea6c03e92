"""Mutual TLS for Pyro5: contexts that trust only the cluster CA, installed in Pyro5's cache."""

from __future__ import annotations

import os
import socket
import ssl
import threading

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
    server = _ServerTLSContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key or None)
            if os.path.isdir(settings.tls_ca):
                context.load_verify_locations(capath=settings.tls_ca)
            else:
                context.load_verify_locations(cafile=settings.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS certificate, key or CA: {exc}") from exc
    return server, client


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
