"""Ordinary mistakes and habits at the command line, each answered plainly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pyrocluster import Cluster
from tests.conftest import run_cli

ROOT = Path(__file__).parents[2]


def ignore_sigint() -> None:
    """What a shell without job control does to a command it starts in the background (``&``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("inherited", [None, ignore_sigint], ids=["foreground", "background"])
def test_ctrl_c_ends_status_watch_quietly(nameserver, inherited):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "status", "--watch", "0.2", "--json", "--ns", nameserver],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=inherited,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # one JSON document per refresh
        assert first.startswith("{"), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.communicate()  # closes the pipes: left open, their ResourceWarning fails the next test
    assert proc.returncode == 0 and err == "", err


def test_gitignore_covers_what_the_first_command_leaves(tmp_path):
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "*.results.jsonl" in ignored and "*.run.json" in ignored


def test_an_output_in_a_folder_that_does_not_exist_yet_is_created(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1")
    job = tmp_path / "j.yaml"
    job.write_text("name: j\noutput: runs/today/j.jsonl\ntasks:\n  - {id: a, call: add, args: [1, 2]}\n")
    result = run_cli("submit", str(job), "--ns", nameserver, "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    assert '"result":3' in (tmp_path / "runs" / "today" / "j.jsonl").read_text()
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = run_cli("submit", str(job), "--ns", nameserver, "--out", str(blocked / "x.jsonl"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: cannot create the folder"), result


def test_tasks_named_as_a_module_in_the_current_directory_are_found(tmp_path, nameserver):
    (tmp_path / "shoptasks.py").write_text(
        "from pyrocluster import task\n\n@task\ndef price(n: int) -> int:\n    return n * 3\n"
    )
    script = Path(sys.executable).parent / "pyrocluster"  # the console script: no cwd on sys.path
    args = [str(script), "worker", "--ns", nameserver, "--services", "compute", "--tasks", "shoptasks"]
    worker = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert " ready " in line, line + worker.stdout.read()
        with Cluster(nameserver, wait=20) as cluster:
            assert cluster.submit("price", 14).result(timeout=30) == 42
    finally:
        worker.terminate()
        worker.communicate(timeout=30)


def test_a_job_file_with_four_mistakes_gets_four_error_lines_at_once(tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text(
        "name: bad\ntasks:\n  - {id: a, cal: add, tags: 3}\n  - {id: b, call: add, retries: x}\nbogus: 1\n"
    )
    result = run_cli("submit", str(job), "--ns", "127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith(f"error: {job}: ") for line in lines), result.stderr
    for expected in ("tasks[0].call (line 3)", "tasks[0].cal (line 3)", "tasks[0].tags (line 3)",
                     "tasks[1].retries (line 4)", "bogus (line 5)"):  # fmt: skip
        assert any(expected in line for line in lines), (expected, result.stderr)


def test_a_tab_indented_line_is_named_as_such(tmp_path):
    job = tmp_path / "tabs.yaml"
    job.write_text("name: tabs\ntasks:\n\t- {id: a, call: add, args: [1, 2]}\n")
    result = run_cli("submit", str(job), "--ns", "127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        f"error: {job}: line 3, column 1: a tab indents this line: YAML indents with spaces"
    ), result.stderr


def test_dry_run_checks_the_file_and_the_workers_and_runs_nothing(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1")
    job = tmp_path / "j.yaml"
    job.write_text(
        "name: j\ntasks:\n  - {id: a, call: sha256, args: [x]}\n"
        "  - {id: m, call: add, map: [[1, 2], [3, 4]]}\n"
    )
    result = run_cli("submit", str(job), "--ns", nameserver, "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout.strip().startswith("job j is valid: 3 task(s)"), result.stdout
    assert not (tmp_path / "j.results.jsonl").exists()
    status = json.loads(run_cli("status", "--ns", nameserver, "--json").stdout)
    assert status["workers"][0]["done"] == 0 and status["jobs"] == []  # nothing ran
    job.write_text(
        "name: j\ntasks:\n  - {id: a, call: sha265, args: [x]}\n  - {id: b, call: ad, args: [1, 2]}\n"
    )
    typo = run_cli("submit", str(job), "--ns", nameserver, "--dry-run", cwd=tmp_path)
    assert typo.returncode == 2, typo
    lines = typo.stderr.strip().splitlines()
    assert len(lines) == 2 and "did you mean 'sha256'" in lines[0] and "did you mean 'add'" in lines[1], typo


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PYROCLUSTER_REPLY_SPIN_US", "fast", "whole number of microseconds from 0 to 10000"),
        ("PYROCLUSTER_REPLY_SPIN_US", "20000", "whole number of microseconds from 0 to 10000"),
        ("PYROCLUSTER_MAX_MESSAGE_MB", "0", "whole number from 1 to 4096"),
    ],
)
def test_a_bad_setting_in_the_environment_is_one_line_naming_it_and_exit_2(variable, value, problem):
    result = run_cli("status", "--ns", "127.0.0.1:1", env={variable: value})
    assert result.returncode == 2, result
    (message,) = result.stderr.splitlines()
    assert message.startswith(f"error: {variable}={value!r}: ") and problem in message, message
