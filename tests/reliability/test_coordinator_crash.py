"""The coordinator dies again and again: SIGKILL ``submit`` at random points, ``--resume`` each time.

Whatever the moment of the kill (starting up, mid-stream, between two appends), the results file
stays valid JSON Lines (at most a torn last line, which ``--resume`` repairs), a task that was
recorded ``ok`` is never run again, and the last run leaves exactly one ``ok`` line per id.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TASKS_FILE, run_cli
from tests.netns import write_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = 2400
TASK_S = 0.02
"""Seconds each ``logged`` task sleeps: 8 slots run at most 400 tasks a second, whatever the coordinator's
speed, so the kills below (at most 1.6 s or 400 lines into a run) always leave work for the last run."""
KILLS = 4
SEED = 11


def file_state(path: Path) -> tuple[dict[str, str], bool]:
    """Status by id (last line wins) of a results file after a crash, and whether its last line is torn.

    Every complete line must be a JSON object: only the very last one may be cut short.
    """
    if not path.exists():
        return {}, False
    text = path.read_text()
    lines = text.split("\n")
    torn = lines.pop() != ""
    status: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        record = json.loads(line)  # a malformed complete line fails the test here
        assert isinstance(record, dict) and isinstance(record.get("id"), str), f"line {number}: {line[:80]}"
        status[record["id"]] = record["status"]
    return status, torn


def test_repeated_sigkill_and_resume_end_with_one_ok_line_per_id(tmp_path, nameserver, worker_factory):
    worker_factory(
        2, "--services", "compute", "--pool", "thread", "--concurrency", "4", "--tasks", TASKS_FILE
    )
    log = tmp_path / "executions.log"
    job = write_job(
        tmp_path / "crashy.yaml", "crashy", "logged", [[f"k{i}", str(log), TASK_S] for i in range(TASKS)]
    )
    out = tmp_path / "crashy.results.jsonl"
    rng = random.Random(SEED)
    kill_points: list[str] = []
    for round_ in range(KILLS):
        kept = {i for i, s in file_state(out)[0].items() if s == "ok"}
        runs_before = len(log.read_text().split()) if log.exists() else 0
        args = [sys.executable, "-m", "pyrocluster", "submit", str(job), "--ns", nameserver, "--quiet"]
        proc = subprocess.Popen(
            [*args, *(["--resume"] if round_ else [])],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if rng.random() < 0.5:  # a random moment, possibly before any result
                delay = rng.uniform(0.2, 1.6)
                time.sleep(delay)
                kill_points.append(f"{delay:.2f} s")
            else:  # after a random amount of progress
                target = len(kept) + rng.randint(50, 400)
                deadline = time.monotonic() + 30
                while (
                    len(file_state(out)[0]) < target and proc.poll() is None and time.monotonic() < deadline
                ):
                    time.sleep(0.005)
                kill_points.append(f"{target - len(kept)} lines")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        status, _torn = file_state(out)
        assert {i for i, s in status.items() if s == "ok"} >= kept, "an ok record was lost"
        time.sleep(0.3)  # calls already on the workers finish there (at-least-once): not ok in the file
        ran = log.read_text().split() if log.exists() else []  # none if killed before any task ran
        ran_again = {f"crashy-{key[1:]}" for key in ran[runs_before:]} & kept
        assert not ran_again, f"ok tasks ran again after --resume: {sorted(ran_again)[:5]}"

    before_last = {i for i, s in file_state(out)[0].items() if s == "ok"}
    assert len(before_last) < TASKS, "the job finished before the last kill: make it longer"
    result = run_cli("submit", str(job), "--ns", nameserver, "--resume", "--json", cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == TASKS, f"{len(records)} lines for {TASKS} tasks"
    assert {r["id"] for r in records} == {f"crashy-{i}" for i in range(TASKS)}
    assert all(r["status"] == "ok" for r in records)
    assert json.loads(result.stdout)["ok"] == TASKS
    runs = log.read_text().split()
    print(
        f"\ncoordinator-crash figures: {KILLS} SIGKILLs at {', '.join(kill_points)}; "
        f"{len(before_last)} of {TASKS} ok before the last run; "
        f"{len(runs) - TASKS} executions beyond one per task (calls in flight at a kill)"
    )
