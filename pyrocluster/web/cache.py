"""The dashboard's view of the cluster, refreshed in the background so no request ever waits on a worker.

Every ``interval_s`` one round asks the name server for the listing, then every worker (``info()`` and
``task_stats()``) and every running job (``progress()``, and ``failures()`` when its failure count
moved) in parallel, each with ``timeout_s``: a dead or frozen worker costs at most that and shows
``unreachable``. Requests read the last finished round. Nothing here is stored but what the
workers, jobs and name server still know, so a restarted dashboard has it all again in one round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyrocluster.config import Settings
from pyrocluster.coordinator import status
from pyrocluster.nameserver import finished, registry
from pyrocluster.web.charts import Throughput, task_quantiles

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 1.0
"""Seconds between refresh rounds."""
ASK_TIMEOUT_S = 1.5
"""Seconds a worker, job or the name server has to answer one round (a scrape never waits on it)."""
ASK_THREADS = 8
"""Workers and jobs asked at once in a round: few, so the threads serving HTTP keep getting the GIL."""


@dataclass
class View:
    """One finished refresh round: the status document, task stats per worker, failures per job id."""

    status: dict[str, Any]
    task_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    updated: float = 0.0
    round_s: float = 0.0
    metrics: bytes = b""
    """``/metrics`` rendered once per round, so a scrape only sends bytes."""
    throughput: dict[str, Any] = field(default_factory=dict)
    """Tasks finished and failed per second over the last 15 minutes (``charts.Throughput``)."""
    durations: list[dict[str, Any]] = field(default_factory=list)
    """Each task's runs, p50 and p95 (``charts.task_quantiles``)."""


class StatusCache:
    """Holds the latest ``View``; ``start()`` refreshes it in a thread until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        interval_s: float = REFRESH_INTERVAL_S,
        timeout_s: float = ASK_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._view = View(status.unreachable_status(settings))
        self._listing = status.Listing()
        self._failures: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=ASK_THREADS, thread_name_prefix="dashboard-ask")
        self.render_metrics: Callable[[View], bytes] | None = None
        self._throughput = Throughput()

    def view(self) -> View:
        """The latest round (never blocks on the cluster)."""
        with self._lock:
            return self._view

    def start(self) -> None:
        """Refresh once now, then every ``interval_s`` in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="dashboard-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the refresh thread (it finishes its round) and the ask pool."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * 3)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except Exception:  # one bad round must not end the dashboard
                log.exception("dashboard refresh failed")
            took = time.monotonic() - started
            # A slow round (many workers, some frozen) leaves the process idle for half as long again.
            self._stop.wait(max(0.05, self.interval_s - took, took / 2))

    def refresh(self) -> View:
        """Run one round and publish it."""
        started = time.monotonic()
        reachable = True
        try:
            listing = status.list_cluster(self.settings, timeout_s=self.timeout_s, prune=True)
            self._listing = listing
        except Exception as exc:  # name server away: keep asking the workers and jobs we knew
            log.debug("name server unreachable: %s", exc)
            reachable = False
            listing = status.Listing(self._listing.workers, self._listing.jobs, [])
        worker_futures = [
            self._pool.submit(status.ask_worker, e, self.settings, self.timeout_s, True)
            for e in listing.workers
        ]
        job_futures = [self._pool.submit(self._ask_job, uri) for uri in listing.jobs.values()]
        answers = [f.result() for f in worker_futures]
        running = [f.result() for f in job_futures]
        if reachable:
            self._fetch_finished_failures(listing.finished)
        live_ids = {j["id"] for j in running if j} | {j.get("id") for j in listing.finished}
        self._failures = {k: v for k, v in self._failures.items() if k in live_ids}
        doc = status.status_document(self.settings, listing, [a[0] for a in answers], running, reachable)
        now = self.clock()
        workers = doc["workers"]
        self._throughput.add(
            now, sum(w.get("done", 0) for w in workers), sum(w.get("failed", 0) for w in workers)
        )
        task_stats = {info["name"]: stats for info, stats in answers if stats is not None}
        view = View(
            status=doc,
            task_stats=task_stats,
            throughput=self._throughput.series(now),
            durations=task_quantiles(task_stats.values()),
            failures={k: v[1] for k, v in self._failures.items()},
            updated=now,
            round_s=time.monotonic() - started,
        )
        if self.render_metrics is not None:
            view.metrics = self.render_metrics(view)
        with self._lock:
            self._view = view
        return view

    def _ask_job(self, uri: str) -> dict[str, Any] | None:
        progress = status.ask_job(uri, self.settings, self.timeout_s)
        if progress is None:
            return None
        job_id, seen = progress.get("id"), progress.get("failures_seen", 0)
        if job_id and seen and self._failures.get(job_id, (0, []))[0] != seen:
            both = status.ask_job(uri, self.settings, self.timeout_s, failures=True)
            if both is not None:
                self._failures[job_id] = (seen, both[1])
        return progress

    def _fetch_finished_failures(self, entries: list[dict[str, Any]]) -> None:
        """Finished jobs' failures never change: fetch each once."""
        wanted = [e for e in entries if e.get("failures_seen") and self._failures.get(e["id"], (0,))[0] != -1]
        if not wanted:
            return
        try:
            ns = registry.connect(self.settings, timeout_s=self.timeout_s)
        except Exception:
            return
        try:
            for entry in wanted:
                self._failures[entry["id"]] = (-1, finished.finished_failures(ns, entry["id"]))
        except Exception as exc:
            log.debug("could not read finished failures: %s", exc)
        finally:
            ns._pyroRelease()
