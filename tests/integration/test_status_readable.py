"""``status`` stays readable: repeated runs are one row, a killed submit is ``lost``, unreachable
workers show ``-``, ids and end times are listed."""

from __future__ import annotations

import json
import signal

import pytest

from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import TASKS_FILE, run_cli, start_submit, status_now, wait_for

TICK_JOB = "name: tick\ntasks:\n  - {id: a, call: add, args: [40, 2]}\n"


def jobs_json(ns: str, *args: str) -> list[dict]:
    return json.loads(run_cli("status", "--ns", ns, "--json", *args).stdout)["jobs"]


def job_states(ns: str) -> list[str]:
    """The jobs' states, polled in-process."""
    return [j["state"] for j in (status_now(ns) or {"jobs": []})["jobs"]]


@pytest.mark.slow
def test_a_schedule_firing_every_second_is_one_row_with_its_runs(
    tmp_path, nameserver, worker_factory, processes, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the scheduler writes runs/ in its current directory
    worker_factory(1, "--services", "compute", "--concurrency", "2")
    (tmp_path / "job.yaml").write_text(TICK_JOB)
    (tmp_path / "s.yaml").write_text("schedules:\n  - name: s\n    job: job.yaml\n    every: 1s\n")
    processes.add(ManagedProcess(["scheduler", str(tmp_path / "s.yaml"), "--ns", nameserver])).wait_ready()
    wait_for(lambda: job_states(nameserver).count("finished") >= 6, 40, what="six runs")
    every = jobs_json(nameserver)
    finished = [j for j in every if j["state"] == "finished"]
    assert all(j["id"].startswith("tick@") and j["ended"] for j in finished)  # JSON keeps every run
    table = run_cli("status", "--ns", nameserver)
    assert table.returncode == 0, table
    rows = [line for line in table.stdout.splitlines() if "tick@" in line]
    assert len(rows) <= 2, table.stdout  # the latest finished run (and one running at that moment)
    assert any("finished" in r and "(" in r and "ago)" in r for r in rows), table.stdout  # its end time
    assert "finished)" in table.stdout  # the runs column: "N (N finished)"
    listed_all = run_cli("status", "--ns", nameserver, "--jobs", "all", "--limit", "0")
    assert sum("tick@" in line for line in listed_all.stdout.splitlines()) >= 6, listed_all.stdout
    limited = run_cli("status", "--ns", nameserver, "--jobs", "all", "--limit", "2")
    assert "more finished" in limited.stdout, limited.stdout
    running_only = run_cli("status", "--ns", nameserver, "--jobs", "running", "--json")
    assert all(j["state"] == "running" for j in json.loads(running_only.stdout)["jobs"])


@pytest.mark.slow
def test_a_killed_submit_shows_lost_and_an_unreachable_worker_shows_dashes(
    tmp_path, nameserver, worker_factory
):
    # It still runs the 60 s task at teardown: no drain, or stopping it would wait for that task.
    worker_factory(
        1, "--services", "compute", "--concurrency", "1", "--tasks", TASKS_FILE, "--drain-timeout", "0"
    )
    (quiet,) = worker_factory(1, "--services", "compute", "--concurrency", "1", "--name", "quiet-worker")
    job = tmp_path / "long.yaml"
    job.write_text(f'name: long\ntasks:\n  - {{id: t, call: write_after, args: ["{tmp_path}/never", 60]}}\n')
    proc = start_submit(job, nameserver, tmp_path, "--quiet")
    try:
        wait_for(lambda: job_states(nameserver) == ["running"], 30, interval_s=0.05, what="the job running")
        (job_id,) = [j["id"] for j in jobs_json(nameserver)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: job_states(nameserver) == ["lost"], 15, what="the job lost")
        assert jobs_json(nameserver)[0]["id"] == job_id
        table = run_cli("status", "--ns", nameserver).stdout
        (row,) = [line for line in table.splitlines() if job_id[:20] in line]
        assert "lost" in row, table
    finally:
        proc.kill()
        proc.communicate()
    quiet.signal(signal.SIGSTOP)  # registered, silent: unreachable
    try:
        wait_for(
            lambda: "unreachable" in [w["state"] for w in status_now(nameserver)["workers"]],
            15,
            what="unreachable",
        )
        table = run_cli("status", "--ns", nameserver).stdout
        (row,) = [line for line in table.splitlines() if "quiet-worker" in line and "unreachable" in line]
        assert "-/1" in row and " 0 MB" not in row, table
    finally:
        quiet.signal(signal.SIGCONT)


@pytest.mark.slow
def test_a_killed_worker_and_a_killed_submit_are_forgotten_after_forget_after(
    tmp_path, processes, monkeypatch
):
    proc, ns = start_nameserver(["--forget-after", "3"])
    processes.add(proc)
    doomed = processes.add(
        start_worker(ns, ["--services", "compute", "--name", "doomed", "--tasks", TASKS_FILE])
    )
    processes.add(start_worker(ns, ["--services", "compute", "--name", "alive"]))
    job = tmp_path / "long.yaml"
    job.write_text(f'name: long\ntasks:\n  - {{id: t, call: write_after, args: ["{tmp_path}/never", 60]}}\n')
    submit = start_submit(job, ns, tmp_path, "--quiet")
    try:
        wait_for(lambda: job_states(ns) == ["running"], 30, interval_s=0.05, what="the job running")
        submit.send_signal(signal.SIGKILL)
        submit.wait(timeout=10)
    finally:
        submit.kill()
        submit.communicate()
    doomed.signal(signal.SIGKILL)
    wait_for(
        lambda: [w["name"] for w in status_now(ns)["workers"]] == ["alive"],
        20,
        what="the killed worker forgotten",
    )
    wait_for(lambda: job_states(ns) == ["lost"], 20, what="the job recorded lost")
    printed = json.loads(run_cli("status", "--ns", ns, "--json").stdout)
    assert [w["name"] for w in printed["workers"]] == ["alive"], printed
    assert [j["state"] for j in printed["jobs"]] == ["lost"], printed
    refused = run_cli("forget", "alive", "--ns", ns)
    assert refused.returncode == 2 and "answers" in refused.stderr, refused
    unknown = run_cli("forget", "doomed", "--ns", ns)
    assert unknown.returncode == 2 and "no registered worker named 'doomed'" in unknown.stderr, unknown


def test_forget_removes_a_silent_worker_at_once(processes):
    proc, ns = start_nameserver(["--forget-after", "0"])
    processes.add(proc)
    silent = processes.add(start_worker(ns, ["--services", "compute", "--name", "silent"]))
    silent.signal(signal.SIGKILL)
    result = run_cli("forget", "silent", "--ns", ns)
    assert result.returncode == 0 and result.stdout.strip() == "forgot worker silent", result
    assert json.loads(run_cli("status", "--ns", ns, "--json").stdout)["workers"] == []
