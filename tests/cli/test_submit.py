"""``pyrocluster submit``: exit codes, the results file, resume after a crash, live job status."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    TASKS_FILE,
    run_cli,
    running_cluster,
    start_submit,
    status_now,
    submit_interrupted,
    wait_for,
)

EXAMPLES = Path(__file__).parents[2] / "examples"


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_job(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("tasks:\n  - call: add\n    args: [1, 2]\n    retires: 3\n", "tasks[0]", "retires"),
        ("tasks:\n  - args: [1, 2]\n", "tasks[0]", "call"),
        ("tasks:\n  - call: add\n    args: 5\n", "tasks[0].args", "list"),
        ("tasks:\n  - call: add\n    map: 7\n", "tasks[0].map", "list"),
        ("defaults:\n  retries: many\ntasks:\n  - call: add\n", "defaults.retries", "integer"),
        ("tasks:\n  - id: a\n    call: add\n  - id: a\n    call: echo\n", "tasks[1].id", "duplicate"),
        ("tasks:\n  - call: add\n    args: [1, 2\n", "line", ""),
        ("colour: blue\ntasks:\n  - call: add\n", "colour", "unknown"),
        ("crawl:\n  seeds: [ftp://127.0.0.1/]\n", "crawl.seeds[0]", "http"),
        ("name: x\n", "", "tasks"),
    ],
)
def test_invalid_job_is_exit_2_naming_the_place_and_writes_nothing(tmp_path, text, where, what):
    job = write_job(tmp_path, text)
    result = run_cli("submit", str(job), "--ns", "127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"error: {job}"), result.stderr
    assert where in result.stderr and what in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.jsonl"))


def test_missing_job_file_is_exit_2(tmp_path):
    result = run_cli("submit", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "nope.yaml" in result.stderr


@pytest.fixture(scope="module")
def compute_ns() -> Iterator[str]:
    """Two two-slot workers of the built-in tasks, shared by the module's tests whose jobs are
    refused or only read their own results file."""
    worker = ["--services", "compute", "--concurrency", "2"]
    with running_cluster(worker, worker) as ns:
        yield ns


def test_unknown_task_name_is_exit_2_checked_against_workers(tmp_path, compute_ns):
    job = write_job(tmp_path, "tasks:\n  - call: add\n    args: [1, 2]\n  - call: frobnicate\n")
    result = run_cli("submit", str(job), "--ns", compute_ns, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "tasks[1].call (line 4)" in result.stderr and "unknown task 'frobnicate'" in result.stderr
    typo = write_job(tmp_path, "tasks:\n  - call: add\n    args: [1, 2]\n  - call: word_cuont\n")
    result = run_cli("submit", str(typo), "--ns", compute_ns, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "tasks[1].call (line 4)" in result.stderr and "did you mean 'word_count'?" in result.stderr, result
    assert not list(tmp_path.glob("*.jsonl"))


def test_unreachable_cluster_and_missing_tag_are_exit_3(tmp_path, compute_ns):
    job = write_job(tmp_path, "tasks:\n  - call: add\n    args: [1, 2]\n    tags: [gpu]\n")
    result = run_cli("submit", str(job), "--ns", "127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 3 and "cannot reach the name server" in result.stderr
    result = run_cli("submit", str(job), "--ns", compute_ns, "--wait", "1", cwd=tmp_path)
    assert result.returncode == 3, result
    assert result.stderr.strip() == "error: no live worker offers compute with tags gpu (waited 1 s)"


def test_a_job_submitted_before_its_workers_waits_for_them(tmp_path, nameserver, worker_factory):
    job = write_job(tmp_path, "name: early\ntasks:\n  - call: add\n    args: [1, 2]\n")
    proc = start_submit(job, nameserver, tmp_path, "--wait", "60", "--json")
    try:
        # the name server is up, no worker yet: the first look-up finds none, and submit waits
        wait_for(lambda: status_now(nameserver) is not None, 30, what="name server answering")
        assert proc.poll() is None
        worker_factory(1, "--services", "compute")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["ok"] == 1
    assert [r["result"] for r in read_lines(tmp_path / "early.results.jsonl")] == [3]


def test_5000_tasks_with_one_failure(tmp_path, compute_ns):
    job = write_job(
        tmp_path,
        "name: big\ntasks:\n  - id: sum\n    call: add\n    map: ["
        + ", ".join(f"[{i}, {i}]" for i in range(4999))
        + "]\n  - id: bad\n    call: fail\n"
        "    args: [kaput]\n",
    )
    result = run_cli("submit", str(job), "--ns", compute_ns, "--json", cwd=tmp_path)
    assert result.returncode == 1, result
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("name", "total", "ok", "failed", "skipped")} == {
        "name": "big",
        "total": 5000,
        "ok": 4999,
        "failed": 1,
        "skipped": 0,
    }
    assert summary["output"] == "big.results.jsonl" and summary["tasks_per_s"] > 0
    records = read_lines(tmp_path / "big.results.jsonl")
    assert len(records) == 5000 and len({r["id"] for r in records}) == 5000
    by_id = {r["id"]: r for r in records}
    assert by_id["sum-4998"]["result"] == 9996 and by_id["sum-4998"]["status"] == "ok"
    bad = by_id["bad"]
    assert (
        bad["status"] == "failed"
        and bad["error"]["type"] == "RuntimeError"
        and bad["error"]["message"] == "kaput"
    )
    assert bad["attempts"] == 1 and bad["worker"]


def test_sigkill_submit_then_resume_reruns_no_ok_task(tmp_path, nameserver, worker_factory):
    worker_factory(2, "--services", "compute", "--concurrency", "2", "--tasks", TASKS_FILE)
    log = tmp_path / "executions.log"
    items = ", ".join(f"[k{i}, {json.dumps(str(log))}, 0.02]" for i in range(400))
    job = write_job(tmp_path, f"name: crashy\ntasks:\n  - id: t\n    call: logged\n    map: [{items}]\n")
    out = tmp_path / "crashy.results.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "submit", str(job), "--ns", nameserver, "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: out.exists() and out.read_text().count("\n") >= 60, 60, interval_s=0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    ok_before = {r["id"] for r in before if r["status"] == "ok"}
    assert 60 <= len(ok_before) < 400
    time.sleep(0.5)  # calls already on the workers finish there (at-least-once)
    runs_before = log.read_text().split()
    result = run_cli("submit", str(job), "--ns", nameserver, "--resume", "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    records = read_lines(out)
    assert len(records) == 400 and {r["id"] for r in records} == {f"t-{i}" for i in range(400)}
    assert all(r["status"] == "ok" for r in records)
    runs_after = log.read_text().split()[len(runs_before) :]
    rerun = {f"t-{key[1:]}" for key in runs_after} & ok_before
    assert not rerun, f"ok tasks ran again after --resume: {sorted(rerun)[:5]}"
    assert json.loads(result.stdout)["ok"] == 400


def test_resume_repairs_a_torn_last_line(tmp_path, compute_ns):
    job = write_job(
        tmp_path, "name: torn\ntasks:\n  - id: a\n    call: add\n    map: [[1, 1], [2, 2], [3, 3]]\n"
    )
    assert run_cli("submit", str(job), "--ns", compute_ns, cwd=tmp_path).returncode == 0
    out = tmp_path / "torn.results.jsonl"
    text = out.read_text()
    last_start = text.rstrip("\n").rfind("\n") + 1
    out.write_text(text[: last_start + (len(text) - last_start) // 2])  # cut the last line in half
    result = run_cli("submit", str(job), "--ns", compute_ns, "--resume", cwd=tmp_path)
    assert result.returncode == 0, result
    records = read_lines(out)
    assert sorted(r["id"] for r in records) == ["a-0", "a-1", "a-2"]
    assert all(r["status"] == "ok" for r in records)


def test_status_shows_a_running_job_then_lists_it_finished(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "2")
    job = write_job(
        tmp_path,
        "name: slowjob\ntasks:\n  - id: nap\n    call: sleep\n    map: [" + ", ".join(["0.1"] * 60) + "]\n",
    )
    proc = start_submit(job, nameserver, tmp_path, "--quiet")
    try:

        def running_job():
            jobs = status_now(nameserver)["jobs"]
            return jobs and jobs[0]["done"] > 0 and jobs[0]

        seen = wait_for(running_job, 30, interval_s=0.05)
        assert seen["name"] == "slowjob" and seen["total"] == 60 and 0 < seen["done"] <= 60
        assert seen["state"] == "running"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.communicate()
    (done,) = json.loads(run_cli("status", "--ns", nameserver, "--json").stdout)["jobs"]
    assert (done["name"], done["state"], done["done"], done["total"], done["failed"]) == (
        "slowjob", "finished", 60, 60, 0
    )  # fmt: skip
    table = run_cli("status", "--ns", nameserver)
    assert "slowjob" in table.stdout and "finished" in table.stdout, table.stdout


def test_local_runs_the_demo_example(tmp_path):
    result = run_cli(
        "submit", str(EXAMPLES / "demo.yaml"), "--local", "2", "--json", cwd=tmp_path, timeout=120
    )
    assert result.returncode == 1, result  # the demo has one task that fails on purpose
    summary = json.loads(result.stdout)
    assert summary["failed"] == 1 and summary["ok"] == summary["total"] - 1
    records = {r["id"]: r for r in read_lines(tmp_path / "demo.results.jsonl")}
    assert records["answer"]["result"] == 42 and records["broken"]["status"] == "failed"


def test_local_with_user_tasks_and_out(tmp_path):
    result = run_cli(
        "submit",
        str(EXAMPLES / "usertasks.yaml"),
        "--local",
        "1",
        "--tasks",
        str(EXAMPLES / "mytasks.py"),
        "--out",
        "mine.jsonl",
        "--quiet",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result
    assert result.stdout == ""
    records = {r["id"]: r["result"] for r in read_lines(tmp_path / "mine.jsonl")}
    assert records["mean"] == 2.5 and records["collatz-0"] == 111 and records["shout"] == "HELLO HELLO"


def test_ctrl_c_cancels_keeps_results_exits_130_and_resume_finishes(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "2")
    job = write_job(
        tmp_path,
        "name: stopme\ntasks:\n  - id: nap\n    call: sleep\n    map: [" + ", ".join(["0.1"] * 80) + "]\n",
    )
    out = tmp_path / "stopme.results.jsonl"
    code, stdout, stderr = submit_interrupted(
        job, nameserver, tmp_path, lambda: out.exists() and out.read_text().count("\n") >= 5, "--json"
    )
    assert code == 130, stderr
    assert "cancelling the job" in stderr and "cancelled" in stderr and "--resume" in stderr
    assert "error: cancelling" not in stderr  # a cancel the user asked for is no error
    summary = json.loads(stdout)
    assert 5 <= summary["ok"] < 80 and summary["failed"] == 0
    assert summary["cancelled"] == 80 - summary["ok"] and summary["total"] == 80, summary
    kept = read_lines(out)  # every task has its line: ok, or cancelled (SPEC 6)
    assert len(kept) == 80 and sum(r["status"] == "ok" for r in kept) == summary["ok"]
    assert all(r["status"] in ("ok", "cancelled") for r in kept)
    result = run_cli("submit", str(job), "--ns", nameserver, "--resume", "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["ok"] == 80 and len(read_lines(out)) == 80


@pytest.mark.slow
def test_running_job_is_listed_again_after_a_nameserver_restart(tmp_path, processes):
    from pyrocluster.local import start_nameserver, start_worker

    ns_proc, address = start_nameserver()
    processes.add(ns_proc)
    processes.add(
        start_worker(address, ["--services", "compute", "--concurrency", "2", "--heartbeat", "0.5"])
    )
    job = write_job(
        tmp_path,
        "name: phoenix\ntasks:\n  - id: nap\n    call: sleep\n    map: [" + ", ".join(["0.2"] * 50) + "]\n",
    )

    def listed_jobs():
        status = status_now(address)
        return status is not None and [j["name"] for j in status["jobs"]]

    proc = start_submit(job, address, tmp_path, "--quiet")
    try:
        wait_for(lambda: listed_jobs() == ["phoenix"], 20)
        ns_proc.stop()
        processes.add(start_nameserver(port=int(address.rsplit(":", 1)[1]))[0])
        wait_for(lambda: listed_jobs() == ["phoenix"], 10)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.communicate()
