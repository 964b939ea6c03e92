"""Who is on the other end of a connection, and the per-call check of what that peer may do.

The handshake (``handshake.py``) learns the peer: the cluster secret, or a token's name and role.
The daemon keeps it on the connection; every exposed Pyro5 method that reads or changes anything
is wrapped in :func:`requires`, which refuses a call beyond the peer's role before the method
runs, and a call whose token has since expired or been revoked. A daemon without a secret keeps
no peer: its connections may do everything (it listens on loopback only).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import Pyro5.callcontext
import Pyro5.errors

from pyrocluster.errors import RoleRefused
from pyrocluster.tokens import Role

log = logging.getLogger(__name__)
audit_log = logging.getLogger("pyrocluster.audit")
"""Every state-changing action, with who asked (``audit()``)."""

ROLE_REFUSAL_TAG = "pyrocluster role refused"
"""Prefix of a refusal for a role too weak for the call (the client exits 77)."""
AUTH_REFUSAL_TAG = "pyrocluster authentication refused"
"""Prefix of a refusal for a missing, wrong, expired or revoked credential (the client exits 3)."""
_LAPSED = re.compile(r"token .+ (expired|was revoked)\s*$")


def expired_reason(name: str) -> str:
    """Why a token is refused once past its expiry."""
    return f"token {name!r} expired"


def lapsed(refusal: str) -> bool:
    """True when a daemon's refusal says our token expired or was revoked: every daemon of the
    cluster refuses it alike, so the caller stops instead of trying another worker."""
    return bool(_LAPSED.search(refusal))


@dataclass(frozen=True, slots=True)
class Peer:
    """The credential a connection proved: the secret, or a token's name, role, issue and expiry."""

    name: str
    role: Role
    issued_ms: int = 0
    expires: int = 0
    rank: int = field(init=False, repr=False, compare=False)
    """``int(role)``, kept: the per-call check compares plain ints (an IntEnum costs more)."""
    is_token: bool = field(init=False, repr=False, compare=False)
    """True for a token (the secret neither expires nor is revoked)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank", int(self.role))
        object.__setattr__(self, "is_token", self.role is not Role.SECRET)

    def describe(self) -> str:
        """``name (role)`` for logs and refusals."""
        return f"{self.name} ({self.role.label})" if self.is_token else "the cluster secret"


SECRET_PEER = Peer("secret", Role.SECRET)
"""The secret's holder, and every peer of a daemon that runs without a secret."""


class Revocations:
    """Token names revoked cluster-wide, each with the instant (ms) it was revoked; thread-safe.

    A token is refused when its name is revoked and it was issued at or before that instant, so
    a new token issued under the same name later works.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: dict[str, int] = {}
        self._listeners: list[Callable[[dict[str, int]], None]] = []

    def listen(self, listener: Callable[[dict[str, int]], None]) -> None:
        """Call ``listener(every revocation)`` now and whenever one is added (a worker hands them
        to its slot processes, which answer direct calls)."""
        with self._lock:
            self._listeners.append(listener)
            known = dict(self._revoked)
        listener(known)

    def update(self, revoked: Mapping[str, int]) -> None:
        """Add what the name server lists (nothing is forgotten while this process runs)."""
        with self._lock:
            before = dict(self._revoked)
            for name, at_ms in revoked.items():
                self._revoked[name] = max(at_ms, self._revoked.get(name, 0))
            changed = self._revoked != before
            known, listeners = dict(self._revoked), list(self._listeners)
        if changed:
            for listener in listeners:
                listener(known)

    def known(self) -> dict[str, int]:
        """Every revocation this process knows."""
        with self._lock:
            return dict(self._revoked)

    def refuses(self, peer: Peer) -> bool:
        """True when ``peer`` is a token revoked after it was issued."""
        at = self._revoked.get(peer.name)
        return at is not None and peer.is_token and peer.issued_ms <= at


REVOKED = Revocations()
"""This process's view of the cluster's revocations (kept fresh by ``revocations.Watcher``)."""


def invalid_reason(peer: Peer, now: float) -> str | None:
    """Why ``peer``'s credential no longer holds (expired, revoked), or None."""
    if not peer.is_token:
        return None
    if peer.expires and now >= peer.expires:
        return expired_reason(peer.name)
    if REVOKED.refuses(peer):
        return f"token {peer.name!r} was revoked"
    return None


_context = Pyro5.callcontext.current_context


def current_peer() -> Peer:
    """The peer of the Pyro5 call being handled in this thread (the secret outside a call)."""
    peer = getattr(getattr(_context, "client", None), "pyrocluster_peer", None)
    return peer if isinstance(peer, Peer) else SECRET_PEER


def refusal(peer: Peer, role: Role, action: str) -> str:
    """The one line a refused call gets: names the role and the action."""
    return f"{ROLE_REFUSAL_TAG}: role {peer.role.label} ({peer.name}) may not {action} (needs {role.label})"


def check(role: Role, action: str) -> Peer:
    """The current peer when it may do ``action`` (needing ``role``).

    A call beyond the role raises PermissionError (the connection stays: the peer is who it
    said); a token expired or revoked since the handshake raises SecurityError, on which Pyro5
    closes the connection.
    """
    peer = getattr(getattr(_context, "client", None), "pyrocluster_peer", SECRET_PEER)
    if peer.is_token:
        reason = invalid_reason(peer, time.time())
        if reason:
            raise Pyro5.errors.SecurityError(f"{AUTH_REFUSAL_TAG}: {reason}")
    if peer.rank < role:
        log.warning("refused: %s may not %s", peer.describe(), action)
        raise PermissionError(refusal(peer, role, action))
    return peer


F = TypeVar("F", bound=Callable[..., Any])


def requires(role: Role, action: str) -> Callable[[F], F]:
    """Decorate an exposed method: it runs only for a peer with ``role`` or above."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def checked(*args: Any, **kwargs: Any) -> Any:
            check(role, action)
            return method(*args, **kwargs)

        checked.pyrocluster_role = role  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return wrap


def require_own(peer: Peer, role: Role, action: str) -> None:
    """Refuse, before contacting anyone, an action beyond this process's own credential (exit 77)."""
    if peer.rank < role:  # plain ints: on every submit
        raise RoleRefused(refusal(peer, role, action).partition(": ")[2])


def audit(peer: Peer, action: str, **details: Any) -> None:
    """Log a state-changing action with who asked for it (name and role)."""
    extra = "".join(f" {key}={value}" for key, value in details.items())
    audit_log.info("audit: %s by %s role=%s%s", action, peer.name, peer.role.label, extra)
