"""The config file: its values, flag > environment > file > default, errors naming file, key, line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrocluster.local import ManagedProcess
from tests.conftest import run_cli

NO_ENV = {"PYROCLUSTER_NS": "", "PYROCLUSTER_CONFIG": ""}


def status_address(*args: str, env: dict[str, str] | None = None) -> str:
    """The name server address ``status --json`` tried (nothing listens on ports 1-3: exit 3)."""
    result = run_cli("status", "--json", *args, env={**NO_ENV, **(env or {})})
    assert result.returncode == 3, result
    return str(json.loads(result.stdout)["nameserver"]["address"])


def test_file_alone_then_env_over_file_then_flag_over_both(tmp_path):
    conf = tmp_path / "pyrocluster.toml"
    conf.write_text('ns = "127.0.0.1:1"\n')
    assert status_address("--config", str(conf)) == "127.0.0.1:1"
    assert status_address(env={"PYROCLUSTER_CONFIG": str(conf)}) == "127.0.0.1:1"
    assert status_address("--config", str(conf), env={"PYROCLUSTER_NS": "127.0.0.1:2"}) == "127.0.0.1:2"
    flagged = status_address(
        "--config", str(conf), "--ns", "127.0.0.1:3", env={"PYROCLUSTER_NS": "127.0.0.1:2"}
    )
    assert flagged == "127.0.0.1:3"


def test_secret_variable_beats_the_files_secret_file(tmp_path):
    conf = tmp_path / "pyrocluster.toml"
    conf.write_text(f'secret_file = "{tmp_path / "missing-secret"}"\n')
    result = run_cli("dashboard", "--print-token", "--config", str(conf), env=NO_ENV)
    assert result.returncode == 2 and "missing-secret" in result.stderr, result
    result = run_cli(
        "dashboard", "--print-token", "--config", str(conf), env={**NO_ENV, "PYROCLUSTER_SECRET": "s3cret"}
    )
    assert result.returncode == 0, result
    assert len(result.stdout.strip()) == 64


def test_worker_takes_its_table_and_a_flag_beats_it(tmp_path, nameserver, processes):
    conf = tmp_path / "pyrocluster.toml"
    conf.write_text(
        f'ns = "{nameserver}"\n\n[worker]\nname = "from-file"\nconcurrency = 3\npool = "thread"\n'
        'services = "compute"\n\n[submit]\nwait = 2.5\n'
    )
    first = processes.add(ManagedProcess(["worker", "--config", str(conf)], env=NO_ENV))
    line = first.wait_ready()
    assert "worker from-file ready" in line and "services compute " in line and "slots 3 " in line, line
    second = processes.add(
        ManagedProcess(
            ["worker", "--config", str(conf), "--name", "by-flag", "--concurrency", "2"], env=NO_ENV
        )
    )
    line = second.wait_ready()
    assert "worker by-flag ready" in line and "slots 2 pool thread" in line, line


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        (
            'ns = "127.0.0.1:1"\n\n[worker]\nconcurency = 4\n',
            4,
            "[worker] concurency",
            "did you mean concurrency",
        ),
        (
            '[worker]\nname = "a"\nconcurrency = "four"\n',
            3,
            "[worker] concurrency",
            "expected a whole number",
        ),
        ("[dashboard]\nport = 99999\n", 2, "[dashboard] port", "not in the range"),
        ('debug = "yes"\n', 1, "debug", "expected true or false"),
        ('host = "0.0.0.0"\n', 1, "host", "unknown key in the top level"),
        ('[workers]\nname = "a"\n', 1, "[workers]", "unknown table"),
        ('[worker]\ntasks = "x.py"\n', 2, "[worker] tasks", "expected a list"),
    ],
)
def test_unknown_key_or_wrong_type_is_exit_2_naming_file_key_and_line(tmp_path, text, line, key, problem):
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    for command in (["status"], ["worker"]):  # the whole file is checked, whichever command runs
        result = run_cli(*command, "--config", str(conf), env=NO_ENV)
        assert result.returncode == 2, result
        (message,) = result.stderr.splitlines()
        assert message.startswith(f"error: config file {conf}, line {line}: {key}: "), message
        assert problem in message, message


def test_unreadable_or_invalid_toml_is_exit_2(tmp_path):
    result = run_cli("status", "--config", str(tmp_path / "nope.toml"), env=NO_ENV)
    assert result.returncode == 2 and f"config file {tmp_path / 'nope.toml'}" in result.stderr, result
    bad = Path(tmp_path / "bad.toml")
    bad.write_text("ns = \n")
    result = run_cli("status", "--config", str(bad), env=NO_ENV)
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "line 1" in result.stderr, result
