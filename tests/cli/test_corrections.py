"""Command-line corrections: each behaviour, through the real command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
from click.testing import CliRunner

from pyrocluster.cli import main
from pyrocluster.local import ManagedProcess, start_nameserver
from tests.conftest import TASKS_FILE, run_cli, wait_for

EXAMPLES = Path(__file__).parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_status_json_watch_prints_one_json_object_per_line(nameserver):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "status", "--ns", nameserver, "--json", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    for line in lines:
        doc = json.loads(line)
        assert doc["nameserver"] == {"address": nameserver, "reachable": True} and doc["workers"] == []


def test_debug_works_before_and_after_the_subcommand():
    for args in (["--debug", "status"], ["status", "--debug"]):
        result = run_cli(*args, "--ns", "127.0.0.1:1")
        assert result.returncode == 3, result
        assert " DEBUG " in result.stderr and "error: cannot reach the name server" in result.stderr
    quiet = run_cli("status", "--ns", "127.0.0.1:1")
    assert " DEBUG " not in quiet.stderr
    runner = CliRunner()
    ctx = click.Context(main)
    for name in main.list_commands(ctx):  # commands load when asked for
        command = main.get_command(ctx, name)
        subcommands = getattr(command, "commands", None)  # a group (tls, token, schedule): each of its own
        for path in [[name, sub] for sub in subcommands] if subcommands else [[name]]:
            assert "--debug" in runner.invoke(main, [*path, "--help"]).output, path


def test_click_usage_errors_say_error_like_ours():
    for args in (["submit", "--bogus"], ["nosuchcommand"], ["worker", "--concurrency", "zero"]):
        result = run_cli(*args)
        assert result.returncode == 2, result
        assert result.stderr.splitlines()[-1].startswith("error: "), result.stderr
        assert "Error:" not in result.stderr and "Traceback" not in result.stderr
    assert run_cli("--help").returncode == 0 and run_cli("--version").returncode == 0
    bare = run_cli()
    assert bare.returncode == 0 and "Commands:" in bare.stdout and "error" not in bare.stderr, bare


def test_submit_with_both_ns_and_local_is_a_usage_error_but_pyrocluster_ns_in_the_environment_is_not(
    tmp_path,
):
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - call: add\n    args: [1, 2]\n")
    result = run_cli("submit", str(job), "--local", "1", "--ns", "127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        "error: --ns and --local: --local runs the job on a private cluster; choose one"
    )
    env = {"PYROCLUSTER_NS": "127.0.0.1:9"}  # set for other commands: --local still runs its own
    result = run_cli("submit", str(job), "--local", "1", "--dry-run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result


def test_submit_tasks_needs_local_and_an_existing_file_before_anything_starts(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - call: add\n    args: [1, 2]\n")
    result = run_cli("submit", str(job), "--tasks", TASKS_FILE, "--ns", "127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: --tasks needs --local"), result.stderr
    started = time.monotonic()
    result = run_cli("submit", str(job), "--local", "1", "--tasks", "./no/such/tasks.py", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.strip() == "error: --tasks ./no/such/tasks.py: no such file"
    assert time.monotonic() - started < 10 and not list(tmp_path.glob("*.jsonl"))


def test_nameserver_takes_its_default_port_from_pyrocluster_ns(processes):
    port = free_port()
    proc = processes.add(ManagedProcess(["nameserver"], env={"PYROCLUSTER_NS": f"127.0.0.1:{port}"}))
    assert proc.wait_ready().startswith(f"pyrocluster nameserver ready at 127.0.0.1:{port} ")


def test_worker_gives_up_after_wait_with_exit_3():
    result = run_cli("worker", "--ns", f"127.0.0.1:{free_port()}", "--wait", "0.5", "--services", "compute")
    assert result.returncode == 3, result
    assert "INFO pyrocluster.worker: waiting up to 0.5 s for the name server at 127.0.0.1:" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: cannot reach the name server")
    assert result.stderr.splitlines()[-1].endswith("(waited 0.5 s)")


def test_worker_started_before_its_nameserver_waits_for_it(processes):
    port = free_port()
    worker = processes.add(
        ManagedProcess(["worker", "--ns", f"127.0.0.1:{port}", "--services", "compute", "--pool", "thread"])
    )
    wait_for(lambda: any("waiting up to 30 s for the name server" in line for line in worker.output), 10,
             what="the worker saying it waits")  # fmt: skip
    ns_proc, _ = start_nameserver(port=port)
    processes.add(ns_proc)
    assert " ready at " in worker.wait_ready()


def test_worker_logs_failures_drain_and_reregistration_one_line_each(tmp_path, processes):
    port = free_port()
    ns_proc, ns = start_nameserver(port=port)
    worker = processes.add(
        ManagedProcess(
            ["worker", "--ns", ns, "--services", "compute", "--pool", "thread", "--heartbeat", "0.3"]
        )
    )
    worker.wait_ready()
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - id: broken\n    call: fail\n    args: [boom for the log]\n")
    assert run_cli("submit", str(job), "--ns", ns, "--quiet", cwd=tmp_path).returncode == 1
    ns_proc.stop()
    ns_proc, _ = start_nameserver(port=port)
    processes.add(ns_proc)
    wait_for(
        lambda: any("re-registered" in line for line in worker.output), 10, what="re-registration logged"
    )
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=15) == 0
    worker.stop()
    lines = list(worker.output)
    for needle in ("task fail failed after", "re-registered with the name server", "draining: finishing"):
        (line,) = [x for x in lines if needle in x]
        assert " INFO pyrocluster.worker: " in line, line
    assert any("RuntimeError: boom for the log" in x for x in lines if "task fail failed" in x)
    assert not any("Traceback" in x for x in lines)


def test_rerun_replaces_a_finished_file_and_refuses_an_unfinished_one(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--pool", "thread", "--concurrency", "2")
    job = tmp_path / "job.yaml"
    job.write_text("name: twice\ntasks:\n  - call: add\n    map: [[1, 2], [3, 4]]\n")
    out = tmp_path / "twice.results.jsonl"
    for _ in range(2):
        result = run_cli("submit", str(job), "--ns", nameserver, "--quiet", cwd=tmp_path)
        assert result.returncode == 0, result
        assert len(out.read_text().splitlines()) == 2
    unfinished = '{"id": "task-0-0", "status": "ok", "result": 3}\n'
    out.write_text(unfinished)
    (tmp_path / "twice.results.jsonl.run.json").write_text('{"job": "twice", "finished": false}')
    result = run_cli("submit", str(job), "--ns", nameserver, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "unfinished run of job 'twice'" in result.stderr and "--resume" in result.stderr
    assert "--overwrite" in result.stderr and out.read_text() == unfinished
    result = run_cli("submit", str(job), "--ns", nameserver, "--overwrite", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result
    other = tmp_path / "other.yaml"
    other.write_text("name: other\ntasks:\n  - call: add\n    args: [1, 1]\n")
    result = run_cli("submit", str(other), "--ns", nameserver, "--resume", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result
    assert "holds the results of job 'twice', not 'other'" in result.stderr
    assert len(out.read_text().splitlines()) == 2


def test_a_results_file_that_is_not_one_or_is_the_job_file_is_exit_2_and_kept(
    tmp_path, nameserver, worker_factory
):
    worker_factory(1, "--services", "compute", "--pool", "thread", "--concurrency", "1")
    job = tmp_path / "job.yaml"
    job.write_text("name: keep\ntasks:\n  - call: add\n    args: [1, 2]\n")
    notes = tmp_path / "notes.txt"
    notes.write_text('{"id": "a", "status": "ok"}\nnot a record at all\n{"id": "b"}\n')
    before = notes.read_text()
    result = run_cli("submit", str(job), "--ns", nameserver, "--resume", "--out", str(notes), cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"error: cannot resume from {notes}:2: not JSON"), result.stderr
    assert "unexpected" not in result.stderr and notes.read_text() == before
    job_text = job.read_text()
    for flags in ([], ["--overwrite"]):
        result = run_cli("submit", str(job), "--ns", nameserver, "--out", str(job), *flags, cwd=tmp_path)
        assert result.returncode == 2, result
        assert "is the job file itself" in result.stderr and job.read_text() == job_text


def test_a_results_file_that_cannot_be_written_is_exit_2_in_a_dry_run_too(
    tmp_path, nameserver, worker_factory
):
    worker_factory(1, "--services", "compute", "--pool", "thread", "--concurrency", "1")
    job = tmp_path / "job.yaml"
    job.write_text('name: out\noutput: "a\\0b.jsonl"\ntasks:\n  - call: add\n    args: [1, 2]\n')
    result = run_cli("submit", str(job), "--ns", nameserver, "--dry-run", cwd=tmp_path)
    assert result.returncode == 2 and "has a NUL character in its name" in result.stderr, result
    job.write_text("name: out\ntasks:\n  - call: add\n    args: [1, 2]\n")
    (tmp_path / "a-folder").mkdir()
    in_folder = tmp_path / "in-folder.yaml"
    in_folder.write_text("name: out\noutput: a-folder\ntasks:\n  - call: add\n    args: [1, 2]\n")
    result = run_cli("submit", str(in_folder), "--ns", nameserver, cwd=tmp_path)
    assert result.returncode == 2 and "a-folder is a directory" in result.stderr, result
    (tmp_path / "a-folder").rmdir()
    in_folder.unlink()
    for out in ("/proc/self/status", f"{job}/under-a-file.jsonl", "x" * 300 + ".jsonl"):
        for dry in (["--dry-run"], []):
            result = run_cli("submit", str(job), "--ns", nameserver, "--out", out, *dry, cwd=tmp_path)
            assert result.returncode == 2, result
            assert result.stderr.startswith("error: cannot "), result.stderr
            assert "the results file" in result.stderr and len(result.stderr.splitlines()) == 1
            assert "unexpected" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]  # a dry run made nothing


def test_quiet_hides_progress_but_not_the_failures(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--pool", "thread", "--concurrency", "1")
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - id: broken\n    call: fail\n    args: [quietly]\n")
    result = run_cli("submit", str(job), "--ns", nameserver, "--quiet", cwd=tmp_path)
    assert result.returncode == 1, result
    assert "Failed tasks" in result.stdout and "broken" in result.stdout
    assert "RuntimeError: quietly" in result.stdout and "wall time" not in result.stdout


def test_readme_first_command_works_twice_in_a_row(tmp_path):
    for _ in range(2):
        result = run_cli("submit", str(EXAMPLES / "demo.yaml"), "--local", "1", cwd=tmp_path, timeout=120)
        assert result.returncode == 1, result  # the demo fails one task on purpose
        assert "error:" not in result.stderr, result.stderr


def test_ready_line_and_status_show_the_tasks_a_worker_offers(nameserver, processes):
    args = ["--name", "cat", "--services", "compute", "--pool", "thread", "--tasks", TASKS_FILE]
    line = processes.add(ManagedProcess(["worker", "--ns", nameserver, *args])).wait_ready()
    offered = int(line.split(" tasks ")[1].split()[0])
    result = run_cli("status", "--ns", nameserver, "--json")
    (w,) = json.loads(result.stdout)["workers"]
    assert len(w["tasks"]) == offered and {"add", "fail", "interval", "unsendable"} <= set(w["tasks"])
    table = run_cli("status", "--ns", nameserver)
    (row,) = [x for x in table.stdout.splitlines() if " cat " in x and "compute" in x]
    assert f" {offered} " in row, table.stdout


def test_worker_logs_a_timeout_one_line(tmp_path, nameserver, processes):
    worker = processes.add(
        ManagedProcess(["worker", "--ns", nameserver, "--services", "compute", "--pool", "thread"])
    )
    worker.wait_ready()
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - id: nap\n    call: sleep\n    args: [3]\n    timeout: 0.3\n    retries: 0\n")
    result = run_cli("submit", str(job), "--ns", nameserver, "--quiet", cwd=tmp_path)
    assert result.returncode == 1, result
    lines = wait_for(lambda: [x for x in worker.output if "task sleep timed out" in x], 10, what="log")
    assert len(lines) == 1 and " INFO pyrocluster.worker: " in lines[0], lines
