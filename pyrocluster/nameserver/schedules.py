"""Running schedulers' entries in the name server: what each shows of its schedules.

``pyrocluster.scheduler.<instance>`` is a data-only entry (its URI points nowhere) whose metadata
is the scheduler's name, when it last refreshed the entry, and one JSON object per schedule it
runs. ``status`` and the dashboard read these without loading the scheduler itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import Pyro5.errors

from pyrocluster.nameserver.registry import META_SERVICE

SCHEDULER_PREFIX = "pyrocluster.scheduler."
"""Prefix of the running schedulers' entries (what ``status`` lists)."""
DATA_URI = "PYRO:pyrocluster.data@127.0.0.1:9"
"""What a data-only entry points at: nothing serves there (port 9 is discard)."""
PUBLISH_STALE_S = 10.0
"""A scheduler entry older than this (seconds) is a dead scheduler's: ``status`` ignores it."""


def parse_meta(metadata: Iterable[str] | None) -> dict[str, str]:
    """``{"key:value", ...}`` back into a dict (the first ``:`` splits)."""
    out: dict[str, str] = {}
    for item in metadata or ():
        key, _, value = str(item).partition(":")
        out[key] = value
    return out


def scheduler_name(instance: str) -> str:
    """A running scheduler's entry."""
    return f"{SCHEDULER_PREFIX}{instance}"


@dataclass(frozen=True)
class Process:
    """Where a scheduler runs: host, pid and the process start time (tells a reused pid apart)."""

    host: str
    pid: int
    started: float


def publish(
    ns: Any, instance: str, name: str, at: Process, updated: float, schedules: list[dict[str, Any]]
) -> None:
    """(Re-)register a running scheduler's entry with where it runs and what it shows of each schedule."""
    meta = {META_SERVICE + "scheduler", f"name:{name}", f"updated:{updated:.3f}"}
    meta |= {f"host:{at.host}", f"pid:{at.pid}", f"started:{at.started!r}"}
    meta |= {"schedule:" + json.dumps(s, sort_keys=True) for s in schedules}
    ns.register(scheduler_name(instance), DATA_URI, safe=False, metadata=meta)


def published_at(ns: Any, instance: str) -> str | None:
    """The ``updated`` stamp of a scheduler's entry, or None when it has none (it stopped or died)."""
    try:
        _, metadata = ns.lookup(scheduler_name(instance), return_metadata=True)
    except Pyro5.errors.NamingError:
        return None
    return parse_meta(metadata).get("updated")


def schedulers_named(
    listing: Mapping[str, Any], name: str, now: float, stale_s: float = PUBLISH_STALE_S
) -> list[Process]:
    """Where the schedulers called ``name`` run, of a ``list(prefix=SCHEDULER_PREFIX, ...)``
    (entries not refreshed within ``stale_s`` are a dead scheduler's and left out)."""
    found = []
    for _, metadata in listing.values():
        m = parse_meta(metadata)
        try:
            updated, pid, started = (
                float(m.get("updated", "")),
                int(m.get("pid", "")),
                float(m.get("started", "")),
            )
        except ValueError:
            continue
        if m.get("name") == name and now - updated <= stale_s:
            found.append(Process(m.get("host", ""), pid, started))
    return found


def unpublish(ns: Any, instance: str) -> None:
    """Remove a stopping scheduler's entry."""
    ns.remove(scheduler_name(instance))


def published_schedules(
    listing: Mapping[str, Any], now: float, stale_s: float = PUBLISH_STALE_S
) -> list[dict[str, Any]]:
    """``status``'s ``schedules`` from a ``list(prefix=SCHEDULER_PREFIX, return_metadata=True)``.

    Entries not refreshed within ``stale_s`` (a killed scheduler's) are ignored. Of several
    schedulers showing one schedule, the one that leads it wins, then the freshest.
    """
    best: dict[str, tuple[tuple[bool, float], dict[str, Any]]] = {}
    for _, metadata in listing.values():
        m = parse_meta(metadata)
        try:
            updated = float(m.get("updated", "0"))
        except ValueError:
            continue
        if now - updated > stale_s:
            continue
        for item in metadata or ():
            if not str(item).startswith("schedule:"):
                continue
            try:
                shown = json.loads(str(item)[len("schedule:") :])
            except ValueError:
                continue
            rank = (shown.get("leader") == m.get("name"), updated)
            if shown.get("name") not in best or rank > best[shown["name"]][0]:
                best[shown["name"]] = (rank, shown)
    keys = ("name", "next_fire", "last_fire", "last_status", "leader")
    zoned = ("timezone", "next_fire_local")  # a cron read in a zone other than UTC only
    views = [best[n][1] for n in sorted(best)]
    return [{k: v.get(k) for k in keys} | {k: v[k] for k in zoned if k in v} for v in views]
