"""The name server forgets registrations whose owner is gone: a SIGKILLed worker, a killed ``submit``.

A process that dies without unregistering leaves its entries behind, and ``status`` would list it
``unreachable`` (or its job ``lost``) for ever. The name server process pings every registered
worker's control object and job object each ``interval_s``; one silent for ``forget_after_s``
is removed (a lost job is first recorded as a finished job in state ``lost``, so it stays
visible for the usual 15 minutes). A worker that was only paused re-registers at its next
heartbeat. The rule is :func:`to_forget`, pure, with the clock passed in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from pyrocluster.config import Settings
from pyrocluster.nameserver import finished, registry

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 2.0
"""Seconds a registered object has to answer one ping."""


def to_forget(
    silent_since: dict[str, float], answered: dict[str, bool], now: float, forget_after_s: float
) -> list[str]:
    """Update ``silent_since`` with this round's answers; return the names silent for too long.

    A name that answered, or is no longer registered, leaves ``silent_since``.
    """
    for name in [n for n in silent_since if answered.get(n, True)]:
        del silent_since[name]
    for name, ok in answered.items():
        if not ok:
            silent_since.setdefault(name, now)
    return sorted(n for n, since in silent_since.items() if now - since >= forget_after_s)


class Reaper:
    """A thread of the name server process that forgets silent workers and jobs."""

    def __init__(
        self, settings: Settings, ns: Any, forget_after_s: float, interval_s: float | None = None
    ) -> None:
        self._settings = settings
        self._ns = ns  # the name server object itself: no connection, no handshake
        self.forget_after_s = forget_after_s
        self.interval_s = interval_s if interval_s is not None else min(30.0, max(0.5, forget_after_s / 4))
        self._silent: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> None:
        """Start pinging (nothing happens when ``forget_after_s`` is 0)."""
        if self.forget_after_s > 0:
            self._thread.start()

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=PING_TIMEOUT_S * 3)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.round(time.monotonic())
            except Exception:  # one bad round must not end the reaper
                log.exception("forgetting silent registrations failed")

    def round(self, now: float) -> list[str]:
        """Ping everything registered once; forget what has been silent too long; return it."""
        from pyrocluster.coordinator.fanout import call_each  # the multiplexed wire, loaded on use

        workers = registry.parse_listing(self._ns.list(prefix=registry.WORKER_PREFIX, return_metadata=True))
        jobs = registry.find_jobs(self._ns)
        targets = [(w.uris[registry.CONTROL], "ping") for w in workers]
        targets += [(uri, "progress") for uri in jobs.values()]
        answers = call_each(self._settings, targets, PING_TIMEOUT_S)
        keys = [f"worker:{w.name}" for w in workers] + [f"job:{j}" for j in jobs]
        answered = {key: exc is None for key, (_, exc) in zip(keys, answers, strict=True)}
        gone = to_forget(self._silent, answered, now, self.forget_after_s)
        self._forget(gone)
        return gone

    def _forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            kind, _, name = key.partition(":")
            self._silent.pop(key, None)
            if kind == "worker":
                registry.unregister_worker(self._ns, name)
                log.warning("forgot worker %s: silent for %.0f s", name, self.forget_after_s)
            else:
                entry = {"name": name.partition("@")[0], "state": "lost"}
                finished.register_finished(self._ns, name, entry, [])
                registry.unregister_job(self._ns, name)
                log.warning("job %s is lost: silent for %.0f s", name, self.forget_after_s)
