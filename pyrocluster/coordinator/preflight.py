"""Before a job runs: wait for live workers offering what it needs (their registrations carry their tasks)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import Pyro5.errors

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.errors import ClusterUnreachable
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import CONTROL, WorkerEntry

PING_TIMEOUT_S = 2.0
"""Seconds a registered worker has to answer before it counts as not live."""

Need = tuple[str, frozenset[str]]
"""A service and the tags a worker offering it must carry."""


def _call(entry: WorkerEntry, service: str, method: str, settings: Settings) -> object:
    proxy = make_proxy(entry.uris[service], settings, timeout_s=PING_TIMEOUT_S)
    try:
        return getattr(proxy, method)()
    except Pyro5.errors.PyroError:
        return None
    finally:
        proxy._pyroRelease()


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
            entries = registry.find_workers(ns)
            with ThreadPoolExecutor(max_workers=max(1, min(32, len(entries)))) as pool:
                alive = list(pool.map(lambda e: _call(e, CONTROL, "ping", settings), entries))
            live = [e for e, ok in zip(entries, alive, strict=False) if ok]
            missing = [n for n in needs if not any(n[0] in e.uris and n[1] <= e.tags for e in live)]
            if not missing:
                return live
            if time.monotonic() >= deadline:
                what = "; ".join(sorted(_describe(n) for n in missing))
                raise ClusterUnreachable(f"no live worker offers {what} (waited {wait_s:g} s)")
            time.sleep(0.2)
    finally:
        ns._pyroRelease()
