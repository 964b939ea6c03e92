"""Start-up that does less: the CLI imports a command's libraries only for that command, and
``submit --local`` starts its processes while it checks the job, still refusing a bad one."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

from pyrocluster.local import PARENT_ENV
from tests.conftest import run_cli

HEAVY = ("Pyro5", "rich", "pydantic", "yaml", "httpx", "pyrocluster.config", "pyrocluster.coordinator")


def test_importing_the_cli_loads_no_command_libraries() -> None:
    code = f"import json, sys, pyrocluster.cli; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_help_lists_every_command_and_each_one_loads() -> None:
    listed = run_cli("--help")
    assert listed.returncode == 0, listed
    commands = [
        "cancel",
        "dashboard",
        "forget",
        "nameserver",
        "results",
        "scheduler",
        "status",
        "submit",
        "tls",
    ]
    for name in [*commands, "worker"]:
        assert f"  {name} " in listed.stdout, listed.stdout
        help_text = run_cli(name, "-h")
        assert help_text.returncode == 0 and "Usage:" in help_text.stdout, help_text
    unknown = run_cli("bogus")
    assert unknown.returncode == 2 and "error: No such command 'bogus'" in unknown.stderr


def leftovers(parent_pid: int) -> list[int]:
    """Processes started for ``parent_pid`` (they carry its pid in their environment) still alive."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(PARENT_ENV) == str(parent_pid):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_submit_local_still_refuses_a_bad_job_and_stops_what_it_started(tmp_path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - call: add\n    args: [1, 2]\n    retires: 3\n")
    cmd = [sys.executable, "-m", "pyrocluster", "submit", str(job), "--local", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    # right after exit: the parent-watch of an orphan takes a second, so anything found was left behind
    assert leftovers(proc.pid) == []
    assert proc.returncode == 2, err
    assert "error:" in err and "tasks[0]" in err and "retires" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "job.results.jsonl").exists()
