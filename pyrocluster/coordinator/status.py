"""Gather ``status``: the name server, every worker's ``info()`` (in parallel) and running jobs."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import Pyro5.errors

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.defaults import CONNECT_TIMEOUT_S
from pyrocluster.errors import ClusterUnreachable
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import CONTROL, WorkerEntry
from pyrocluster.scheduler.store import SCHEDULER_PREFIX, published_schedules

INFO_TIMEOUT_S = 2.0
"""Seconds a worker has to answer ``info()`` before it is shown unreachable."""


def _worker_info(entry: WorkerEntry, settings: Settings) -> dict[str, Any]:
    proxy = make_proxy(entry.uris[CONTROL], settings, timeout_s=INFO_TIMEOUT_S)
    try:
        info = dict(proxy.info())
        info["address"] = entry.address
        return info
    except Pyro5.errors.PyroError:
        return {
            "name": entry.name,
            "address": entry.address,
            "services": entry.services,
            "tags": sorted(entry.tags),
            "state": "unreachable",
            "slots": entry.slots.get("compute", 0),
            "busy": 0,
            "done": 0,
            "failed": 0,
            "mean_ms": 0.0,
            "uptime_s": 0.0,
            "cpu_percent": 0.0,
            "rss_mb": 0.0,
        }
    finally:
        proxy._pyroRelease()


def _job_info(name: str, uri: str, settings: Settings) -> dict[str, Any] | None:
    proxy = make_proxy(uri, settings, timeout_s=INFO_TIMEOUT_S)
    try:
        return dict(proxy.progress())
    except Pyro5.errors.PyroError:
        return None  # a job that died without unregistering is not running
    finally:
        proxy._pyroRelease()


def cluster_status(settings: Settings) -> dict[str, Any]:
    """Everything ``status --json`` prints; ClusterUnreachable when the name server is down."""
    ns = registry.connect(settings, timeout_s=CONNECT_TIMEOUT_S)
    try:
        entries = registry.find_workers(ns)
        jobs = registry.find_jobs(ns)
        schedulers = ns.list(prefix=SCHEDULER_PREFIX, return_metadata=True)
    except Pyro5.errors.PyroError as exc:
        raise ClusterUnreachable(f"name server at {settings.ns_address} failed: {exc}") from None
    finally:
        ns._pyroRelease()
    calls = len(entries) + len(jobs)
    with ThreadPoolExecutor(max_workers=max(1, min(64, calls))) as pool:
        workers = list(pool.map(lambda e: _worker_info(e, settings), entries))
        job_infos = list(pool.map(lambda j: _job_info(j[0], j[1], settings), jobs.items()))
    return {
        "nameserver": {"address": settings.ns_address, "reachable": True},
        "workers": workers,
        "jobs": [j for j in job_infos if j is not None],
        "schedules": published_schedules(schedulers, time.time()),
    }


def unreachable_status(settings: Settings) -> dict[str, Any]:
    """The status document when the name server cannot be reached."""
    return {
        "nameserver": {"address": settings.ns_address, "reachable": False},
        "workers": [],
        "jobs": [],
        "schedules": [],
    }
