"""The name server's per-call role checks: who may read, and who may register or remove what.

Reading (lookup, list, yellow pages) needs a viewer. Registering, changing or removing a name
needs the secret, except for the names lesser roles publish: a submitter its jobs (running and
finished), an operator a schedule's pause mark. Removing by prefix or pattern needs the secret.
Revocations registered here reach this process's own checks at once.
"""

from __future__ import annotations

from typing import Any

import Pyro5.api
import Pyro5.nameserver

from pyrocluster import revocations
from pyrocluster.nameserver.pauses import PAUSED_PREFIX
from pyrocluster.roles import REVOKED, audit, check, requires
from pyrocluster.tokens import Role

ROLE_PREFIXES = (
    (Role.SUBMITTER, ("pyrocluster.job.", "pyrocluster.finished.", "pyrocluster.failures.")),
    (Role.OPERATOR, (PAUSED_PREFIX,)),
)
"""Names a role below the secret may register or remove."""


def role_for(name: Any) -> Role:
    """The weakest role that may register or remove ``name``."""
    if isinstance(name, str):
        for role, prefixes in ROLE_PREFIXES:
            if name.startswith(prefixes):
                return role
    return Role.SECRET


def _audited(action: str, name: str) -> None:
    """Log the state changes users ask for by name (pause, resume, token revoke and issue)."""
    peer = check(Role.VIEWER, action)
    if name.startswith(PAUSED_PREFIX):
        verb = "pause" if action == "register" else "resume"
        audit(peer, verb, schedule=name[len(PAUSED_PREFIX) :])
    elif name.startswith(revocations.REVOKED_PREFIX) and action == "register":
        audit(peer, "token revoke", token=name[len(revocations.REVOKED_PREFIX) :])
    elif name.startswith(revocations.TOKEN_PREFIX) and action == "register":
        audit(peer, "token issue", token=name[len(revocations.TOKEN_PREFIX) :])


@Pyro5.api.expose
class GuardedNameServer(Pyro5.nameserver.NameServer):
    """Pyro5's name server with every method checked against the caller's role."""

    @requires(Role.VIEWER, "count names")
    def count(self) -> Any:
        """Pyro5's count, for viewers."""
        return super().count()

    @requires(Role.VIEWER, "look up names")
    def lookup(self, name: Any, return_metadata: Any = False) -> Any:
        """Pyro5's lookup, for viewers."""
        return super().lookup(name, return_metadata)

    @requires(Role.VIEWER, "list names")
    def list(self, prefix: Any = None, regex: Any = None, return_metadata: Any = False) -> Any:
        """Pyro5's list, for viewers."""
        return super().list(prefix, regex, return_metadata)

    @requires(Role.VIEWER, "look up metadata")
    def yplookup(self, meta_all: Any = None, meta_any: Any = None, return_metadata: Any = True) -> Any:
        """Pyro5's yellow-pages lookup, for viewers."""
        return super().yplookup(meta_all, meta_any, return_metadata)

    @requires(Role.VIEWER, "ping the name server")
    def ping(self) -> Any:
        """Pyro5's ping, for viewers."""
        return super().ping()

    def register(self, name: Any, uri: Any, safe: Any = False, metadata: Any = None) -> Any:
        """Pyro5's register, for the role the name needs (``role_for``)."""
        check(role_for(name), f"register the name {name!r}")
        result = super().register(name, uri, safe, metadata)
        if isinstance(name, str):
            if name.startswith(revocations.REVOKED_PREFIX):
                REVOKED.update(revocations.parse_revocations({name: (uri, metadata)}))
            _audited("register", name)
        return result

    def set_metadata(self, name: Any, metadata: Any) -> Any:
        """Pyro5's set_metadata, for the role the name needs."""
        check(role_for(name), f"change the name {name!r}")
        return super().set_metadata(name, metadata)

    def remove(self, name: Any = None, prefix: Any = None, regex: Any = None) -> Any:
        """Pyro5's remove: one name for the role it needs; by prefix or pattern for the secret."""
        if prefix or regex:
            check(Role.SECRET, "remove names by prefix or pattern")
        else:
            check(role_for(name), f"remove the name {name!r}")
        removed = super().remove(name, prefix, regex)
        if removed and isinstance(name, str):
            _audited("remove", name)
        return removed


def install(daemon: Any) -> None:
    """Make ``daemon``'s name server (Pyro5's, just created) check roles; load the stored revocations."""
    nameserver = daemon.nameserver
    nameserver.__class__ = GuardedNameServer
    stored = Pyro5.nameserver.NameServer.list(
        nameserver, prefix=revocations.REVOKED_PREFIX, return_metadata=True
    )
    REVOKED.update(revocations.parse_revocations(stored))
