"""Exit codes and output of nameserver, worker and status."""

from __future__ import annotations

import json
import signal
import socket

import pytest

from pyrocluster.local import ManagedProcess
from tests.conftest import run_cli


def free_port_in_use() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_nameserver_ready_line_and_clean_exit_on_sigterm_and_sigint():
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = ManagedProcess(["nameserver", "--port", "0"])
        line = proc.wait_ready()
        assert line.startswith("pyrocluster nameserver ready at 127.0.0.1:"), line
        proc.signal(sig)
        assert proc.proc.wait(timeout=10) == 0
        proc.stop()


def test_nameserver_port_in_use_is_exit_2():
    sock, port = free_port_in_use()
    with sock:
        result = run_cli("nameserver", "--port", str(port))
    assert result.returncode == 2, result
    assert result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: the port is already in use"
    assert "Traceback" not in result.stderr


def test_nameserver_sqlite_storage_keeps_registrations(tmp_path, processes):
    db = tmp_path / "ns.sqlite"
    proc = processes.add(ManagedProcess(["nameserver", "--port", "0", "--storage", str(db)]))
    proc.wait_ready()
    assert db.exists()


def test_non_loopback_without_secret_is_refused():
    for command in (["nameserver", "--port", "0"], ["worker", "--ns", "127.0.0.1:1"]):
        result = run_cli(*command, "--host", "0.0.0.0")
        assert result.returncode == 2, result
        assert "without a cluster secret" in result.stderr and "--insecure" in result.stderr


def test_status_unreachable_is_exit_3():
    sock, port = free_port_in_use()
    sock.close()  # nothing listens there now
    result = run_cli("status", "--ns", f"127.0.0.1:{port}")
    assert result.returncode == 3, result
    assert result.stderr.startswith(f"error: cannot reach the name server at 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
    result = run_cli("status", "--ns", f"127.0.0.1:{port}", "--json")
    assert result.returncode == 3
    shown = json.loads(result.stdout)["nameserver"]
    assert {k: shown[k] for k in ("address", "reachable")} == {
        "address": f"127.0.0.1:{port}",
        "reachable": False,
    }
    assert shown["error"] == result.stderr.strip().removeprefix("error: "), (shown, result.stderr)


def test_worker_unreachable_nameserver_is_exit_3():
    sock, port = free_port_in_use()
    sock.close()
    result = run_cli("worker", "--ns", f"127.0.0.1:{port}", "--wait", "0.5", "--services", "compute")
    assert result.returncode == 3, result
    assert "cannot reach the name server" in result.stderr


def test_worker_bad_arguments_are_exit_2(nameserver):
    result = run_cli("worker", "--ns", nameserver, "--services", "compute,paint")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --services: unknown service 'paint' (choose from compute, crawl)"
    result = run_cli("worker", "--ns", nameserver, "--tasks", "./no/such/tasks.py")
    assert result.returncode == 2
    # one line: the slot processes, started early, load the same file and leave the telling to it
    assert result.stderr.strip() == "error: --tasks ./no/such/tasks.py: no such file", result.stderr
    result = run_cli("worker", "--ns", "not-an-address:port")
    assert result.returncode == 2
    assert "port that is not a number" in result.stderr


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("def half(:\n", "SyntaxError: invalid syntax (broken_tasks.py, line 1)"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ],
)
def test_a_tasks_module_that_does_not_import_is_one_line_and_exit_2(nameserver, tmp_path, source, why):
    broken = tmp_path / "broken_tasks.py"
    broken.write_text(source)
    result = run_cli("worker", "--ns", nameserver, "--tasks", str(broken), "--concurrency", "2")
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: --tasks {broken}: cannot import: {why}"], result.stderr


def test_status_json_lists_workers_with_spec_fields(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--name", "w1", "--tags", "x,y", "--concurrency", "3")
    result = run_cli("status", "--ns", nameserver, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["nameserver"] == {"address": nameserver, "reachable": True}
    assert data["jobs"] == []
    (w,) = data["workers"]
    for key in (
        "name",
        "address",
        "services",
        "tags",
        "state",
        "slots",
        "busy",
        "done",
        "failed",
        "mean_ms",
        "uptime_s",
        "cpu_percent",
        "rss_mb",
    ):
        assert key in w, key
    assert (w["name"], w["services"], w["tags"], w["state"], w["slots"]) == (
        "w1",
        ["compute"],
        ["x", "y"],
        "ready",
        3,
    )
    table = run_cli("status", "--ns", nameserver)
    assert table.returncode == 0
    assert "w1" in table.stdout and "ready" in table.stdout


def test_help_names_environment_variables():
    result = run_cli("worker", "--help")
    assert result.returncode == 0
    assert "PYROCLUSTER_NS" in result.stdout and "PYROCLUSTER_SECRET" in result.stdout
