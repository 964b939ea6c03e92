"""``pyrocluster scheduler`` on bad input: one error line with the file and key path, exit 2 or 3."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import run_cli, wait_for
from tests.integration.test_scheduler import ticks_of

JOB = "name: j\ntasks:\n  - {call: add, args: [1, 2]}\n"


def schedules(tmp_path: Path, body: str, job: str | None = JOB, name: str = "s") -> str:
    if job is not None:
        (tmp_path / "job.yaml").write_text(job)
    path = tmp_path / "schedules.yaml"
    path.write_text(f"schedules:\n  - name: {name}\n    job: job.yaml\n" + body)
    return str(path)


@pytest.mark.parametrize(
    ("body", "job", "where"),
    [
        (
            "    cron: '0 25 * * *'\n",
            JOB,
            "schedules[0].cron (line 4): bad cron expression '0 25 * * *': Bad hour",
        ),
        ("    every: 1m\n", None, "schedules[0].job (line 3): no such job file"),
        (
            "    every: 1m\n    cron: '* * * * *'\n",
            JOB,
            "schedules[0] (line 2): give either 'cron' or 'every'",
        ),
    ],
)
def test_invalid_schedules_exit_2_before_anything_starts(tmp_path, body, job, where):
    """A few cases end to end; tests/unit/test_schedules_spec.py has every message."""
    path = schedules(tmp_path, body, job)
    # No name server at this address: validation comes first, so this is exit 2, not 3.
    result = run_cli("scheduler", path, "--ns", "127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: {where}"), line
    assert result.stdout == "" and not (tmp_path / "runs").exists()


def test_unreachable_nameserver_is_exit_3(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli(
        "scheduler", schedules(tmp_path, "    every: 1m\n"), "--ns", f"127.0.0.1:{port}", cwd=tmp_path
    )
    assert result.returncode == 3, result
    assert "cannot reach the name server" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_sigterm_lets_a_running_tick_finish_or_cancels_it_after_the_drain_timeout(
    processes, tmp_path, monkeypatch
):
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    worker_args = ["--services", "compute", "--pool", "thread", "--concurrency", "4", "--drain-timeout", "0"]
    processes.add(start_worker(ns, worker_args))
    # One scheduler, two schedules: a 1 s nap ends within the 3 s drain, a 20 s nap does not.
    for name, nap in (("short", 1), ("long", 20)):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\ntasks:\n  - {{call: sleep, args: [{nap}]}}\n")
    (tmp_path / "s.yaml").write_text(
        "schedules:\n"
        "  - {name: short, job: short.yaml, every: 2s}\n"
        "  - {name: long, job: long.yaml, every: 2s}\n"
    )
    monkeypatch.chdir(tmp_path)  # the scheduler writes runs/ in its current directory
    args = ["scheduler", "s.yaml", "--ns", ns, "--name", "drainer", "--drain-timeout", "3"]
    proc = processes.add(ManagedProcess(args))
    proc.wait_ready()
    # Both run: the long one's results directory exists, and a short run has just started.
    wait_for(lambda: (tmp_path / "runs" / "long").is_dir(), 10, what="the long tick fires")

    def short_running() -> bool:
        recorded = {x["tick"].replace("-", "").replace(":", "") for x in ticks_of(tmp_path, "short")}
        started = {p.name.split(".")[0] for p in (tmp_path / "runs" / "short").glob("*.results.jsonl")}
        return bool(started - recorded)

    wait_for(short_running, 10, 0.05, what="a short tick runs")
    proc.signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert proc.proc.wait(timeout=30) == 0
    assert time.monotonic() - stopped < 12  # the 20 s nap was cancelled after 3 s, not waited for
    state = json.loads((tmp_path / "runs" / "scheduler.state.json").read_text())["schedules"]
    for name, status in (("short", "ok"), ("long", "cancelled")):
        lines = ticks_of(tmp_path, name)
        fired = [x for x in lines if x["decision"] == "fired"]
        # The run under way at SIGTERM is recorded with how it ended; others were skipped-overlap.
        assert fired and fired[-1]["run_status"] == status, lines
        assert all(x["decision"] in ("fired", "skipped-overlap") for x in lines), lines
        # ... and so is this host's state: a restart shows how it ended, not "running".
        assert state[name]["fire"] == fired[-1]["tick"] and state[name]["status"] == status, state


def test_a_second_scheduler_with_the_same_name_is_refused_with_exit_2(processes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    path = schedules(tmp_path, "    every: 1m\n")
    first = processes.add(ManagedProcess(["scheduler", path, "--ns", ns, "--name", "twin"]))
    first.wait_ready()
    result = run_cli("scheduler", path, "--ns", ns, "--name", "twin", cwd=tmp_path)
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --name twin: a scheduler of that name is running (host "), line
    assert f"pid {first.pid}" in line, line
    other = processes.add(ManagedProcess(["scheduler", path, "--ns", ns, "--name", "other"]))
    other.wait_ready()
    # Its role is said once: the first leads, the other stands by for it.
    wait_for(lambda: "schedule s: standing by (leader twin)" in "\n".join(other.output), 10, what="role")
    assert "schedule s: leading (token 1)" in "\n".join(first.output), list(first.output)


def test_a_state_file_that_cannot_be_written_is_exit_2_before_any_tick(processes, tmp_path, monkeypatch):
    """Found out at the first tick, the tick was claimed and could not be run or recorded."""
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    path = schedules(tmp_path, "    every: 1s\n")
    (tmp_path / "a-file").write_text("")
    for state in ("/proc/x.json", str(tmp_path / "a-file" / "s.json")):
        result = run_cli("scheduler", path, "--ns", ns, "--name", "st", "--state", state, cwd=tmp_path)
        assert result.returncode == 2, result
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: --state {state}: cannot be written"), line
    assert not (tmp_path / "runs").exists()
