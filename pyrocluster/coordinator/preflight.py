"""Before a job runs: wait for live workers offering what it needs (their registrations carry their tasks)."""

from __future__ import annotations

import time
from collections.abc import Iterable

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


def wait_for_workers(settings: Settings, needs: Iterable[Need], wait_s: float) -> list[WorkerEntry]:
    """Live workers once every need is met; ClusterUnreachable naming what is missing after ``wait_s``."""
    needs = set(needs)
    deadline = time.monotonic() + wait_s
    ns = registry.connect(settings)
    try:
        while True:
            entries = registry.compatible(registry.find_workers(ns))
            answers = call_each(settings, [(e.uris[CONTROL], "ping") for e in entries], PING_TIMEOUT_S)
            live = [e for e, (_, exc) in zip(entries, answers, strict=True) if exc is None]
            missing = [n for n in needs if not any(n[0] in e.uris and n[1] <= e.tags for e in live)]
            if not missing:
                return live
            if time.monotonic() >= deadline:
                what = "; ".join(sorted(_describe(n) for n in missing))
                raise ClusterUnreachable(f"no live worker offers {what} (waited {wait_s:g} s)")
            time.sleep(0.2)
    finally:
        ns._pyroRelease()
