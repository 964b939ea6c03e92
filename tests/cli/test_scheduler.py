"""``pyrocluster scheduler`` on bad input: one error line with the file and key path, exit 2 or 3."""

from __future__ import annotations

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
        (
            "    every: 1m\n    timezone: Europe/Nowhere\n",
            JOB,
            "schedules[0].timezone (line 5): unknown time zone",
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
    processes.add(start_worker(ns, ["--services", "compute", "--pool", "thread", "--concurrency", "4"]))
    results = {}
    for name, nap, drain in (("finish", 2, "30"), ("cancel", 30, "1")):
        cwd = tmp_path / name
        cwd.mkdir()
        job = f"name: nap\ntasks:\n  - {{call: sleep, args: [{nap}]}}\n"
        path = schedules(cwd, "    every: 2s\n", job, name)
        args = ["scheduler", path, "--ns", ns, "--name", name, "--drain-timeout", drain]
        monkeypatch.chdir(cwd)  # the scheduler writes runs/ in its current directory
        proc = processes.add(ManagedProcess(args))
        proc.wait_ready()
        results[name] = (proc, cwd)
    for _, cwd in results.values():
        wait_for(lambda cwd=cwd: (cwd / "runs" / cwd.name).is_dir(), 10, what="a tick fires")
    for proc, _ in results.values():
        proc.signal(signal.SIGTERM)
    stopped = time.monotonic()
    for name, (proc, cwd) in results.items():
        assert proc.proc.wait(timeout=30) == 0, name
        lines = ticks_of(cwd, name)
        fired = [x for x in lines if x["decision"] == "fired"]
        # The run under way at SIGTERM is recorded with how it ended; others were skipped-overlap.
        assert fired and fired[-1]["run_status"] == ("ok" if name == "finish" else "cancelled"), lines
        assert all(x["decision"] in ("fired", "skipped-overlap") for x in lines), lines
    assert time.monotonic() - stopped < 10  # the 30 s nap was cancelled after 1 s, not waited for
