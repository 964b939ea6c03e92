"""Token records and revocations, published through the name server, and the watcher that reads them.

``token issue`` registers ``pyrocluster.token.<name>`` (role, expiry, issue instant: what
``token list`` shows); ``token revoke`` registers ``pyrocluster.revoked.<name>`` with the instant
of the revocation. Every process that checks tokens runs a :class:`Watcher`, which reads the
revocations every :data:`REFRESH_S` seconds into ``roles.REVOKED``, so a revocation holds
everywhere within 5 s; a watcher that holds the secret also puts back the revocations it knows
when the name server lost them (it restarted with memory storage).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pyrocluster.roles import REVOKED, Peer

log = logging.getLogger(__name__)

TOKEN_PREFIX = "pyrocluster.token."
REVOKED_PREFIX = "pyrocluster.revoked."
META_ROLE = "pyrocluster.role:"
META_EXPIRES = "pyrocluster.expires:"
META_ISSUED = "pyrocluster.issued-ms:"
META_REVOKED = "pyrocluster.revoked-ms:"
PLACEHOLDER_URI = "PYRO:pyrocluster.record@127.0.0.1:9"
"""What a record entry points at: the name server stores URIs, and these are data, not objects."""
REFRESH_S = 2.0
"""Seconds between two reads of the revocations (a revocation holds everywhere within 5 s)."""


def _meta(metadata: Any, prefix: str) -> str | None:
    for item in metadata or ():
        if isinstance(item, str) and item.startswith(prefix):
            return item[len(prefix) :]
    return None


def _int_meta(metadata: Any, prefix: str) -> int:
    value = _meta(metadata, prefix)
    return int(value) if value is not None and value.isdigit() else 0


def record_token(ns: Any, peer: Peer) -> None:
    """Publish that a token was issued (``token list`` reads it)."""
    meta = {
        META_ROLE + peer.role.label,
        f"{META_EXPIRES}{peer.expires}",
        f"{META_ISSUED}{peer.issued_ms}",
    }
    ns.register(TOKEN_PREFIX + peer.name, PLACEHOLDER_URI, safe=False, metadata=meta)


def publish_revocation(ns: Any, name: str, at_ms: int) -> None:
    """Revoke every token named ``name`` issued at or before ``at_ms``."""
    ns.register(REVOKED_PREFIX + name, PLACEHOLDER_URI, safe=False, metadata={f"{META_REVOKED}{at_ms}"})


def parse_revocations(listing: Mapping[str, Any]) -> dict[str, int]:
    """``{name: revoked at ms}`` from ``list(prefix=REVOKED_PREFIX, return_metadata=True)``."""
    found = {}
    for entry, value in listing.items():
        metadata = value[1] if isinstance(value, (tuple, list)) and len(value) == 2 else ()
        at = _int_meta(metadata, META_REVOKED)
        if entry.startswith(REVOKED_PREFIX) and at:
            found[entry[len(REVOKED_PREFIX) :]] = at
    return found


def read_revocations(ns: Any) -> dict[str, int]:
    """The revocations the name server lists."""
    return parse_revocations(ns.list(prefix=REVOKED_PREFIX, return_metadata=True))


def read_tokens(ns: Any) -> list[dict[str, Any]]:
    """Every issued token the name server lists: name, role, issued_ms, expires, revoked_ms."""
    revoked = read_revocations(ns)
    rows = []
    for entry, (_, metadata) in sorted(ns.list(prefix=TOKEN_PREFIX, return_metadata=True).items()):
        name = entry[len(TOKEN_PREFIX) :]
        issued = _int_meta(metadata, META_ISSUED)
        at = revoked.get(name, 0)
        rows.append(
            {
                "name": name,
                "role": _meta(metadata, META_ROLE) or "?",
                "issued_ms": issued,
                "expires": _int_meta(metadata, META_EXPIRES),
                "revoked_ms": at if at >= issued else 0,
            }
        )
    return rows


class Watcher:
    """Keeps ``roles.REVOKED`` fresh from the name server, in a daemon thread, until stopped."""

    def __init__(self, connect: Callable[[], Any], republish: bool = False) -> None:
        self._connect = connect
        self._republish = republish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="revocations", daemon=True)

    def start(self) -> Watcher:
        """Read once now (so the first check knows), then every REFRESH_S in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading (does not wait for a read in progress)."""
        self._stop.set()

    def _run(self) -> None:
        ns: Any = None
        while True:
            try:
                if ns is None:
                    ns = self._connect()
                listed = read_revocations(ns)
                REVOKED.update(listed)
                if self._republish:
                    for name, at in REVOKED.known().items():
                        if listed.get(name, 0) < at:  # the name server lost it (restarted)
                            publish_revocation(ns, name, at)
            except Exception as exc:  # name server away: keep what we know, try again
                log.debug("could not read the revocations: %s", exc)
                release = getattr(ns, "_pyroRelease", None)
                if release is not None:
                    release()
                ns = None
            if self._stop.wait(REFRESH_S):
                break
        release = getattr(ns, "_pyroRelease", None)
        if release is not None:
            release()


def watch(settings: Any) -> Watcher | None:
    """Start a watcher for a process with ``settings`` (None when it has no credential to check with)."""
    if not settings.authenticated:
        return None
    from pyrocluster.nameserver import registry

    connect = lambda: registry.connect(settings, timeout_s=2.0)  # noqa: E731
    return Watcher(connect, republish=settings.secret is not None).start()
