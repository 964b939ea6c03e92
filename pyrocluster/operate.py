"""Operator actions by name: drain or undrain a worker, pause or resume a schedule, cancel a job.

The CLI and the dashboard both call these with the caller's own settings (the dashboard with the
token the request showed), so the process that performs the action checks and logs that caller.
Each refuses an action beyond the caller's own role before contacting anyone (RoleRefused, exit
77) and an unknown name with LookupError.
"""

from __future__ import annotations

import time
from typing import Any

import Pyro5.errors

from pyrocluster.auth import make_proxy, own_peer
from pyrocluster.config import Settings
from pyrocluster.errors import ClusterUnreachable
from pyrocluster.nameserver import pauses, registry
from pyrocluster.nameserver.schedules import SCHEDULER_PREFIX, published_schedules
from pyrocluster.roles import require_own
from pyrocluster.tokens import Role

CONTROL_TIMEOUT_S = 5.0
"""Seconds a worker has to answer drain or undrain."""


def set_draining(settings: Settings, worker: str, draining: bool) -> bool:
    """Drain (take no new work, stay up) or undrain ``worker``; True when its state changed."""
    verb = "drain" if draining else "undrain"
    require_own(own_peer(settings), Role.OPERATOR, f"{verb} workers")
    ns = registry.connect(settings)
    try:
        entry = next((e for e in registry.find_workers(ns) if e.name == worker), None)
    finally:
        ns._pyroRelease()
    if entry is None or registry.CONTROL not in entry.uris:
        raise LookupError(f"no worker named {worker!r} (see `pyrocluster status`)")
    proxy = make_proxy(entry.uris[registry.CONTROL], settings, timeout_s=CONTROL_TIMEOUT_S)
    try:
        return bool(proxy.drain() if draining else proxy.undrain())
    except Pyro5.errors.CommunicationError as exc:  # registered, but dead or frozen: exit 3
        raise ClusterUnreachable(f"worker {worker!r} did not answer ({type(exc).__name__}: {exc})") from None
    finally:
        proxy._pyroRelease()


def known_schedules(ns: Any) -> set[str]:
    """Names of the schedules running schedulers publish."""
    listing = ns.list(prefix=SCHEDULER_PREFIX, return_metadata=True)
    return {s["name"] for s in published_schedules(listing, time.time())}


def set_paused(settings: Settings, schedule: str, paused: bool) -> bool:
    """Pause or resume ``schedule`` cluster-wide; True when that changed anything."""
    require_own(own_peer(settings), Role.OPERATOR, f"{'pause' if paused else 'resume'} schedules")
    ns = registry.connect(settings)
    try:
        if schedule not in known_schedules(ns) and schedule not in pauses.paused_schedules(ns):
            raise LookupError(f"no schedule named {schedule!r} (see `pyrocluster status`)")
        return pauses.set_paused(ns, schedule, paused)
    finally:
        ns._pyroRelease()
