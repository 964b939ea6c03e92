"""The connect handshake, both sides, as pure functions (the clock is passed in).

It rides on Pyro5's single connect round trip, so both proofs fit in it. A *credential* is the
cluster secret or a role token (``tokens.py``):

* the client sends ``{"v", "nonce", "ts", "obj", ...proof}`` with a fresh random nonce per
  connection (reconnects included). The proof covers ``pyrocluster/1|client|nonce|ts|obj``:
  with the secret, ``mac`` = HMAC-SHA256(secret, that) and ``sig``, the cluster key's signature
  of it (for servers that hold only a token); with a token, ``cert`` (the token's signed claims)
  and ``sig``, the token key's signature of it;
* the server refuses a timestamp more than :data:`HANDSHAKE_WINDOW_S` off its clock, a wrong
  proof, an expired token, an object it does not hold (a worker's object ids end in a random
  per-process part, so a handshake captured on one worker process is useless on the next one
  under the same name) and a nonce it has already accepted within the window (a replay);
* the server answers ``{"v", "nonce", ...proof}`` covering ``pyrocluster/1|server|client
  nonce|server nonce`` the same way, which the client checks, so a server that holds neither the
  secret nor a token of this cluster is refused too.

Only MACs, signatures and a token's public claims cross the wire, never the secret or a token's
key. Without TLS a handshake authenticates the connection only at its start: use TLS where the
network itself is not trusted.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import hmac
import math
import secrets
import threading
from dataclasses import dataclass
from typing import Any, TypeGuard

import Pyro5.errors

from pyrocluster import tokens
from pyrocluster.roles import AUTH_REFUSAL_TAG, SECRET_PEER, Peer, expired_reason
from pyrocluster.tokens import Role, Token

HANDSHAKE_VERSION = 1
"""Version of the handshake format; a peer speaking another one is refused."""
HANDSHAKE_WINDOW_S = 60.0
"""Seconds a client handshake's timestamp may be off the server clock (clocks must agree this well)."""
MAX_REMEMBERED_NONCES = 100_000
"""Accepted client nonces a daemon remembers at most (the ones younger than the window)."""
REFUSAL_TAG = AUTH_REFUSAL_TAG
"""Prefix of every handshake refusal a daemon sends, so the client can report it as such."""
SIGN_PLEASE = "this server holds a token, not the secret: sign the handshake"
"""The refusal that asks a client holding the secret to connect again with a signed hello."""

_NONCE_BYTES = 16
_NONCE_HEX = 2 * _NONCE_BYTES
_MAC_HEX = 2 * hashlib.sha256().digest_size
_HEX_DIGITS = frozenset("0123456789abcdef")


class HandshakeRefused(Pyro5.errors.SecurityError):
    """A daemon refused a client's handshake; Pyro5 sends ``str(self)`` back as the refusal."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{REFUSAL_TAG}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Credential:
    """What this process proves: the cluster secret or a token (exactly one)."""

    secret: bytes | None = None
    token: Token | None = None

    @property
    def cluster(self) -> bytes:
        """The cluster's public key: derived from the secret, or named by the token."""
        if self.secret is not None:
            return tokens.cluster_public(self.secret)
        assert self.token is not None
        return self.token.claims.cluster

    @property
    def peer(self) -> Peer:
        """This credential as a peer sees it."""
        if self.token is None:
            return SECRET_PEER
        c = self.token.claims
        return Peer(c.name, c.role, c.issued_ms, c.expires)

    @property
    def role(self) -> Role:
        """The credential's role (``SECRET`` for the secret)."""
        return self.peer.role


@functools.lru_cache(maxsize=16)
def credential(secret: bytes | None, token: str | None) -> Credential | None:
    """The credential of a process's settings (cached: parsing a token checks its signature)."""
    if secret is not None:
        return Credential(secret=secret)
    if token is not None:
        return Credential(token=tokens.parse(token))
    return None


def _message(*fields: str) -> bytes:
    return "|".join(("pyrocluster/1", *fields)).encode()


def _mac(secret: bytes, *fields: str) -> str:
    return hmac.new(secret, _message(*fields), hashlib.sha256).hexdigest()


def _cluster_sign(secret: bytes, message: bytes) -> str:
    return tokens.cluster_key(secret).sign(message).hex()


def _prove(cred: Credential, fields: tuple[str, ...], signed: bool) -> dict[str, str]:
    """The proof of ``cred`` over ``fields``: with the secret a MAC (and the cluster key's signature
    when ``signed``, for peers that hold only a token); with a token its certificate and signature."""
    if cred.secret is not None:
        proof = {"mac": _mac(cred.secret, *fields)}
        if signed:
            proof["sig"] = _cluster_sign(cred.secret, _message(*fields))
        return proof
    assert cred.token is not None
    return {"cert": cred.token.certificate, "sig": cred.token.sign(_message(*fields))}


def _is_hex(value: Any, length: int) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == length and set(value) <= _HEX_DIGITS


def client_hello(
    cred: Credential | bytes, object_id: str, now: float, signed: bool = False
) -> dict[str, Any]:
    """A fresh client handshake proving ``cred`` for a connection to ``object_id``.

    With the secret it carries a MAC, and also the cluster key's signature when ``signed`` (a
    server that holds only a token asks for it with :data:`SIGN_PLEASE`): signing costs ~20
    times a MAC, so the common case (secret to secret) does without.
    """
    if isinstance(cred, bytes):
        cred = Credential(secret=cred)
    nonce = secrets.token_hex(_NONCE_BYTES)
    ts = int(now)
    hello: dict[str, Any] = {"v": HANDSHAKE_VERSION, "nonce": nonce, "ts": ts, "obj": object_id}
    hello.update(_prove(cred, ("client", nonce, str(ts), object_id), signed))
    return hello


def refused_from(ts: float, window_s: float = HANDSHAKE_WINDOW_S) -> float:
    """The first server time at which :func:`check_client_hello` refuses a hello stamped ``ts``.

    The check compares whole seconds (``int(now) - ts``), so a hello stays acceptable until
    ``ts + floor(window) + 1``, not ``ts + window``: the replay guard keeps nonces that long.
    """
    return float(ts + math.floor(window_s) + 1)


def _token_peer(cluster: bytes, certificate: Any, message: bytes, signature: Any, now: float) -> Peer:
    """The peer a token certificate and its signature of ``message`` prove; HandshakeRefused otherwise."""
    try:
        claims = tokens.verify_certificate(certificate, cluster)
    except tokens.TokenInvalid as exc:
        raise HandshakeRefused(f"invalid token: {exc}") from None
    if claims.expired(now):
        raise HandshakeRefused(expired_reason(claims.name))
    if not tokens.verify_signature(claims, message, signature):
        raise HandshakeRefused(f"token {claims.name!r}: wrong signature (not its holder)")
    return Peer(claims.name, claims.role, claims.issued_ms, claims.expires)


def check_client_hello(
    cred: Credential | bytes, hello: Any, now: float, window_s: float = HANDSHAKE_WINDOW_S
) -> Peer:
    """The peer ``hello`` proves (secret or token); HandshakeRefused unless it is well-formed and timely."""
    if isinstance(cred, bytes):
        cred = Credential(secret=cred)
    if not isinstance(hello, dict) or not ({"mac", "sig"} & hello.keys()):
        raise HandshakeRefused(
            "this server requires the cluster secret or a token and the client sent no proof of either"
        )
    if hello.get("v") != HANDSHAKE_VERSION:
        raise HandshakeRefused(f"unsupported handshake version {hello.get('v')!r}")
    nonce, ts, obj = hello.get("nonce"), hello.get("ts"), hello.get("obj")
    if not _is_hex(nonce, _NONCE_HEX) or type(ts) is not int or not isinstance(obj, str):
        raise HandshakeRefused("malformed handshake")
    skew = int(now) - ts  # int arithmetic: a huge ts must not overflow a float
    if abs(skew) > window_s:
        raise HandshakeRefused(
            f"handshake timestamp is {skew:+d} s off the server clock (allowed: {window_s:.0f} s);"
            " an old handshake replayed, or clocks out of sync"
        )
    fields = ("client", nonce, str(ts), obj)
    if "cert" in hello:
        return _token_peer(cred.cluster, hello["cert"], _message(*fields), hello.get("sig"), now)
    mac = hello.get("mac")
    if cred.secret is not None and mac is not None:
        if not _is_hex(mac, _MAC_HEX):
            raise HandshakeRefused("malformed handshake")
        if not hmac.compare_digest(mac, _mac(cred.secret, *fields)):
            raise HandshakeRefused("wrong cluster secret")
        return SECRET_PEER
    if "sig" not in hello:
        raise HandshakeRefused(SIGN_PLEASE)
    if not tokens.verify_cluster_signature(cred.cluster, _message(*fields), hello.get("sig")):
        raise HandshakeRefused("wrong cluster secret")
    return SECRET_PEER


def server_reply(cred: Credential | bytes, client_nonce: str, signed: bool = False) -> dict[str, Any]:
    """The server's proof of ``cred``, bound to the client's nonce.

    With the secret it is a MAC, plus the cluster key's signature when ``signed`` (the client
    holds a token and cannot check a MAC); with a token, its certificate and signature.
    """
    if isinstance(cred, bytes):
        cred = Credential(secret=cred)
    nonce = secrets.token_hex(_NONCE_BYTES)
    return {"v": HANDSHAKE_VERSION, "nonce": nonce, **_prove(cred, ("server", client_nonce, nonce), signed)}


def check_server_reply(cred: Credential | bytes, client_nonce: str, reply: Any, now: float = 0.0) -> bool:
    """True when ``reply`` proves the server holds this cluster's secret or one of its tokens."""
    if isinstance(cred, bytes):
        cred = Credential(secret=cred)
    if not isinstance(reply, dict) or reply.get("v") != HANDSHAKE_VERSION:
        return False
    nonce = reply.get("nonce")
    if not _is_hex(nonce, _NONCE_HEX):
        return False
    fields = ("server", client_nonce, nonce)
    mac = reply.get("mac")
    if cred.secret is not None and mac is not None:
        return _is_hex(mac, _MAC_HEX) and hmac.compare_digest(mac, _mac(cred.secret, *fields))
    if "cert" in reply:
        try:
            _token_peer(cred.cluster, reply["cert"], _message(*fields), reply.get("sig"), now)
        except HandshakeRefused:
            return False
        return True
    return tokens.verify_cluster_signature(cred.cluster, _message(*fields), reply.get("sig"))


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
