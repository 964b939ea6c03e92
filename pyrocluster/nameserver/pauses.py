"""Pausing a schedule: a mark in the name server that every scheduler reads each round.

``pyrocluster.paused.<schedule>`` registered means the schedule fires no tick; removing it
resumes the schedule, and the ticks that came due while it was paused are then handled by the
schedule's misfire rule, as after a scheduler outage (``catchup`` fires them within its window,
``skip`` drops them).
"""

from __future__ import annotations

from typing import Any

PAUSED_PREFIX = "pyrocluster.paused."
MARK_URI = "PYRO:pyrocluster.paused@127.0.0.1:9"
"""What a mark points at: the name server stores URIs, and a mark is data, not an object."""


def paused_schedules(ns: Any) -> set[str]:
    """Names of the schedules paused now."""
    return {name[len(PAUSED_PREFIX) :] for name in ns.list(prefix=PAUSED_PREFIX)}


def set_paused(ns: Any, schedule: str, paused: bool) -> bool:
    """Pause or resume ``schedule``; True when that changed anything."""
    name = PAUSED_PREFIX + schedule
    was = name in ns.list(prefix=name)
    if paused and not was:
        ns.register(name, MARK_URI, safe=False, metadata={"pyrocluster.service:pause"})
    elif not paused and was:
        ns.remove(name)
    return was != paused
