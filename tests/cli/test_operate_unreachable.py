"""``pyrocluster drain|undrain`` of a worker that is registered but does not answer: exit 3 with
one line naming the worker (SPEC: 3 for an unreachable cluster), not "unexpected", exit 1."""

from __future__ import annotations

import signal

import pytest

from pyrocluster.local import start_worker
from tests.conftest import Processes, run_cli


@pytest.mark.timeout(90)
@pytest.mark.parametrize("verb", ["drain", "undrain"])
def test_an_action_on_a_worker_that_does_not_answer_is_exit_3_naming_it(
    verb: str, processes: Processes, nameserver: str
) -> None:
    worker = processes.add(start_worker(nameserver, ["--name", "frozen-w", "--concurrency", "1"]))
    worker.signal(signal.SIGSTOP)
    try:
        result = run_cli(verb, "frozen-w", "--ns", nameserver, timeout=60)
    finally:
        worker.signal(signal.SIGCONT)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "frozen-w" in lines[0] and "did not answer" in lines[0] and "unexpected" not in lines[0], lines


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["a b", "a@b", "tab\there", "x" * 201])
def test_a_worker_name_that_cannot_be_part_of_a_uri_is_exit_2(name: str, nameserver: str) -> None:
    result = run_cli("worker", "--ns", nameserver, "--name", name, "--pool", "thread", timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result
    assert len(lines) == 1 and lines[0].startswith("error: --name"), result.stderr
