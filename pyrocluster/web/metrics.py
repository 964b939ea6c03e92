"""``/metrics``: a prometheus-client collector over the dashboard's latest view (labels: no task ids)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pyrocluster.web.cache import View

WORKER_STATES = ("ready", "draining", "unreachable", "incompatible")


def _job_rows(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per job name: its running runs summed, else its newest finished run."""
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs:  # running jobs come first, then finished ones newest first
        name, state = job["name"], job.get("state", "running")
        row = rows.get(name)
        if row is None:
            rows[name] = {**job, "state": state}
        elif row["state"] == "running" and state == "running":
            for key in ("ok", "failed", "skipped", "done", "total"):
                row[key] = row.get(key, 0) + job.get(key, 0)
    return rows


def _histograms(view: View) -> Iterator[Metric]:
    buckets: list[float] = []
    merged: dict[str, list[int]] = {}
    sums: dict[str, float] = {}
    outcomes = CounterMetricFamily(
        "pyrocluster_task_outcomes", "Calls finished per task and status, across reachable workers.",
        labels=["task", "status"],
    )  # fmt: skip
    per_task_status: dict[tuple[str, str], int] = {}
    for stats in view.task_stats.values():
        buckets = list(stats.get("buckets", buckets))
        for task, row in stats.get("tasks", {}).items():
            hist = merged.setdefault(task, [0] * len(row["histogram"]))
            for i, n in enumerate(row["histogram"][: len(hist)]):
                hist[i] += n
            sums[task] = sums.get(task, 0.0) + row["sum_s"]
            for st, n in row["counts"].items():
                per_task_status[(task, st)] = per_task_status.get((task, st), 0) + n
    duration = HistogramMetricFamily(
        "pyrocluster_task_duration_seconds", "Time a task call ran on a worker.", labels=["task"]
    )
    for task, hist in sorted(merged.items()):
        cumulative, total = [], 0
        for bound, n in zip([*map(str, buckets), "+Inf"], hist, strict=False):
            total += n
            cumulative.append((bound, total))
        duration.add_metric([task], cumulative, sums[task])
    for (task, st), n in sorted(per_task_status.items()):
        outcomes.add_metric([task, st], n)
    yield duration
    yield outcomes


DEMAND_SERVICES = ("compute", "crawl")
"""Services ``pyrocluster_calls_waiting`` always shows (0 when nothing waits)."""


def calls_waiting(jobs: list[dict[str, Any]]) -> GaugeMetricFamily:
    """``pyrocluster_calls_waiting{service}``: work the running jobs hold that no worker has taken."""
    totals = dict.fromkeys(DEMAND_SERVICES, 0)
    for job in jobs:
        if job.get("state", "running") == "running":
            for service, n in (job.get("calls_waiting") or {}).items():
                totals[service] = totals.get(service, 0) + int(n)
    gauge = GaugeMetricFamily(
        "pyrocluster_calls_waiting",
        "Calls (and crawl pages) running jobs hold that no worker has taken yet: the demand to scale on.",
        labels=["service"],
    )
    for service, n in sorted(totals.items()):
        gauge.add_metric([service], n)
    return gauge


class ClusterCollector(Collector):
    """Turns the latest ``View`` into the SPEC 8 metric families on every scrape."""

    def __init__(self, view: Callable[[], View]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        view = self._view()
        doc = view.status
        ns = GaugeMetricFamily("pyrocluster_nameserver_up", "1 when the name server answered the last round.")
        ns.add_metric([], 1.0 if doc["nameserver"]["reachable"] else 0.0)
        yield ns
        states = GaugeMetricFamily("pyrocluster_workers", "Registered workers by state.", labels=["state"])
        slots = GaugeMetricFamily("pyrocluster_worker_slots", "Compute slots of a worker.", labels=["worker"])
        busy = GaugeMetricFamily(
            "pyrocluster_worker_busy_slots", "Compute slots running a task now.", labels=["worker"]
        )
        tasks = CounterMetricFamily(
            "pyrocluster_tasks", "Calls a reachable worker finished, by outcome.", labels=["worker", "status"]
        )
        count = dict.fromkeys(WORKER_STATES, 0)
        for w in doc["workers"]:
            count[w["state"]] = count.get(w["state"], 0) + 1
            slots.add_metric([w["name"]], w["slots"])
            busy.add_metric([w["name"]], w["busy"])
            if w["state"] != "unreachable":
                tasks.add_metric([w["name"], "ok"], w["done"])
                tasks.add_metric([w["name"], "failed"], w["failed"])
        for state, n in count.items():
            states.add_metric([state], n)
        yield from (states, slots, busy, tasks)
        yield from _histograms(view)
        jobs = GaugeMetricFamily(
            "pyrocluster_job_tasks", "Tasks of a job (its running runs, else its latest run) by status.",
            labels=["job", "state", "status"],
        )  # fmt: skip
        for name, row in sorted(_job_rows(doc["jobs"]).items()):
            pending = max(0, row.get("total", 0) - row.get("done", 0))
            for st, n in (
                ("ok", row.get("ok", 0)),
                ("failed", row.get("failed", 0)),
                ("skipped", row.get("skipped", 0)),
                ("pending", pending),
            ):
                jobs.add_metric([name, row["state"], st], n)
        yield jobs
        yield calls_waiting(doc["jobs"])
        updated = GaugeMetricFamily(
            "pyrocluster_dashboard_updated_timestamp_seconds", "Unix time of the round these values are from."
        )
        updated.add_metric([], view.updated)
        yield updated
        round_s = GaugeMetricFamily(
            "pyrocluster_dashboard_refresh_seconds", "Time the last refresh round took."
        )
        round_s.add_metric([], view.round_s)
        yield round_s


def make_registry(view: Callable[[], View]) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding only the cluster collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(view))
    return registry
