"""The data behind the dashboard, without sockets: task stats, finished-job records, the metrics collector."""

from __future__ import annotations

import json

import Pyro5.errors
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pyrocluster import codec
from pyrocluster.nameserver import finished
from pyrocluster.services.taskstats import MAX_TASK_NAMES, OTHER, TaskStats, error_of
from pyrocluster.web.cache import View
from pyrocluster.web.metrics import make_registry


def test_task_stats_count_by_status_and_bucket():
    stats = TaskStats(buckets=(0.01, 0.1))
    stats.add(["add", "add", "fail", "sleep"], [[0, 1, 5.0], [0, 2, 50.0], [1, {}, 2.0], [2, {}, 500.0]])
    snap = stats.snapshot()
    assert snap["buckets"] == [0.01, 0.1]
    assert snap["tasks"]["add"] == {"counts": {"ok": 2}, "histogram": [1, 1, 0], "sum_s": 0.055}
    assert snap["tasks"]["fail"]["counts"] == {"failed": 1}
    assert snap["tasks"]["sleep"]["counts"] == {"timeout": 1}
    assert snap["tasks"]["sleep"]["histogram"] == [0, 0, 1]


def test_task_stats_memory_is_bounded_by_names():
    stats = TaskStats()
    for i in range(MAX_TASK_NAMES + 50):
        stats.add([f"t{i}"], [[0, None, 1.0]])
    tasks = stats.snapshot()["tasks"]
    assert len(tasks) == MAX_TASK_NAMES + 1 and tasks[OTHER]["counts"] == {"ok": 50}


def test_error_of_reads_packed_and_plain_errors():
    err = {"type": "RuntimeError", "message": "boom", "traceback": "tb"}
    assert error_of(err) == err and error_of(codec.pack(err)) == err and error_of(b"\xc1") == {}


class FakeNameServer:
    """The name-server calls finished.py makes, on a dict (the real one is tested over the wire)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, set[str]]] = {}

    def register(self, name, uri, safe=False, metadata=None):
        self.entries[name] = (uri, set(metadata or ()))

    def lookup(self, name, return_metadata=False):
        if name not in self.entries:
            raise Pyro5.errors.NamingError(f"unknown name: {name}")
        return self.entries[name]

    def list(self, prefix="", return_metadata=False):
        return {k: v for k, v in self.entries.items() if k.startswith(prefix)}

    def remove(self, name):
        return 1 if self.entries.pop(name, None) else 0


def test_finished_jobs_listed_newest_first_then_pruned_after_the_keep_time():
    ns = FakeNameServer()
    fail = {"id": "t1", "type": "RuntimeError", "message": "boom", "traceback": "tb"}
    finished.register_finished(
        ns, "a@h-1-1", {"name": "a", "done": 2, "failures_seen": 1}, [fail], now=1000.0
    )
    finished.register_finished(ns, "b@h-1-2", {"name": "b", "done": 3}, [], now=1100.0)
    entries = finished.find_finished(ns, now=1200.0)
    assert [e["name"] for e in entries] == ["b", "a"] and entries[1]["ended"] == 1000.0
    assert finished.finished_failures(ns, "a@h-1-1") == [fail]
    assert [e["name"] for e in finished.find_finished(ns, now=1000.0 + finished.KEEP_FINISHED_S + 1)] == ["b"]
    assert finished.prune(ns, now=1000.0 + finished.KEEP_FINISHED_S + 1) == 2
    assert sorted(ns.entries) == [
        "pyrocluster.failures.b@h-1-2",
        "pyrocluster.finished.b@h-1-2",
        finished.PRUNED_MARK,
    ]
    assert finished.KEEP_FINISHED_S >= 600


def test_a_jobs_end_prunes_at_most_once_a_minute_across_jobs():
    # Pruning lists every record: a job's end does it only when no job's end did for PRUNE_EVERY_S.
    ns = FakeNameServer()
    finished.register_finished(ns, "old@h-1-1", {"name": "old"}, [], now=1000.0)  # prunes: no mark yet
    finished.register_finished(ns, "gone@h-1-2", {"name": "gone"}, [], now=1001.0)  # not due
    expiry = 1000.0 + finished.KEEP_FINISHED_S + 1
    finished.register_finished(ns, "a@h-1-3", {"name": "a"}, [], now=expiry)  # due: "old" expired, pruned
    assert "pyrocluster.finished.old@h-1-1" not in ns.entries
    assert "pyrocluster.finished.gone@h-1-2" in ns.entries  # one second younger: kept
    later = expiry + finished.PRUNE_EVERY_S - 1
    finished.register_finished(ns, "b@h-1-4", {"name": "b"}, [], now=later)
    assert "pyrocluster.finished.gone@h-1-2" in ns.entries  # expired, but no prune is due yet
    assert [e["name"] for e in finished.find_finished(ns, now=later)] == ["b", "a"]  # readers skip both
    finished.register_finished(ns, "c@h-1-5", {"name": "c"}, [], now=later + 1)
    assert "pyrocluster.finished.gone@h-1-2" not in ns.entries
    assert "pyrocluster.failures.gone@h-1-2" not in ns.entries
    assert sorted(e["name"] for e in finished.find_finished(ns, now=later + 1)) == ["a", "b", "c"]


def test_a_reader_that_may_not_delete_leaves_the_records_to_the_jobs():
    ns = FakeNameServer()
    finished.register_finished(ns, "old@h-1-1", {"name": "old"}, [], now=1000.0)

    def refused(*args, **kwargs):
        raise PermissionError("viewer may not register names")

    ns.register = refused  # a viewer's status or dashboard: the name server refuses its writes
    assert finished.prune_if_due(ns, 1000.0 + finished.KEEP_FINISHED_S + 61) == 0
    assert "pyrocluster.finished.old@h-1-1" in ns.entries


def test_collector_sums_histograms_and_keeps_one_row_per_job_name():
    worker = {"name": "w1", "state": "ready", "slots": 2, "busy": 1, "done": 3, "failed": 1}
    gone = {**worker, "name": "w2", "state": "unreachable", "done": 0, "failed": 0}
    row = {"counts": {"ok": 3}, "histogram": [1, 2, 0], "sum_s": 0.3}
    view = View(
        status={
            "nameserver": {"address": "x", "reachable": True},
            "workers": [worker, gone],
            "jobs": [
                {"name": "j", "state": "running", "done": 1, "total": 4, "ok": 1, "failed": 0, "skipped": 0},
                {"name": "j", "state": "finished", "done": 9, "total": 9, "ok": 9, "failed": 0},
            ],
            "schedules": [],
        },
        task_stats={
            "w1": {"buckets": [0.1, 1.0], "tasks": {"add": row}},
            "w3": {"buckets": [0.1, 1.0], "tasks": {"add": row}},
        },  # fmt: skip
        updated=10.0,
    )
    text = generate_latest(make_registry(lambda: view)).decode()
    fams = {f.name: f.samples for f in text_string_to_metric_families(text)}
    assert {(s.labels["worker"], s.labels["status"]): s.value for s in fams["pyrocluster_tasks"]} == {
        ("w1", "ok"): 3, ("w1", "failed"): 1
    }  # fmt: skip
    buckets = {s.labels["le"]: s.value for s in fams["pyrocluster_task_duration_seconds"] if "le" in s.labels}
    assert buckets == {"0.1": 2, "1.0": 6, "+Inf": 6}
    jobs = {(s.labels["state"], s.labels["status"]): s.value for s in fams["pyrocluster_job_tasks"]}
    assert jobs == {("running", "ok"): 1, ("running", "failed"): 0, ("running", "skipped"): 0,
                    ("running", "pending"): 3}  # fmt: skip
    assert fams["pyrocluster_dashboard_updated_timestamp_seconds"][0].value == 10.0
    assert json.dumps(view.status)  # the document stays plain JSON
