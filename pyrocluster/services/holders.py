"""Which addresses a worker may fetch a kept value from: the daemons of registered workers.

A reference names its holder's ``values`` URI, and a submitter writes the request that carries
it, so a worker must not connect wherever a reference points: it would prove the cluster's
credential to any server a submitter names (a handshake a hostile server could replay to a real
daemon within its window). A worker reads a value only from the daemon of the worker the
reference names, as the name server lists it, and only from that worker's ``values`` object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import Pyro5.core
import Pyro5.errors

from pyrocluster.config import Settings
from pyrocluster.nameserver import registry
from pyrocluster.valueref import ValueRef

TTL_S = 10.0
"""Seconds a holder's listed addresses are trusted before the name server is asked again."""


class RegisteredHolders:
    """Where each worker's daemon listens, as the name server lists it (kept ``TTL_S``)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, frozenset[tuple[str, int]]]] = {}

    def why_not(self, ref: ValueRef) -> str | None:
        """Why ``ref``'s URI is not its holder's ``values`` object on a registered daemon, or None."""
        try:
            uri = Pyro5.core.URI(ref.uri)
        except (Pyro5.errors.PyroError, TypeError, ValueError):
            return f"{ref.uri!r} is not a Pyro5 URI"
        if uri.protocol != "PYRO" or not uri.object.startswith(
            registry.object_name(ref.holder, "values") + "."
        ):
            return f"{ref.uri!r} is not the values object of worker {ref.holder}"
        if (uri.host, uri.port) not in self._listed(ref.holder):
            return f"worker {ref.holder} is not registered at {uri.host}:{uri.port}"
        return None

    def _listed(self, holder: str) -> frozenset[tuple[str, int]]:
        now = self._clock()
        with self._lock:
            seen = self._seen.get(holder)
            if seen is not None and seen[0] > now:
                return seen[1]
        try:
            with registry.connect(self._settings) as ns:
                listing: dict[str, Any] = ns.list(prefix=f"{registry.WORKER_PREFIX}{holder}.")
        except Exception:  # the name server away: nothing is trusted, the value counts as gone
            return frozenset()
        places = set()
        for text in listing.values():
            try:
                uri = Pyro5.core.URI(text)
            except Pyro5.errors.PyroError:
                continue
            places.add((uri.host, uri.port))
        found = frozenset(places)
        with self._lock:
            self._seen[holder] = (now + TTL_S, found)
        return found
