"""Role tokens: narrower credentials than the cluster secret, signed by a key derived from it.

A token is ``pct1.<claims>.<signature>.<key>`` (each part base64url):

* ``claims`` is JSON ``{"v", "n" name, "r" role, "iat" issued-at ms, "exp" expiry s (0: never),
  "k" the token's own public key, "c" the cluster's public key}``;
* ``signature`` is the cluster's Ed25519 signature of the claims. The cluster key pair is derived
  from the secret (seed = HMAC-SHA256(secret, ``pyrocluster-token-signing``)), so only a holder of
  the secret can issue, and no token reveals the secret or can be edited into a stronger one
  (changing a claim breaks the signature);
* ``key`` is the seed of the token's own Ed25519 key pair: the holder signs each handshake with
  it, so the token itself never crosses the wire (only ``pct1.<claims>.<signature>``, the
  *certificate*, does).

Public-key signatures rather than HMACs let a process that holds only a token (a ``submit``
serving its job's progress and cancel) check other tokens too: every process can verify, only
the secret can sign. Pure code: the clock is passed in.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# cryptography is imported by the functions that sign or verify, not here: every process imports
# this module for Role, and a cluster without a secret or token never signs (about 0.05 s of CPU
# off each process's start).

PREFIX = "pct1"
SIGNING_CONTEXT = b"pyrocluster-token-signing"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""What a token name may be: it appears in logs and name-server entries."""
MAX_TOKEN_CHARS = 2048
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Role(IntEnum):
    """What a credential may do; each role includes the ones before it."""

    VIEWER = 1
    SUBMITTER = 2
    OPERATOR = 3
    SECRET = 4

    @property
    def label(self) -> str:
        """The role as users write it (``viewer`` ... ``secret``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``viewer``/``submitter``/``operator`` (or ``secret``); ValueError otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r} (choose viewer, submitter or operator)") from None


class TokenInvalid(ValueError):
    """A token that is malformed, not signed by this cluster, or expired."""


@dataclass(frozen=True)
class Claims:
    """What a token says about its holder."""

    name: str
    role: Role
    issued_ms: int
    expires: int
    """Unix seconds after which the token is refused; 0 for never."""
    key: bytes
    """The token's public key (raw, 32 bytes)."""
    cluster: bytes
    """The cluster's public key (raw, 32 bytes)."""

    def expired(self, now: float) -> bool:
        """True once ``now`` is past the expiry."""
        return bool(self.expires) and now >= self.expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@functools.lru_cache(maxsize=8)
def cluster_key(secret: bytes) -> Ed25519PrivateKey:
    """The cluster's signing key, derived from the secret (HMAC, one way)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(hmac.new(secret, SIGNING_CONTEXT, hashlib.sha256).digest())


@functools.lru_cache(maxsize=8)
def cluster_public(secret: bytes) -> bytes:
    """The cluster's public key (raw), derived from the secret."""
    return _raw(cluster_key(secret).public_key())


@functools.lru_cache(maxsize=4096)
def public_key(raw: bytes) -> Ed25519PublicKey:
    """A public key from its 32 raw bytes (kept: loading one costs as much as a verification)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``1w``, ``3600s`` (or a sum: ``1d12h``) -> seconds; ValueError otherwise."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"--expires {text!r}: expected a duration such as 30d, 12h, 90m or 1w")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"--expires {text!r}: must be longer than zero")
    return seconds


def issue(secret: bytes, name: str, role: Role, now: float, lifetime_s: int) -> str:
    """A new token for ``name`` with ``role``, valid ``lifetime_s`` from ``now``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"token name {name!r}: use 1-64 letters, digits and _ . @ - (starting with a letter or digit)"
        )
    if role is Role.SECRET:
        raise ValueError("a token cannot carry the secret's role")
    own = Ed25519PrivateKey.generate()
    claims = {
        "v": 1,
        "n": name,
        "r": role.label,
        "iat": int(now * 1000),
        "exp": int(now + lifetime_s),
        "k": _raw(own.public_key()).hex(),
        "c": cluster_public(secret).hex(),
    }
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    signature = cluster_key(secret).sign(body)
    seed = own.private_bytes_raw()
    return ".".join((PREFIX, _b64(body), _b64(signature), _b64(seed)))


@dataclass(frozen=True)
class Token:
    """A parsed token as its holder uses it: the certificate it shows and the key it signs with."""

    certificate: str
    claims: Claims
    private: Ed25519PrivateKey

    def sign(self, message: bytes) -> str:
        """Hex Ed25519 signature of ``message`` with the token's own key."""
        return self.private.sign(message).hex()


def _decode_claims(body: bytes) -> Claims:
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("v") != 1:
        raise TokenInvalid("unsupported token version")
    name, role, iat, exp = data.get("n"), data.get("r"), data.get("iat"), data.get("exp")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise TokenInvalid("bad token name")
    if type(iat) is not int or type(exp) is not int or not isinstance(role, str):
        raise TokenInvalid("malformed token claims")
    parsed_role = Role.parse(role)
    if parsed_role is Role.SECRET:
        raise TokenInvalid("a token cannot carry the secret's role")
    key, cluster = bytes.fromhex(str(data.get("k"))), bytes.fromhex(str(data.get("c")))
    if len(key) != 32 or len(cluster) != 32:
        raise TokenInvalid("malformed token keys")
    return Claims(name, parsed_role, iat, exp, key, cluster)


@functools.lru_cache(maxsize=4096)
def verify_certificate(certificate: str, cluster: bytes) -> Claims:
    """The claims of ``pct1.<claims>.<signature>`` when the cluster key ``cluster`` signed them.

    TokenInvalid otherwise. Expiry and revocation are the caller's to check (they change with
    time); the signature check is cached, so a reconnect costs a dictionary lookup.
    """
    from cryptography.exceptions import InvalidSignature

    if not isinstance(certificate, str) or len(certificate) > MAX_TOKEN_CHARS:
        raise TokenInvalid("malformed token")
    parts = certificate.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenInvalid("malformed token (expected pct1.<claims>.<signature>)")
    try:
        body, signature = _unb64(parts[1]), _unb64(parts[2])
        public_key(cluster).verify(signature, body)
        claims = _decode_claims(body)
    except InvalidSignature:
        raise TokenInvalid("token not signed by this cluster's secret") from None
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, TokenInvalid):
            raise
        raise TokenInvalid("malformed token") from None
    if claims.cluster != cluster:
        raise TokenInvalid("token of another cluster")
    return claims


def parse(text: str) -> Token:
    """A token as its holder loads it (``--token-file``, ``PYROCLUSTER_TOKEN``); TokenInvalid if not one.

    The holder trusts the cluster key its own token names: it got the token from whoever holds the
    secret, and checks every peer against that key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = text.strip()
    parts = text.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise TokenInvalid("not a pyrocluster token (expected pct1.<claims>.<signature>.<key>)")
    certificate = ".".join(parts[:3])
    try:
        body = _unb64(parts[1])
        claims = _decode_claims(body)
        private = Ed25519PrivateKey.from_private_bytes(_unb64(parts[3]))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, TokenInvalid):
            raise
        raise TokenInvalid("malformed token") from None
    if _raw(private.public_key()) != claims.key:
        raise TokenInvalid("token key does not match its claims")
    verify_certificate(certificate, claims.cluster)
    return Token(certificate, claims, private)


def verify_signature(claims: Claims, message: bytes, signature: Any) -> bool:
    """True when ``signature`` (hex) is the token holder's signature of ``message``."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(signature, str) or len(signature) != 128:
        return False
    try:
        public_key(claims.key).verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_cluster_signature(cluster: bytes, message: bytes, signature: Any) -> bool:
    """True when ``signature`` (hex) is the cluster key's signature of ``message`` (by a secret holder)."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(signature, str) or len(signature) != 128:
        return False
    try:
        public_key(cluster).verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True
