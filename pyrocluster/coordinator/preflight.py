"""Before a job runs: wait for live workers offering what it needs (their registrations carry their tasks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyrocluster.config import Settings
from pyrocluster.coordinator.fanout import Answer, call_each
from pyrocluster.errors import ClusterUnreachable
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import CONTROL, WorkerEntry

PING_TIMEOUT_S = 2.0
"""Seconds a registered worker has to answer before it counts as not live."""

Need = tuple[str, frozenset[str]]
"""A service and the tags a worker offering it must carry."""


def _describe(need: Need) -> str:
    service, tags = need
    return f"{service} with tags {','.join(sorted(tags))}" if tags else service


Enough = Callable[[list[WorkerEntry]], bool]
"""Whether the workers that answered so far are all a caller's checks need."""


def _never(live: list[WorkerEntry]) -> bool:
    return False


class LiveLookup:
    """One round of pings to registered workers, under way on a thread of its own: the workers
    that answered, once they are enough for the caller or once every answer is in.

    A ``submit`` needs one live worker per service, task and resource ask, not every worker's
    answer: waiting for all of them made every job wait for the slowest (404-443 ms on 1,000
    simulated workers), and for a ping timeout (2 s) while any registered worker was unreachable
    (the name server forgets those only after 10 minutes).
    """

    def __init__(self, settings: Settings, entries: list[WorkerEntry]) -> None:
        self.entries = entries
        self._live = [False] * len(entries)
        self._pending = len(entries)
        self._cond = threading.Condition()
        self._over = threading.Event()
        """Set once every answer is in, or once a caller took its answer (the pings still out are dropped)."""
        if entries:
            threading.Thread(target=self._ping, args=(settings,), name="look-up", daemon=True).start()

    def _ping(self, settings: Settings) -> None:
        def answered(i: int, answer: Answer) -> None:
            with self._cond:
                self._live[i] = answer[1] is None
                self._pending = max(0, self._pending - 1)  # one after the round's end counts for nothing
                self._cond.notify_all()

        try:
            targets = [(e.uris[CONTROL], "ping") for e in self.entries]
            call_each(settings, targets, PING_TIMEOUT_S, on_answer=answered, over=self._over)
        finally:  # the silent ones never answered: they are not live
            with self._cond:
                self._pending = 0
                self._cond.notify_all()

    def live_when(self, enough: Enough = _never) -> list[WorkerEntry]:
        """The workers that answered (in the name server's order) as soon as ``enough`` of them
        holds (the pings still out are then dropped), else once every answer is in."""
        with self._cond:
            while True:
                live = [e for e, ok in zip(self.entries, self._live, strict=True) if ok]
                if not self._pending:
                    return live
                if enough(live):
                    self._over.set()
                    return live
                self._cond.wait()


def live_workers(settings: Settings, ns: Any) -> list[WorkerEntry]:
    """The registered workers of our release answering a ping now (one round; ``ns``: a name-server proxy)."""
    return LiveLookup(settings, registry.compatible(registry.find_workers(ns))).live_when()


def start_look_up(settings: Settings) -> LiveLookup:
    """The registered workers of our release, listed on a name-server connection of its own, their
    pings under way; ClusterUnreachable when the name server cannot be reached."""
    ns = registry.connect(settings)
    try:
        return LiveLookup(settings, registry.compatible(registry.find_workers(ns)))
    finally:
        ns._pyroRelease()


def look_up_live(settings: Settings) -> list[WorkerEntry]:
    """Every answer of :func:`start_look_up`'s round: the live workers."""
    return start_look_up(settings).live_when()


def _missing(needs: set[Need], live: list[WorkerEntry]) -> list[Need]:
    return [n for n in needs if not any(n[0] in e.uris and n[1] <= e.tags for e in live)]


def wait_for_workers(
    settings: Settings,
    needs: Iterable[Need],
    wait_s: float,
    first: list[WorkerEntry] | LiveLookup | None = None,
    enough: Enough = lambda live: True,
) -> list[WorkerEntry]:
    """Live workers once every need is met; ClusterUnreachable naming what is missing after ``wait_s``.

    ``first``: the live workers of a round already made (:func:`look_up_live`), or one under way
    (:func:`start_look_up`: its answers are taken once they meet every need and ``enough``, the
    caller's own checks); when they meet every need they are the answer, with no further look-up.
    """
    needs = set(needs)
    if isinstance(first, LiveLookup):
        first = first.live_when(lambda live: not _missing(needs, live) and enough(live))
    if first is not None and not _missing(needs, first):
        return first
    deadline = time.monotonic() + wait_s
    ns = registry.connect(settings)
    try:
        while True:
            live = live_workers(settings, ns)
            missing = _missing(needs, live)
            if not missing:
                return live
            if time.monotonic() >= deadline:
                what = "; ".join(sorted(_describe(n) for n in missing))
                raise ClusterUnreachable(f"no live worker offers {what} (waited {wait_s:g} s)")
            time.sleep(0.2)
    finally:
        ns._pyroRelease()
