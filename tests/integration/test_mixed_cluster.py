"""A mixed cluster: routing by task catalog, one call one blast radius, per-call
timeouts, recording that never hangs, fair dispatch. Real name server and worker processes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pyrocluster import Cluster
from tests.conftest import TASKS_FILE, run_cli, start_submit, wait_for

USER_TASKS = '''
from pyrocluster import task


@task
def compress_ratio(text: str) -> float:
    """A task only the worker started with this module offers."""
    return round(len(set(text)) / max(1, len(text)), 3)


@task
def histogram(values: list) -> dict:
    """Counts by value: a dict with int keys."""
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


@task
def pairs() -> dict:
    """A dict with tuple keys: no JSON can hold it."""
    return {(1, 2): 3}


@task
def blob(n: int) -> str:
    return "x" * n
'''


def user_tasks(tmp_path: Path) -> str:
    path = tmp_path / "mytasks.py"
    path.write_text(USER_TASKS)
    return str(path)


def records(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), raw[-100:]
    return [json.loads(line) for line in raw.splitlines()]


def submit(
    job: Path, ns: str, cwd: Path, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return run_cli("submit", str(job), "--ns", ns, "--quiet", "--json", *args, cwd=cwd, timeout=timeout)


def test_a_task_offered_by_one_worker_runs_only_there(tmp_path, nameserver, worker_factory):
    mytasks = user_tasks(tmp_path)
    worker_factory(2, "--services", "compute", "--concurrency", "1")
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--name", "gamma", "--tasks", mytasks)
    status = json.loads(run_cli("status", "--ns", nameserver, "--json").stdout)
    offering = [w["name"] for w in status["workers"] if "compress_ratio" in w["tasks"]]
    assert offering == ["gamma"], status["workers"]
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - id: c\n    call: compress_ratio\n    map: [a, bb, abc, aaaa, abcd]\n")
    result = submit(job, nameserver, tmp_path)
    assert result.returncode == 0, result
    recs = records(tmp_path / "job.results.jsonl")
    assert [(r["status"], r["attempts"], r["worker"]) for r in recs] == [("ok", 1, "gamma")] * 5
    with Cluster(nameserver) as cluster:
        futures = [cluster.submit("compress_ratio", t) for t in ("aa", "ab")]
        assert list(cluster.map("compress_ratio", ["aa", "ab"])) == [0.5, 1.0]
        assert [(f.result(30), f.worker, f.attempts) for f in futures] == [
            (0.5, "gamma", 1),
            (1.0, "gamma", 1),
        ]


def test_int_keys_fail_no_batch_mate(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--tasks", user_tasks(tmp_path))
    items = ", ".join(f'"e{i}"' for i in range(58))
    job = tmp_path / "job.yaml"
    job.write_text(
        f"tasks:\n  - id: plain\n    call: echo\n    map: [{items}]\n"
        "  - id: hist\n    call: histogram\n    args: [[1, 1, 2]]\n"
        "  - id: intarg\n    call: echo\n    args: [{1: 2, 3: 4}]\n"
    )
    result = submit(job, nameserver, tmp_path)
    assert result.returncode == 0, result
    recs = {r["id"]: r for r in records(tmp_path / "job.results.jsonl")}
    assert len(recs) == 60 and all((r["status"], r["attempts"]) == ("ok", 1) for r in recs.values()), recs
    assert recs["hist"]["result"] == {"1": 2, "2": 1}  # JSON keys are strings; the API keeps ints
    with Cluster(nameserver) as cluster:
        assert cluster.submit("histogram", [1, 1, 2]).result(30) == {1: 2, 2: 1}
        assert cluster.submit("echo", {1: 2, 3: 4}).result(30) == {1: 2, 3: 4}


def test_one_call_overrunning_its_timeout_costs_nothing_to_the_others(tmp_path, nameserver, worker_factory):
    worker_factory(2, "--services", "compute", "--concurrency", "1")
    adds = ", ".join(f"[{i}, {i}]" for i in range(300))
    job = tmp_path / "job.yaml"
    job.write_text(
        "tasks:\n  - id: slow\n    call: sleep\n    args: [30]\n    timeout: 2\n    retries: 0\n"
        f"  - id: add\n    call: add\n    map: [{adds}]\n"
    )
    started = time.monotonic()
    result = submit(job, nameserver, tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 1, result
    recs = {r["id"]: r for r in records(tmp_path / "job.results.jsonl")}
    assert recs["slow"]["status"] == "failed" and recs["slow"]["error"]["type"] == "TaskTimeout", recs["slow"]
    adds_ok = [r for k, r in recs.items() if k.startswith("add-")]
    assert len(adds_ok) == 300 and all((r["status"], r["attempts"]) == ("ok", 1) for r in adds_ok)
    assert json.loads(result.stdout)["wall_s"] < 10, result.stdout
    assert took < 30, took


def test_a_result_that_breaks_recording_fails_alone(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--tasks", user_tasks(tmp_path), "--serializer", "serpent")
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - id: odd\n    call: pairs\n  - id: fine\n    call: add\n    args: [1, 2]\n")
    result = submit(job, nameserver, tmp_path, "--serializer", "serpent", timeout=60)
    assert result.returncode == 1, result
    recs = {r["id"]: r for r in records(tmp_path / "job.results.jsonl")}
    assert recs["odd"]["status"] == "failed" and recs["odd"]["error"]["type"] == "NotRecordable", recs
    assert recs["fine"]["status"] == "ok"


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs (needs root); skipped with the reason otherwise."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_job_with_one_error_and_a_valid_file(
    tmp_path, nameserver, worker_factory, small_fs
):
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--tasks", user_tasks(tmp_path))
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - id: big\n    call: blob\n    map: [" + ", ".join(["8000"] * 200) + "]\n")
    out = small_fs / "big.results.jsonl"
    result = submit(job, nameserver, tmp_path, "--out", str(out))
    assert result.returncode == 74, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(out) in errors[0] and "No space left" in errors[0], result.stderr
    kept = records(out)  # whole lines only
    assert 0 < len(kept) < 200 and all(r["status"] == "ok" for r in kept)


def test_two_submits_on_one_results_file_are_refused(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--tasks", TASKS_FILE)
    release = tmp_path / "release"
    held = tmp_path / "held.yaml"
    held.write_text(f"name: held\noutput: shared.jsonl\ntasks:\n  - call: hold\n    args: ['{release}']\n")
    first = start_submit(held, nameserver, tmp_path, "--quiet")
    try:
        wait_for(lambda: (tmp_path / "shared.jsonl").exists(), 30, what="first job's results file")
        other = tmp_path / "other.yaml"
        other.write_text("name: other\noutput: shared.jsonl\ntasks:\n  - call: add\n    args: [1, 2]\n")
        second = submit(other, nameserver, tmp_path)
        assert second.returncode == 2, second
        assert "being written by another running job" in second.stderr, second.stderr
        release.touch()
        assert first.wait(timeout=60) == 0, first.communicate()
    finally:
        first.kill()
        first.communicate()
    assert [r["status"] for r in records(tmp_path / "shared.jsonl")] == ["ok"]


def test_tagged_work_behind_an_untagged_backlog_finishes_early(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--name", "plain")
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--name", "gpu", "--tags", "gpu")
    job = tmp_path / "job.yaml"
    job.write_text(
        "tasks:\n  - id: backlog\n    call: sleep\n    map: [" + ", ".join(["0.02"] * 200) + "]\n"
        "  - id: tagged\n    call: sleep\n    tags: [gpu]\n    map: [" + ", ".join(["0.02"] * 10) + "]\n"
    )
    result = submit(job, nameserver, tmp_path)
    assert result.returncode == 0, result
    order = [r["id"] for r in records(tmp_path / "job.results.jsonl")]
    last_tagged = max(i for i, key in enumerate(order) if key.startswith("tagged-"))
    backlog_before = sum(1 for key in order[:last_tagged] if key.startswith("backlog-"))
    assert backlog_before < 100, f"tagged work finished after {backlog_before} of 200 backlog tasks"
