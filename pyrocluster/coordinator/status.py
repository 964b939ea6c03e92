"""Gather ``status``: the name server, every worker's ``info()`` (all at once), running and finished jobs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import Pyro5.errors

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.coordinator.fanout import KeptChannels, call_each
from pyrocluster.coordinator.wire import Wire
from pyrocluster.defaults import CONNECT_TIMEOUT_S
from pyrocluster.errors import AuthenticationError, ClusterUnreachable
from pyrocluster.nameserver import finished, registry
from pyrocluster.nameserver.pauses import paused_schedules
from pyrocluster.nameserver.registry import CONTROL, WorkerEntry
from pyrocluster.nameserver.schedules import SCHEDULER_PREFIX, published_schedules

INFO_TIMEOUT_S = 2.0
"""Seconds a worker has to answer ``info()`` before it is shown unreachable."""


def unreachable_worker(entry: WorkerEntry) -> dict[str, Any]:
    """The status entry of a registered worker that does not answer."""
    return with_protocol(
        entry,
        {
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
            "tasks": [],
        },
    )


def worker_info(entry: WorkerEntry, info: Any) -> dict[str, Any]:
    """A worker's status entry from its ``info()`` answer and its registration."""
    if not isinstance(info, dict):
        return unreachable_worker(entry)
    info = dict(info)
    info["address"] = entry.address
    info.setdefault("tasks", [])
    return with_protocol(entry, info)


def with_protocol(entry: WorkerEntry, info: dict[str, Any]) -> dict[str, Any]:
    """``info`` with the worker's protocol version; ``incompatible`` state when it is not ours."""
    info["protocol"] = entry.protocol
    if entry.protocol != registry.PROTOCOL_VERSION:
        info["state"] = "incompatible"
    return info


def ask_worker(
    entry: WorkerEntry,
    settings: Settings,
    timeout_s: float = INFO_TIMEOUT_S,
    task_stats: bool = False,
    proxy: Any = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A worker's status entry (``unreachable`` if it does not answer in time) and, if asked, task stats.

    With ``proxy`` (kept by the caller between rounds) it is used and left open unless the call failed.
    """
    own = proxy is None
    if proxy is None:
        proxy = make_proxy(entry.uris[CONTROL], settings, timeout_s=timeout_s)
    try:
        info = worker_info(entry, proxy.info())
        stats = dict(proxy.task_stats()) if task_stats else None
        return info, stats
    except Pyro5.errors.PyroError:
        proxy._pyroRelease()
        return unreachable_worker(entry), None
    finally:
        if own:
            proxy._pyroRelease()


def lost_job(job_id: str, published: dict[str, int] | None = None) -> dict[str, Any]:
    """The status entry of a job still registered that does not answer (its ``submit`` was killed,
    or its token was revoked: it stopped, unable to remove its registration).

    Its counts are the ones it last published in its registration (``published``), 0 if none.
    """
    counts = dict.fromkeys(("done", "total", "failed", "cancelled"), 0)
    counts.update(published or {})
    return {"id": job_id, "name": job_id.partition("@")[0], "state": "lost", **counts}


def ask_job(uri: str, settings: Settings, timeout_s: float = INFO_TIMEOUT_S, failures: bool = False) -> Any:
    """A running job's ``progress()`` (with ``failures()`` as a pair when asked); None when it is gone."""
    proxy = make_proxy(uri, settings, timeout_s=timeout_s)
    try:
        progress = dict(proxy.progress())
        return (progress, list(proxy.failures())) if failures else progress
    except Pyro5.errors.PyroError:
        return None  # a job that died without unregistering is not running
    finally:
        proxy._pyroRelease()


@dataclass
class Listing:
    """What the name server says: workers, running jobs (id -> URI) and finished jobs' entries."""

    workers: list[WorkerEntry] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    finished: list[dict[str, Any]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    """What running schedulers publish of each schedule (section 7)."""
    published: dict[str, dict[str, int]] = field(default_factory=dict)
    """Each running job's counts as it last published them (id -> counts): a lost job's last known."""


def list_cluster(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S, prune: bool = False) -> Listing:
    """One round of name-server lookups; ClusterUnreachable when it is down. ``prune`` drops expired
    jobs when no one did for ``finished.PRUNE_EVERY_S``."""
    ns = registry.connect(settings, timeout_s=timeout_s)
    try:
        if prune:
            finished.prune_if_due(ns, time.time())
        schedules = published_schedules(ns.list(prefix=SCHEDULER_PREFIX, return_metadata=True), time.time())
        paused = paused_schedules(ns)
        for schedule in schedules:
            schedule["paused"] = schedule["name"] in paused
        jobs, published = registry.find_announced(ns)
        return Listing(registry.find_workers(ns), jobs, finished.find_finished(ns), schedules, published)
    except AuthenticationError as exc:  # our token expired or was revoked since we connected
        raise AuthenticationError(f"name server at {settings.ns_address} refused us: {exc}") from None
    except Pyro5.errors.PyroError as exc:
        raise ClusterUnreachable(f"name server at {settings.ns_address} failed: {exc}") from None
    finally:
        ns._pyroRelease()


def status_document(
    settings: Settings,
    listing: Listing,
    workers: list[dict[str, Any]],
    running: list[dict[str, Any] | None],
    reachable: bool = True,
) -> dict[str, Any]:
    """The ``status --json`` document from the answers gathered (``status`` and the dashboard share it).

    ``running`` holds the answers of ``listing.jobs`` in order; a job that did not answer is ``lost``,
    with the counts it last published.
    """
    jobs = [
        j if j is not None else lost_job(i, listing.published.get(i))
        for i, j in zip(listing.jobs, running, strict=False)
    ]
    return {
        "nameserver": {"address": settings.ns_address, "reachable": reachable},
        "workers": workers,
        "jobs": jobs + listing.finished,
        "schedules": listing.schedules,
    }


def cluster_status(
    settings: Settings, wire: Wire | None = None, kept: KeptChannels | None = None
) -> dict[str, Any]:
    """Everything ``status --json`` prints; ClusterUnreachable when the name server is down.

    Every worker and job is asked at once on ``wire`` (a coordinator's own), or on one made for
    it; on the connections ``kept`` from the last call when given.
    """
    listing = list_cluster(settings)
    job_uris = list(listing.jobs.values())
    targets = [(e.uris[CONTROL], "info") for e in listing.workers] + [(uri, "progress") for uri in job_uris]
    answers = call_each(settings, targets, INFO_TIMEOUT_S, wire, kept)
    workers = [
        worker_info(entry, info) if exc is None else unreachable_worker(entry)
        for entry, (info, exc) in zip(listing.workers, answers, strict=False)
    ]
    running = [  # a job that died without unregistering is lost
        dict(progress) if exc is None and isinstance(progress, dict) else None
        for progress, exc in answers[len(listing.workers) :]
    ]
    return status_document(settings, listing, workers, running)


def unreachable_status(settings: Settings, error: ClusterUnreachable | None = None) -> dict[str, Any]:
    """The status document when the name server cannot be reached or refused us (``error``).

    ``reachable`` says whether it answered on the network: true when it refused our credential
    (an ``AuthenticationError``: wrong secret, expired or revoked token, TLS certificate refused).
    ``error``, when given, is the reason, as the command's error line says it.
    """
    nameserver: dict[str, Any] = {
        "address": settings.ns_address,
        "reachable": isinstance(error, AuthenticationError),
    }
    if error is not None:
        nameserver["error"] = str(error)
    return {
        "nameserver": nameserver,
        "workers": [],
        "jobs": [],
        "schedules": [],
    }
