"""Connection security: our daemons and proxies, which run the handshake of ``handshake.py``.

Every proxy pyrocluster opens comes from :func:`make_proxy`, and every daemon it runs is a
:class:`SecureDaemon` (or mixes in :class:`HandshakeValidator`), so this is the one place where
authentication is decided. A daemon keeps the peer each connection proved (the secret, or a
token's name and role) on the connection, for the per-call checks of ``roles.py``; the
serializer, compression and TLS guards live in ``transport.py``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import Pyro5
import Pyro5.api
import Pyro5.core
import Pyro5.errors
import Pyro5.nameserver
import Pyro5.protocol
import Pyro5.serializers

from pyrocluster import roles
from pyrocluster.config import SAFE_SERIALIZERS, Settings
from pyrocluster.errors import AuthenticationError, ConfigError, RoleRefused
from pyrocluster.handshake import (
    HANDSHAKE_WINDOW_S,
    REFUSAL_TAG,
    SIGN_PLEASE,
    Credential,
    HandshakeRefused,
    ReplayGuard,
    check_client_hello,
    check_server_reply,
    client_hello,
    credential,
    refused_from,
    server_reply,
)
from pyrocluster.transport import prepare_transport, refuse_unsafe_serializers

__all__ = [
    "HANDSHAKE_WINDOW_S",
    "AuthenticationRefused",
    "HandshakeRefused",
    "HandshakeValidator",
    "ReplayGuard",
    "SecureDaemon",
    "SecureNameServerDaemon",
    "SecureProxy",
    "check_client_hello",
    "check_server_reply",
    "client_hello",
    "make_proxy",
    "prepare_transport",
    "refuse_unsafe_serializers",
    "refused_from",
    "server_reply",
]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 5.0
"""Seconds a new connection has to complete its (TLS and) Pyro5 handshake before the daemon drops it."""
MAX_HANDSHAKE_BYTES = 64 * 1024
"""Most bytes a daemon reads of a connect message, from a client that has not authenticated yet."""

_MSGPACK = Pyro5.serializers.MsgpackSerializer()


class AuthenticationRefused(AuthenticationError, Pyro5.errors.SecurityError):
    """Raised by our proxies when either side refuses the handshake.

    It is our ``AuthenticationError`` (exit code 3) and also Pyro5's ``SecurityError``, so code
    that sorts Pyro5 errors does not mistake it for a retryable ``CommunicationError``.
    """


class RoleRefusedRemotely(RoleRefused, PermissionError):
    """A daemon refused a call beyond our role (exit code 77); also a ``PermissionError``."""


class CredentialRefusedRemotely(AuthenticationRefused):
    """A daemon refused a call because our token expired or was revoked since we connected (exit 3)."""


def translate_refusal(exc: Exception) -> Exception:
    """A daemon's refusal of a call as our own error (role: exit 77; credential: exit 3)."""
    text = str(exc)
    if text.startswith(roles.ROLE_REFUSAL_TAG):
        return RoleRefusedRemotely(text.partition(": ")[2])
    if text.startswith(REFUSAL_TAG):
        return CredentialRefusedRemotely(text.partition(": ")[2])
    return exc


class HandshakeValidator:
    """Daemon mixin: checks the client's proof in ``validateHandshake`` and keeps the peer it proved.

    Put it before the Pyro5 daemon class in the bases and pass ``credential=`` to the constructor.
    """

    pyrocluster_credential: Credential | None = None
    objectsById: dict[str, Any]  # provided by the Pyro5 daemon

    def __init__(self, *args: Any, credential: Credential | None = None, **kwargs: Any) -> None:
        self.pyrocluster_credential = credential
        self.pyrocluster_clock: Callable[[], float] = time.time  # the server clock (tests set it)
        self.pyrocluster_replays = ReplayGuard()
        self.pyrocluster_handshakes: dict[Any, float] = {}  # connection -> monotonic deadline
        self.pyrocluster_handshakes_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _handshake(self, conn: Any, denied_reason: Any = None) -> Any:
        """Pyro5's connect handshake, bounded in time and size for clients not yet authenticated.

        Pyro5 waits for the connect message without a timeout and reads up to the maximum
        message size, in a pool thread: a few hundred clients that connect and say nothing (or
        drip bytes) would hold every thread, and nobody else would be served.
        """
        if denied_reason:
            # The pool is full and Pyro5 runs this in its accept loop, where it would first wait
            # for the client's connect message: one silent client would stop all accepting.
            # Answer without reading (the client takes it as the reply to its connect); over TLS
            # not at all, since writing would run the TLS handshake here.
            if not hasattr(conn.sock, "getpeercert"):
                refusal = _MSGPACK.dumps(str(denied_reason))
                reply = Pyro5.protocol.SendingMessage(
                    Pyro5.protocol.MSG_CONNECTFAIL, 0, 0, _MSGPACK.serializer_id, refusal
                )
                with contextlib.suppress(OSError, Pyro5.errors.PyroError):
                    conn.send(reply.data)
            return False
        with self.pyrocluster_handshakes_lock:
            self.pyrocluster_handshakes[conn] = time.monotonic() + HANDSHAKE_TIMEOUT_S
        try:
            return super()._handshake(_BoundedConnection(conn, MAX_HANDSHAKE_BYTES), denied_reason)  # type: ignore[misc]
        finally:
            with self.pyrocluster_handshakes_lock:
                self.pyrocluster_handshakes.pop(conn, None)

    def _housekeeping(self) -> None:
        """Pyro5's periodic housekeeping, plus: cut off the connections whose handshake is late."""
        super()._housekeeping()  # type: ignore[misc]
        if not self.pyrocluster_handshakes:  # the usual case, read without the lock: a handshake
            return  # that begins meanwhile is checked at the next round, well before its deadline
        now = time.monotonic()
        with self.pyrocluster_handshakes_lock:
            late = [conn for conn, deadline in self.pyrocluster_handshakes.items() if deadline < now]
        for conn in late:
            log.warning("dropped %s: no handshake within %.0f s", peer_address(conn), HANDSHAKE_TIMEOUT_S)
            # the plain socket's shutdown (not SSLSocket's): it wakes the blocked read in the
            # handshake thread without touching the TLS state that thread is using
            with contextlib.suppress(OSError, AttributeError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802 (Pyro5 hook name)
        """Accept every client without a credential; otherwise check its proof, keep its peer, prove ours."""
        cred = self.pyrocluster_credential
        if cred is None:
            return "hello"
        try:
            now = self.pyrocluster_clock()
            peer = check_client_hello(cred, data, now, self.pyrocluster_replays.window_s)
            reason = roles.invalid_reason(peer, now)
            if reason:
                raise HandshakeRefused(reason)
            if data["obj"] not in self.objectsById:
                # Not an authentication failure: a stale URI (a restarted worker on the same port)
                # must keep failing the way Pyro5 reports it, as a retryable CommunicationError.
                raise Pyro5.errors.DaemonError("unknown object")
            self.pyrocluster_replays.remember(data["nonce"], data["ts"], now)
        except HandshakeRefused as exc:
            # asking a secret holder to sign is routine (it connects again at once), not a warning
            level = logging.DEBUG if exc.reason == SIGN_PLEASE else logging.WARNING
            log.log(level, "refused a connection from %s: %s", peer_address(conn), exc.reason)
            raise
        # Pyro5 hands calls the connection itself; the handshake sees it wrapped (_BoundedConnection)
        getattr(conn, "wrapped", conn).pyrocluster_peer = peer
        return server_reply(cred, data["nonce"], signed="mac" not in data)


class _BoundedConnection:
    """A Pyro5 connection that refuses to read more than ``limit`` bytes in all (for the handshake)."""

    def __init__(self, conn: Any, limit: int) -> None:
        self._conn = conn
        self._left = limit

    @property
    def wrapped(self) -> Any:
        """The connection itself."""
        return self._conn

    def recv(self, size: int) -> bytes:
        """Read ``size`` bytes, or raise ProtocolError when that would exceed the limit."""
        if size > self._left:
            raise Pyro5.errors.ProtocolError(
                f"pyrocluster refuses a connect message over {MAX_HANDSHAKE_BYTES} bytes"
            )
        self._left -= size
        return bytes(self._conn.recv(size))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def peer_address(conn: Any) -> str:
    """``host:port`` of a Pyro5 connection's peer, for log lines (``?`` when it is gone)."""
    try:
        host, port = conn.sock.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError, ValueError):
        return "?"


class SecureDaemon(HandshakeValidator, Pyro5.api.Daemon):
    """A Pyro5 daemon that enforces the cluster credential and refuses unsafe serializers."""

    def __init__(self, settings: Settings, host: str, port: int = 0, advertise: str | None = None) -> None:
        """``advertise``: the address its URIs carry when that is not ``host`` (a wildcard bind)."""
        prepare_transport(settings)
        nat = {"nathost": advertise, "natport": 0} if advertise else {}
        super().__init__(host=host, port=port, credential=settings_credential(settings), **nat)


class SecureNameServerDaemon(HandshakeValidator, Pyro5.nameserver.NameServerDaemon):
    """Pyro5's own name server daemon, enforcing the cluster credential (no broadcast responder)."""

    def __init__(self, settings: Settings, host: str, port: int, storage: str) -> None:
        prepare_transport(settings)
        super().__init__(host=host, port=port, storage=storage, credential=settings_credential(settings))


# --- client side ---------------------------------------------------------------------------------


class SecureProxy(Pyro5.api.Proxy):
    """A Pyro5 proxy that proves our credential on every (re)connect and checks the server's proof."""

    # Class-level defaults: Proxy.__getattr__ would turn a missing attribute into a remote call,
    # and Proxy.__setattr__ refuses unknown names, so instances set these with object.__setattr__.
    _pyrocluster_credential: Credential | None = None
    _pyrocluster_nonce: str = ""
    _pyrocluster_signed: bool = False
    """Sign the secret's handshakes (the server holds only a token and asked for it)."""

    @property
    def _pyroHandshake(self) -> Any:  # noqa: N802 (Pyro5 attribute name)
        """Pyro5 reads this once per connection attempt: each read is a fresh handshake."""
        cred = self._pyrocluster_credential
        if cred is None:
            return "hello"
        hello = client_hello(cred, self._pyroUri.object, time.time(), self._pyrocluster_signed)
        object.__setattr__(self, "_pyrocluster_nonce", hello["nonce"])
        return hello

    @_pyroHandshake.setter
    def _pyroHandshake(self, value: Any) -> None:  # noqa: N802
        pass  # Pyro5's __init__ and __setstate__ assign "hello"; ours is computed per connection.

    def _pyroValidateHandshake(self, response: Any) -> None:  # noqa: N802 (Pyro5 hook name)
        """Refuse a server that cannot prove the cluster secret or a token of this cluster."""
        cred = self._pyrocluster_credential
        if cred is None or check_server_reply(cred, self._pyrocluster_nonce, response, time.time()):
            return
        # Pyro5 has already adopted the connection when it calls this hook: drop it, so the
        # proxy does not go on talking to a server it refused.
        self._pyroRelease()
        raise AuthenticationRefused(
            f"{self._pyroUri.location} did not prove it knows the cluster secret"
            " (it runs without a secret or with another one)"
        )

    def _Proxy__pyroCreateConnection(self, replaceUri: bool = False, connected_socket: Any = None) -> bool:  # noqa: N802
        # Every connect (first call, _pyroBind, metadata, reconnects) goes through this private
        # Pyro5 method. A daemon's refusal reaches the client only as the text of a
        # CommunicationError; turn ours into AuthenticationRefused so that callers, which retry
        # communication errors, do not retry a wrong secret.
        try:
            return bool(super()._Proxy__pyroCreateConnection(replaceUri, connected_socket))
        except Pyro5.errors.CommunicationError as exc:
            _, tag, reason = str(exc).partition(f"{REFUSAL_TAG}: ")
            if not tag:
                raise
            if reason == SIGN_PLEASE and not self._pyrocluster_signed and connected_socket is None:
                object.__setattr__(self, "_pyrocluster_signed", True)  # once: a job run with a token
                return self._Proxy__pyroCreateConnection(replaceUri, connected_socket)
            raise AuthenticationRefused(f"{self._pyroUri.location} refused the connection: {reason}") from exc

    def _pyroInvoke(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (Pyro5 method name)
        """A call; a daemon's refusal of our role or credential comes back as our own error."""
        try:
            return super()._pyroInvoke(*args, **kwargs)
        except (Pyro5.errors.SecurityError, PermissionError) as exc:
            translated = translate_refusal(exc)
            if translated is exc:
                raise
            raise translated from None

    def __copy__(self) -> SecureProxy:
        """A copy for another thread, keeping the credential (Pyro5's copy knows only its own state)."""
        copied: SecureProxy = super().__copy__()
        object.__setattr__(copied, "_pyrocluster_credential", self._pyrocluster_credential)
        object.__setattr__(copied, "_pyrocluster_signed", self._pyrocluster_signed)
        return copied


def settings_credential(settings: Settings) -> Credential | None:
    """The credential ``settings`` name (secret first); ConfigError for a malformed token."""
    from pyrocluster.tokens import TokenInvalid

    try:
        return credential(settings.secret, settings.token)
    except TokenInvalid as exc:
        raise ConfigError(f"token: {exc}") from None


def own_peer(settings: Settings) -> roles.Peer:
    """Who this process is to others: its token's name and role, or the secret (also without one)."""
    cred = settings_credential(settings)
    return cred.peer if cred is not None else roles.SECRET_PEER


def make_proxy(uri: Any, settings: Settings, timeout_s: float | None = None) -> Pyro5.api.Proxy:
    """A new proxy to ``uri`` (a ``PYRO:`` URI) that speaks our serializer and proves our credential."""
    if settings.serializer not in SAFE_SERIALIZERS:
        raise ConfigError(f"serializer {settings.serializer!r} is not allowed (use msgpack or serpent)")
    uri = Pyro5.core.URI(uri) if isinstance(uri, str) else uri
    if uri.protocol != "PYRO":
        # PYRONAME/PYROMETA would be resolved by Pyro5 through a plain name-server proxy,
        # which cannot prove the secret: look the name up with a proxy from here instead.
        raise ValueError(f"make_proxy needs a PYRO: URI, not {uri.protocol}: ({uri})")
    prepare_transport(settings)
    proxy = SecureProxy(uri)
    object.__setattr__(proxy, "_pyrocluster_credential", settings_credential(settings))
    proxy._pyroSerializer = settings.serializer
    if timeout_s:
        proxy._pyroTimeout = timeout_s
    return proxy
