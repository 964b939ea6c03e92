"""Cancellation (SPEC 4 and 6): `pyrocluster cancel`, Ctrl-C on submit, future.cancel()
and cluster.cancel(future), against real name server and worker processes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from pyrocluster import Cluster
from tests.conftest import TASKS_FILE, run_cli, start_submit, wait_for

TASK_S = 6.0
"""Each task's length: long enough to be cancelled mid-run, short enough to prove it never ends."""


def job_file(tmp_path: Path, n: int = 20) -> Path:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    items = ", ".join(f'["{marks}/t{i}", {TASK_S}]' for i in range(n))
    job = tmp_path / "long.yaml"
    job.write_text(f"name: long\ntasks:\n  - id: t\n    call: write_after\n    map: [{items}]\n")
    return job


@pytest.fixture
def watcher(nameserver: str) -> Iterator[Cluster]:
    """A coordinator that only reads the cluster's status: in-process, a poll takes milliseconds.

    A `pyrocluster status` process takes 4-7 s on a loaded 2-core machine: polled through it,
    the tasks could be most of TASK_S old before the test saw them run, and end before the cancel.
    """
    with Cluster(nameserver) as cluster:
        yield cluster


def busy_slots(watcher: Cluster) -> int:
    return sum(w["busy"] for w in watcher.status()["workers"])


def records(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def start_long_job(
    tmp_path: Path, nameserver: str, worker_factory, watcher: Cluster
) -> tuple[subprocess.Popen[str], float]:
    worker_factory(2, "--services", "compute", "--concurrency", "2", "--tasks", TASKS_FILE)
    proc = start_submit(job_file(tmp_path), nameserver, tmp_path, "--quiet")
    wait_for(lambda: busy_slots(watcher) == 4, 30, interval_s=0.05, what="all four slots running a task")
    return proc, time.monotonic()


def check_cancelled_end(tmp_path: Path, watcher: Cluster, proc, since: float) -> None:
    """``submit`` exits 130 within 5 s of ``since`` (the moment its job took the cancel), every task
    recorded cancelled, the slots free soon after."""
    assert proc.wait(timeout=15) == 130, proc.communicate()
    assert time.monotonic() - since < 5.0, "submit must exit within 5 s of the cancel"
    recs = records(tmp_path / "long.results.jsonl")
    others = {
        k: (r["status"], r.get("error") or r.get("reason"))
        for k, r in recs.items()
        if r["status"] != "cancelled"
    }
    assert len(recs) == 20 and not others, others
    wait_for(lambda: busy_slots(watcher) == 0, 2.5, interval_s=0.05, what="slots free again within 2 s")


@pytest.mark.slow
def test_cancel_command_stops_a_running_job(tmp_path, nameserver, worker_factory, watcher):
    unknown = run_cli("cancel", "nosuchjob", "--ns", nameserver)
    assert unknown.returncode == 2 and "no running job named 'nosuchjob'" in unknown.stderr, unknown
    proc, started = start_long_job(tmp_path, nameserver, worker_factory, watcher)
    try:
        result = run_cli("cancel", "long", "--ns", nameserver)
        # Exit 0 means the job acknowledged: the 5 s run from there, not from the start of a
        # `cancel` process, which alone can take seconds to import on a loaded machine.
        acknowledged = time.monotonic()
        assert result.returncode == 0, result
        check_cancelled_end(tmp_path, watcher, proc, acknowledged)
        time.sleep(max(0.0, started + TASK_S + 1 - time.monotonic()))  # when the tasks would have ended
        assert not list((tmp_path / "marks").iterdir()), "a cancelled task ran to its end"
        status = json.loads(run_cli("status", "--ns", nameserver, "--json").stdout)
        assert [(j["name"], j["state"]) for j in status["jobs"]] == [("long", "cancelled")], status["jobs"]
    finally:
        proc.kill()
        proc.communicate()


def test_ctrl_c_cancels_and_resume_finishes(tmp_path, nameserver, worker_factory, watcher):
    proc, _ = start_long_job(tmp_path, nameserver, worker_factory, watcher)
    try:
        asked = time.monotonic()
        proc.send_signal(signal.SIGINT)
        check_cancelled_end(tmp_path, watcher, proc, asked)
        assert "cancelling" in proc.communicate()[1]
    finally:
        proc.kill()
        proc.communicate()
    quick = job_file(tmp_path).read_text().replace(f", {TASK_S}]", ", 0]")
    (tmp_path / "long.yaml").write_text(quick)
    resumed = run_cli(
        "submit", str(tmp_path / "long.yaml"), "--ns", nameserver, "--resume", "--quiet", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed
    assert all(r["status"] == "ok" for r in records(tmp_path / "long.results.jsonl").values())


def test_future_cancel_and_cluster_cancel(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--tasks", TASKS_FILE)
    with Cluster(nameserver) as cluster:
        release = tmp_path / "release"
        running = cluster.submit("hold", str(release), 60)
        wait_for(lambda: cluster.in_flight() == 1, 30)
        queued_mark = tmp_path / "queued-ran"
        queued = cluster.submit("write_after", str(queued_mark), 0)
        assert queued.cancel() is True and queued.cancelled()
        assert running.cancel() is False and not running.done()
        assert cluster.cancel(running) is True
        with pytest.raises(CancelledError):
            running.result(timeout=5)
        # The slot is free again: the next call runs at once although `hold` never got its file.
        assert cluster.submit("add", 1, 2).result(timeout=10) == 3
        assert not queued_mark.exists()


def test_a_name_shared_by_two_running_jobs_is_refused_and_an_id_cancels_one(
    tmp_path, nameserver, worker_factory, watcher
):
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--tasks", TASKS_FILE)
    job = tmp_path / "twin.yaml"
    job.write_text(f'name: twin\ntasks:\n  - {{id: t, call: write_after, args: ["{tmp_path}/never", 30]}}\n')
    procs = [
        start_submit(job, nameserver, tmp_path, "--quiet", "--out", str(tmp_path / f"{i}.jsonl"))
        for i in (1, 2)
    ]
    try:

        def running() -> list[str]:
            return sorted(j["id"] for j in watcher.status()["jobs"] if j["state"] == "running")

        wait_for(lambda: len(running()) == 2, 30, interval_s=0.05, what="both jobs running")
        ids = running()
        shared = run_cli("cancel", "twin", "--ns", nameserver)
        assert shared.returncode == 2, shared
        line = shared.stderr.strip()
        assert line.startswith("error: 2 running jobs are named 'twin'") and "--all" in line, line
        assert all(f"{i} (started " in line for i in ids), line
        assert all(p.poll() is None for p in procs)  # nothing was cancelled
        one = run_cli("cancel", ids[0], "--ns", nameserver)
        assert one.returncode == 0 and one.stdout.strip() == f"job {ids[0]} is cancelling", one
        wait_for(lambda: running() == [ids[1]], 15, interval_s=0.05, what="only the other job left running")
        both = run_cli("cancel", "twin", "--all", "--ns", nameserver)
        assert both.returncode == 0 and both.stdout.strip() == f"job {ids[1]} is cancelling", both
        assert [p.wait(timeout=15) for p in procs] == [130, 130]
    finally:
        for p in procs:
            p.kill()
            p.communicate()


def test_a_cancel_right_before_close_still_stops_the_call_on_its_worker(
    tmp_path, nameserver, worker_factory, watcher
):
    """`submit` cancels its job and exits at once: the cancel must reach the worker all the same."""
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--tasks", TASKS_FILE)
    started = tmp_path / "started"
    cluster = Cluster(nameserver)
    try:
        running = cluster.submit("hold", str(tmp_path / "never"), 60, str(started))
        wait_for(started.exists, 30, interval_s=0.02, what="the call running")
        assert cluster.cancel(running) is True
    finally:
        cluster.close()
    wait_for(lambda: busy_slots(watcher) == 0, 10, interval_s=0.05, what="the slot free again")


def test_cluster_cancel_of_another_cluster_objects_future_stops_it_on_its_worker(
    tmp_path, nameserver, worker_factory, watcher
):
    """The cancel goes through the coordinator that sent the call: not a future marked cancelled
    while its task holds the slot to its end (it was, and the next call waited for it)."""
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--tasks", TASKS_FILE)
    started = tmp_path / "started"
    with Cluster(nameserver) as owner:
        running = owner.submit("hold", str(tmp_path / "never"), 60, str(started))
        wait_for(started.exists, 30, interval_s=0.02, what="the call running")
        assert watcher.cancel(running) is True
        with pytest.raises(CancelledError):
            running.result(timeout=5)
        wait_for(lambda: busy_slots(watcher) == 0, 10, interval_s=0.05, what="the slot free again")
        assert owner.submit("add", 1, 2).result(timeout=10) == 3
    with pytest.raises(TypeError, match="a future returned by submit"):
        watcher.cancel("add")  # type: ignore[arg-type]
