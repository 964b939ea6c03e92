"""Before a job runs: wait for live workers offering what it needs (their registrations carry their tasks)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pyrocluster.config import Settings
from pyrocluster.coordinator.fanout import call_each
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


def live_workers(settings: Settings, ns: Any) -> list[WorkerEntry]:
    """The registered workers of our release answering a ping now (one round; ``ns``: a name-server proxy)."""
    entries = registry.compatible(registry.find_workers(ns))
    answers = call_each(settings, [(e.uris[CONTROL], "ping") for e in entries], PING_TIMEOUT_S)
    return [e for e, (_, exc) in zip(entries, answers, strict=True) if exc is None]


def look_up_live(settings: Settings) -> list[WorkerEntry]:
    """One round of :func:`live_workers` on a name-server connection of its own; ClusterUnreachable
    when the name server cannot be reached."""
    ns = registry.connect(settings)
    try:
        return live_workers(settings, ns)
    finally:
        ns._pyroRelease()


def _missing(needs: set[Need], live: list[WorkerEntry]) -> list[Need]:
    return [n for n in needs if not any(n[0] in e.uris and n[1] <= e.tags for e in live)]


def wait_for_workers(
    settings: Settings, needs: Iterable[Need], wait_s: float, first: list[WorkerEntry] | None = None
) -> list[WorkerEntry]:
    """Live workers once every need is met; ClusterUnreachable naming what is missing after ``wait_s``.

    ``first``: the live workers of a round already made (:func:`look_up_live`); when they meet
    every need they are the answer, with no further look-up.
    """
    needs = set(needs)
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
