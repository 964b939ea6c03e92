"""Connection security: the cluster-secret handshake (both sides), the serializer guard and TLS setup.

Every proxy pyrocluster opens comes from :func:`make_proxy`, and every daemon it runs is a
:class:`SecureDaemon` (or mixes in :class:`HandshakeValidator`), so this is the one place where
authentication is decided.

The handshake rides on Pyro5's single connect round trip, so both proofs fit in it:

* the client sends ``{"v", "nonce", "ts", "obj", "mac"}`` where ``mac`` is
  HMAC-SHA256(secret, "pyrocluster/1|client|nonce|ts|obj"), with a fresh random nonce per
  connection (reconnects included);
* the server refuses a timestamp more than :data:`HANDSHAKE_WINDOW_S` off its clock, a wrong mac,
  an object it does not hold (so a handshake captured on one daemon is useless on another that
  holds other objects) and a nonce it has already accepted within the window (a replay);
* the server answers ``{"v", "nonce", "mac"}`` with mac = HMAC-SHA256(secret,
  "pyrocluster/1|server|client nonce|server nonce"), which the client checks, so a server that does
  not know the secret is refused too.

Only MACs cross the wire, never the secret. Without TLS a handshake authenticates the connection
only at its start: use TLS where the network itself is not trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import logging
import math
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeGuard

import Pyro5
import Pyro5.api
import Pyro5.core
import Pyro5.errors
import Pyro5.nameserver
import Pyro5.protocol
import Pyro5.serializers
import Pyro5.socketutil

from pyrocluster import pyro5_hooks, tls
from pyrocluster.config import SAFE_SERIALIZERS, Settings
from pyrocluster.errors import AuthenticationError, ConfigError

log = logging.getLogger(__name__)

HANDSHAKE_VERSION = 1
"""Version of the handshake format; a peer speaking another one is refused."""
HANDSHAKE_WINDOW_S = 60.0
"""Seconds a client handshake's timestamp may be off the server clock (clocks must agree this well)."""
MAX_REMEMBERED_NONCES = 100_000
"""Accepted client nonces a daemon remembers at most (the ones younger than the window)."""
HANDSHAKE_TIMEOUT_S = 5.0
"""Seconds a new connection has to complete its (TLS and) Pyro5 handshake before the daemon drops it."""
MAX_HANDSHAKE_BYTES = 64 * 1024
"""Most bytes a daemon reads of a connect message, from a client that has not authenticated yet."""
REFUSAL_TAG = "pyrocluster authentication refused"
"""Prefix of every handshake refusal a daemon sends, so the client can report it as such."""

_NONCE_BYTES = 16
_NONCE_HEX = 2 * _NONCE_BYTES
_MAC_HEX = 2 * hashlib.sha256().digest_size
_HEX_DIGITS = frozenset("0123456789abcdef")
_MSGPACK = Pyro5.serializers.MsgpackSerializer()


class HandshakeRefused(Pyro5.errors.SecurityError):
    """A daemon refused a client's handshake; Pyro5 sends ``str(self)`` back as the refusal."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{REFUSAL_TAG}: {reason}")
        self.reason = reason


class AuthenticationRefused(AuthenticationError, Pyro5.errors.SecurityError):
    """Raised by our proxies when either side refuses the handshake.

    It is our ``AuthenticationError`` (exit code 3) and also Pyro5's ``SecurityError``, so code
    that sorts Pyro5 errors does not mistake it for a retryable ``CommunicationError``.
    """


# --- the handshake itself: pure functions, clock passed in ---------------------------------------


def _mac(secret: bytes, *fields: str) -> str:
    message = "|".join(("pyrocluster/1", *fields)).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _is_hex(value: Any, length: int) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == length and set(value) <= _HEX_DIGITS


def client_hello(secret: bytes, object_id: str, now: float) -> dict[str, Any]:
    """A fresh client handshake proving ``secret`` for a connection to ``object_id``."""
    nonce = secrets.token_hex(_NONCE_BYTES)
    ts = int(now)
    return {
        "v": HANDSHAKE_VERSION,
        "nonce": nonce,
        "ts": ts,
        "obj": object_id,
        "mac": _mac(secret, "client", nonce, str(ts), object_id),
    }


def refused_from(ts: float, window_s: float = HANDSHAKE_WINDOW_S) -> float:
    """The first server time at which :func:`check_client_hello` refuses a hello stamped ``ts``.

    The check compares whole seconds (``int(now) - ts``), so a hello stays acceptable until
    ``ts + floor(window) + 1``, not ``ts + window``: the replay guard keeps nonces that long.
    """
    return float(ts + math.floor(window_s) + 1)


def check_client_hello(secret: bytes, hello: Any, now: float, window_s: float = HANDSHAKE_WINDOW_S) -> None:
    """Raise :class:`HandshakeRefused` unless ``hello`` is a well-formed, timely proof of ``secret``."""
    if not isinstance(hello, dict) or "mac" not in hello:
        raise HandshakeRefused("this server requires the cluster secret and the client sent no proof of it")
    if hello.get("v") != HANDSHAKE_VERSION:
        raise HandshakeRefused(f"unsupported handshake version {hello.get('v')!r}")
    nonce, ts, obj, mac = hello.get("nonce"), hello.get("ts"), hello.get("obj"), hello.get("mac")
    if (
        not _is_hex(nonce, _NONCE_HEX)
        or not _is_hex(mac, _MAC_HEX)
        or type(ts) is not int
        or not isinstance(obj, str)
    ):
        raise HandshakeRefused("malformed handshake")
    skew = int(now) - ts  # int arithmetic: a huge ts must not overflow a float
    if abs(skew) > window_s:
        raise HandshakeRefused(
            f"handshake timestamp is {skew:+d} s off the server clock (allowed: {window_s:.0f} s);"
            " an old handshake replayed, or clocks out of sync"
        )
    if not hmac.compare_digest(mac, _mac(secret, "client", nonce, str(ts), obj)):
        raise HandshakeRefused("wrong cluster secret")


def server_reply(secret: bytes, client_nonce: str) -> dict[str, Any]:
    """The server's proof of ``secret``, bound to the client's nonce."""
    nonce = secrets.token_hex(_NONCE_BYTES)
    return {"v": HANDSHAKE_VERSION, "nonce": nonce, "mac": _mac(secret, "server", client_nonce, nonce)}


def check_server_reply(secret: bytes, client_nonce: str, reply: Any) -> bool:
    """True when ``reply`` proves the server knows ``secret`` (for this connection's nonce)."""
    if not isinstance(reply, dict) or reply.get("v") != HANDSHAKE_VERSION:
        return False
    nonce, mac = reply.get("nonce"), reply.get("mac")
    if not _is_hex(nonce, _NONCE_HEX) or not _is_hex(mac, _MAC_HEX):
        return False
    return hmac.compare_digest(mac, _mac(secret, "server", client_nonce, nonce))


class ReplayGuard:
    """Remembers accepted client nonces until their timestamps leave the window; thread-safe."""

    def __init__(
        self, window_s: float = HANDSHAKE_WINDOW_S, max_entries: int = MAX_REMEMBERED_NONCES
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # heap of (forget after, nonce)

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, nonce: str, ts: float, now: float) -> None:
        """Record ``nonce``; HandshakeRefused when it was already accepted or the guard is full."""
        with self._lock:
            # A nonce can be forgotten once the timestamp check refuses it: any replay of it is
            # refused by that check from then on.
            while self._expiry and self._expiry[0][0] <= now:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if nonce in self._seen:
                raise HandshakeRefused("handshake replayed (this nonce was already used)")
            if len(self._seen) >= self.max_entries:
                # Failing closed: only clients that know the secret get this far.
                raise HandshakeRefused("too many handshakes within the window; try again later")
            self._seen.add(nonce)
            heapq.heappush(self._expiry, (refused_from(ts, self.window_s), nonce))


# --- server side ---------------------------------------------------------------------------------


class HandshakeValidator:
    """Daemon mixin: checks the client's proof of the cluster secret in ``validateHandshake``.

    Put it before the Pyro5 daemon class in the bases and pass ``secret=`` to the constructor.
    """

    pyrocluster_secret: bytes | None = None
    objectsById: dict[str, Any]  # provided by the Pyro5 daemon

    def __init__(self, *args: Any, secret: bytes | None = None, **kwargs: Any) -> None:
        self.pyrocluster_secret = secret
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
        now = time.monotonic()
        with self.pyrocluster_handshakes_lock:
            late = [conn for conn, deadline in self.pyrocluster_handshakes.items() if deadline < now]
        for conn in late:
            log.warning("dropped %s: no handshake within %.0f s", _peer(conn), HANDSHAKE_TIMEOUT_S)
            # the plain socket's shutdown (not SSLSocket's): it wakes the blocked read in the
            # handshake thread without touching the TLS state that thread is using
            with contextlib.suppress(OSError, AttributeError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802 (Pyro5 hook name)
        """Accept every client when no secret is set; otherwise check its proof and prove ours."""
        secret = self.pyrocluster_secret
        if secret is None:
            return "hello"
        try:
            now = self.pyrocluster_clock()
            check_client_hello(secret, data, now, self.pyrocluster_replays.window_s)
            if data["obj"] not in self.objectsById:
                # Not an authentication failure: a stale URI (a restarted worker on the same port)
                # must keep failing the way Pyro5 reports it, as a retryable CommunicationError.
                raise Pyro5.errors.DaemonError("unknown object")
            self.pyrocluster_replays.remember(data["nonce"], data["ts"], now)
        except HandshakeRefused as exc:
            log.warning("refused a connection from %s: %s", _peer(conn), exc.reason)
            raise
        return server_reply(secret, data["nonce"])


class _BoundedConnection:
    """A Pyro5 connection that refuses to read more than ``limit`` bytes in all (for the handshake)."""

    def __init__(self, conn: Any, limit: int) -> None:
        self._conn = conn
        self._left = limit

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


def _peer(conn: Any) -> str:
    try:
        host, port = conn.sock.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError, ValueError):
        return "?"


class SecureDaemon(HandshakeValidator, Pyro5.api.Daemon):
    """A Pyro5 daemon that enforces the cluster secret and refuses unsafe serializers."""

    def __init__(self, settings: Settings, host: str, port: int = 0, advertise: str | None = None) -> None:
        """``advertise``: the address its URIs carry when that is not ``host`` (a wildcard bind)."""
        prepare_transport(settings)
        nat = {"nathost": advertise, "natport": 0} if advertise else {}
        super().__init__(host=host, port=port, secret=settings.secret, **nat)


class SecureNameServerDaemon(HandshakeValidator, Pyro5.nameserver.NameServerDaemon):
    """Pyro5's own name server daemon, enforcing the cluster secret (no broadcast responder)."""

    def __init__(self, settings: Settings, host: str, port: int, storage: str) -> None:
        prepare_transport(settings)
        super().__init__(host=host, port=port, storage=storage, secret=settings.secret)


# --- client side ---------------------------------------------------------------------------------


class SecureProxy(Pyro5.api.Proxy):
    """A Pyro5 proxy that proves the cluster secret on every (re)connect and checks the server's proof."""

    # Class-level defaults: Proxy.__getattr__ would turn a missing attribute into a remote call,
    # and Proxy.__setattr__ refuses unknown names, so instances set these with object.__setattr__.
    _pyrocluster_secret: bytes | None = None
    _pyrocluster_nonce: str = ""

    @property
    def _pyroHandshake(self) -> Any:  # noqa: N802 (Pyro5 attribute name)
        """Pyro5 reads this once per connection attempt: each read is a fresh handshake."""
        secret = self._pyrocluster_secret
        if secret is None:
            return "hello"
        hello = client_hello(secret, self._pyroUri.object, time.time())
        object.__setattr__(self, "_pyrocluster_nonce", hello["nonce"])
        return hello

    @_pyroHandshake.setter
    def _pyroHandshake(self, value: Any) -> None:  # noqa: N802
        pass  # Pyro5's __init__ and __setstate__ assign "hello"; ours is computed per connection.

    def _pyroValidateHandshake(self, response: Any) -> None:  # noqa: N802 (Pyro5 hook name)
        """Refuse a server that cannot prove the cluster secret."""
        secret = self._pyrocluster_secret
        if secret is None or check_server_reply(secret, self._pyrocluster_nonce, response):
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
            raise AuthenticationRefused(f"{self._pyroUri.location} refused the connection: {reason}") from exc

    def __copy__(self) -> SecureProxy:
        """A copy for another thread, keeping the secret (Pyro5's copy knows only its own state)."""
        copied: SecureProxy = super().__copy__()
        object.__setattr__(copied, "_pyrocluster_secret", self._pyrocluster_secret)
        return copied


def make_proxy(uri: Any, settings: Settings, timeout_s: float | None = None) -> Pyro5.api.Proxy:
    """A new proxy to ``uri`` (a ``PYRO:`` URI) that speaks our serializer and proves the cluster secret."""
    if settings.serializer not in SAFE_SERIALIZERS:
        raise ConfigError(f"serializer {settings.serializer!r} is not allowed (use msgpack or serpent)")
    uri = Pyro5.core.URI(uri) if isinstance(uri, str) else uri
    if uri.protocol != "PYRO":
        # PYRONAME/PYROMETA would be resolved by Pyro5 through a plain name-server proxy,
        # which cannot prove the secret: look the name up with a proxy from here instead.
        raise ValueError(f"make_proxy needs a PYRO: URI, not {uri.protocol}: ({uri})")
    prepare_transport(settings)
    proxy = SecureProxy(uri)
    object.__setattr__(proxy, "_pyrocluster_secret", settings.secret)
    proxy._pyroSerializer = settings.serializer
    if timeout_s:
        proxy._pyroTimeout = timeout_s
    return proxy


# --- process-wide transport setup: serializer guard and TLS contexts -----------------------------


def prepare_transport(settings: Settings) -> None:
    """Install the serializer guard and, with TLS, our TLS contexts (idempotent)."""
    if settings.secret is not None and not settings.secret:
        raise ConfigError("the cluster secret is empty")
    pyro5_hooks.ensure()
    refuse_unsafe_serializers()
    refuse_compressed_messages()
    if settings.tls:
        if not Pyro5.config.SSL:
            raise ConfigError(
                "TLS is configured but Pyro5 is not: call pyrocluster.config.apply(settings) first"
            )
        tls.install_tls(settings)


class _RefusedSerializer:
    """Stands in Pyro5's by-id table for an unsafe serializer: never decodes, still encodes.

    Pyro5 looks up the serializer of every incoming message by its id (whatever
    ``Pyro5.serializers.serializers`` says) and answers in the same one; keeping ``dumps`` lets
    the peer read the refusal, while ``loads`` refuses before any untrusted byte is decoded.
    """

    def __init__(self, real: Any) -> None:
        self.real = real
        self.serializer_id: int = real.serializer_id
        self.name = type(real).__name__.removesuffix("Serializer").lower()

    def _refuse(self, *_: Any) -> Any:
        raise Pyro5.errors.SecurityError(
            f"pyrocluster refuses the {self.name} serializer; use {' or '.join(SAFE_SERIALIZERS)}"
        )

    loads = loadsCall = _refuse  # noqa: N815 (Pyro5 method name)

    def dumps(self, data: Any) -> bytes:
        """Encode with the real serializer (encoding a reply is safe, decoding is not)."""
        return bytes(self.real.dumps(data))

    def dumpsCall(self, obj: str, method: str, vargs: Any, kwargs: Any) -> bytes:  # noqa: N802
        """Encode a call with the real serializer."""
        return bytes(self.real.dumpsCall(obj, method, vargs, kwargs))


_SAFE_SERIALIZER_IDS = frozenset(
    {Pyro5.serializers.SerpentSerializer.serializer_id, Pyro5.serializers.MsgpackSerializer.serializer_id}
)


def refuse_unsafe_serializers() -> None:
    """Make every Pyro5 endpoint in this process refuse to decode marshal and json (idempotent)."""
    table = Pyro5.serializers.serializers_by_id
    for serializer_id, serializer in list(table.items()):
        if serializer_id not in _SAFE_SERIALIZER_IDS and not isinstance(serializer, _RefusedSerializer):
            table[serializer_id] = _RefusedSerializer(serializer)


def refuse_compressed_messages() -> None:
    """Make every Pyro5 endpoint in this process refuse compressed messages (idempotent).

    Pyro5 inflates a compressed payload with no limit on the result, and does so before the
    handshake is checked: half a megabyte from anyone who can connect becomes a gigabyte in the
    daemon's memory (a decompression bomb). pyrocluster never compresses (``config.apply`` leaves
    Pyro5's COMPRESSION off), so a compressed message is refused unread.
    """
    cls = Pyro5.protocol.ReceivingMessage
    if getattr(cls.add_payload, "pyrocluster_guard", False):
        return
    original = cls.add_payload

    def add_payload(self: Any, payload: Any) -> None:
        if self.flags & Pyro5.protocol.FLAGS_COMPRESSED:
            raise Pyro5.errors.ProtocolError("pyrocluster refuses compressed messages")
        original(self, payload)

    add_payload.pyrocluster_guard = True  # type: ignore[attr-defined]
    # pyro5_hooks checks that Pyro5's own add_payload (the one that inflates) is what we wrap
    add_payload.pyrocluster_original = original  # type: ignore[attr-defined]
    cls.add_payload = add_payload  # type: ignore[method-assign]
