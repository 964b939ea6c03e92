"""Workflow (no sockets): items handed out in dependency order, skipped records, callbacks once, resume."""

from __future__ import annotations

import io
import textwrap
import threading
from pathlib import Path
from typing import Any

from pyrocluster import render
from pyrocluster.jobs.items import TaskItem
from pyrocluster.jobs.spec import load_job
from pyrocluster.jobs.workflow import Workflow

JOB = """
defaults:
  on_failure: {call: alert, args: [oops]}
tasks:
  - {id: a, call: echo, args: [1], on_success: {call: note}}
  - {id: b, call: add, args: [{$result: a}, 1]}
  - {id: m, call: add, map: [[1, 1], [2, 2]], needs: [b]}
  - {id: c, call: echo, args: [{$result: m}]}
on_success: {call: done}
"""


def ok(item: TaskItem, result: Any) -> dict[str, Any]:
    return {"id": item.id, "kind": item.kind, "call": item.call, "status": "ok", "result": result}


def take(chunks: Any) -> list[TaskItem]:
    """The items handed out until the workflow says it waits (None) or ends."""
    out = []
    for chunk in chunks:
        if chunk is None:
            break
        out += chunk
    return out


def workflow(tmp_path: Path, kept: dict[str, dict[str, Any]] | None = None) -> tuple[Workflow, list[dict]]:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(JOB))
    written: list[dict] = []
    return Workflow(load_job(path), kept or {}, written.extend), written


def test_items_follow_the_edges_values_flow_and_callbacks_come_after_the_record(tmp_path: Path) -> None:
    flow, written = workflow(tmp_path)
    items = flow.chunks(threading.Event())
    assert flow.waiting == 4 and flow.total == 5
    (a,) = take(items)
    assert a.id == "a"
    assert flow.recorded([ok(a, 1)]) == []
    cb, b = take(items)
    assert (cb.id, cb.kind, cb.call, cb.args[-1]["id"]) == ("a:on_success", "callback", "note", "a")
    assert (b.id, b.args) == ("b", [1, 1])
    assert flow.total == 6 and flow.waiting == 3
    flow.recorded([ok(cb, None), ok(b, 2)])
    m0, m1 = take(items)
    flow.recorded([ok(m1, 4), ok(m0, 2)])
    (c,) = take(items)
    assert c.args == [[2, 4]]
    flow.recorded([ok(c, [2, 4])])
    assert list(items) == [] and not written
    job_cb = flow.job_callback({"failed": 0}, failed=False)
    assert job_cb is not None and (job_cb.id, job_cb.call, job_cb.args) == (
        "job:on_success",
        "done",
        [{"failed": 0}],
    )
    assert flow.job_callback({"failed": 1}, failed=True) is None  # no job on_failure given


def test_a_failure_records_skips_and_fires_on_failure_once(tmp_path: Path) -> None:
    flow, _ = workflow(tmp_path)
    items = flow.chunks(threading.Event())
    (a,) = take(items)
    failed = {"id": "a", "kind": "compute", "call": "echo", "status": "failed", "error": {}}
    following = flow.recorded([failed])
    assert [(r["id"], r["status"], r["reason"]) for r in following] == [
        ("b", "skipped", "upstream a failed"),
        ("m-0", "skipped", "upstream b skipped"),
        ("m-1", "skipped", "upstream b skipped"),
        ("c", "skipped", "upstream m skipped"),
    ]
    assert following[1]["args"] == [1, 1]
    (cb,) = take(items)
    assert (cb.id, cb.args[:-1], cb.args[-1]["status"]) == ("a:on_failure", ["oops"], "failed")
    flow.recorded([{"id": cb.id, "kind": "callback", "status": "failed"}])  # a failed callback fires nothing
    assert list(items) == [] and flow.waiting == 0


def test_resume_feeds_kept_results_and_runs_only_missing_callbacks(tmp_path: Path) -> None:
    kept = {  # as a results file holds them: each with its call and arguments
        "a": {"id": "a", "call": "echo", "args": [1], "kwargs": {}, "status": "ok", "result": 5},
        "a:on_success": {"id": "a:on_success", "status": "ok"},
        "b": {"id": "b", "call": "add", "args": [5, 1], "kwargs": {}, "status": "ok", "result": 6},
        "m-0": {"id": "m-0", "call": "add", "args": [1, 1], "kwargs": {}, "status": "ok", "result": 2},
    }
    flow, written = workflow(tmp_path, kept)
    items = flow.chunks(threading.Event())
    (m1,) = take(items)  # a, b and m-0 are not run again; a's callback has its line
    assert m1.id == "m-1" and flow.resumed == 4
    flow.recorded([ok(m1, 4)])
    (c,) = take(items)
    assert c.args == [[2, 4]]


def test_progress_shows_waiting_tasks() -> None:
    snap = dict(name="j", total=9, done=1, ok=1, failed=0, retried=0, skipped=0, queued=0, waiting=5)
    snap.update(in_flight=3, rate=1.0, eta_s=None, per_worker={})
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render.job_progress(snap, width=200))
    text = console.export_text()
    assert "waiting 5" in text and "in flight 3" in text


def test_a_task_nobody_waits_for_still_fires_its_callback(tmp_path: Path) -> None:
    path = tmp_path / "solo.yaml"
    path.write_text(
        "tasks:\n  - {id: solo, call: echo, args: [1], on_success: {call: note}}\n  - {id: x, call: echo}\n"
    )
    flow = Workflow(load_job(path), {}, [].extend)
    items = flow.chunks(threading.Event())
    assert [i.id for i in take(items)] == ["solo", "x"]
    flow.recorded([ok(TaskItem("x", "echo", [], {}, (), 1.0, 0, False), None)])
    flow.recorded([ok(TaskItem("solo", "echo", [1], {}, (), 1.0, 0, False), 1)])
    assert [i.id for i in take(items)] == ["solo:on_success"]


def test_cancel_stops_the_cascade_and_lists_every_call_dynamic_maps_included(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "tasks:\n  - {id: src, call: echo, args: [[1, 2]]}\n  - {id: dyn, call: add, map: {$result: src}}\n"
        "  - {id: after, call: echo, needs: [dyn]}\n"
    )
    flow = Workflow(load_job(path), {}, [].extend)
    items = flow.chunks(threading.Event())
    (src,) = take(items)
    unfinished = flow.cancel()
    cancelled = {"id": "src", "kind": "compute", "call": "echo", "status": "cancelled"}
    assert flow.recorded([cancelled]) == []  # nothing recorded skipped: all of it is cancelled
    assert [i.id for i in unfinished] == ["src", "dyn", "after"] and flow.total == 3
    assert list(items) == []
