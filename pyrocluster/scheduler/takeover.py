"""Whether another scheduler's fired run may still be going: the rule for runs a leader did not start.

A new leader finds the runs of the schedulers before it (a superseded, paused or draining
leader's) in the claims. It counts each as running, for ``overlap``, until its end is recorded,
and records it ``lost`` itself only when the scheduler that runs it is known to be dead:

* on this host (the claim names our hostname): its process is gone, or its pid now belongs to
  another process (the claim keeps the process start time);
* on another host: that scheduler's name-server entry (refreshed every 2 s) has not changed,
  or has been missing, for :data:`LOST_AFTER_S` of our monotonic clock.

So a scheduler paused on this host for any length of time records its own run's true end when
it resumes. One on another host paused longer than :data:`LOST_AFTER_S` finds its run recorded
``lost`` and only logs the late end. Nothing here touches the network; the clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import psutil

from pyrocluster.scheduler.lease import LeaseWatch
from pyrocluster.scheduler.store import Claim

LOST_AFTER_S = 60.0
"""Seconds a scheduler on another host may stay silent before its running runs count as lost."""


def process_alive(pid: int, started: float) -> bool:
    """True when process ``pid`` exists, is not a zombie and (if ``started`` is known) started then."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not started or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def process_started() -> float:
    """The start time of this process, as :func:`process_alive` compares it."""
    return psutil.Process().create_time()


class RunOwners:
    """Tells, for another scheduler's run, whether that scheduler is dead (its run is then lost)."""

    def __init__(
        self,
        here: str,
        alive: Callable[[int, float], bool] = process_alive,
        lost_after_s: float = LOST_AFTER_S,
    ) -> None:
        self.here = here
        self.alive = alive
        """Whether a process of this host (pid, start time) lives."""
        self._lost_after_s = lost_after_s
        self._silence: dict[str, LeaseWatch] = {}

    def local(self, claim: Claim) -> bool:
        """True when the claim's scheduler runs on this host (its pid can be checked)."""
        return claim.host == self.here and claim.pid > 0

    def observe(self, instance: str, entry: Hashable, now: float) -> None:
        """What a scheduler on another host shows of itself at monotonic ``now`` (None: nothing)."""
        self._silence.setdefault(instance, LeaseWatch(self._lost_after_s)).observe(entry, now)

    def dead(self, claim: Claim, now: float) -> bool:
        """True when the scheduler that fired ``claim`` is known to be dead at monotonic ``now``."""
        if self.local(claim):
            return not self.alive(claim.pid, claim.started)
        watch = self._silence.get(claim.by)
        return watch is not None and watch.expired(now)

    def forget(self, keep: set[str]) -> None:
        """Stop watching the schedulers not in ``keep`` (their runs have ended)."""
        for instance in set(self._silence) - keep:
            del self._silence[instance]
