"""Several jobs on one cluster (SPEC 5.6): slots never oversubscribed, fair shares,
priority across coordinators. Real name server, workers and `submit` processes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from pyrocluster import Cluster
from tests.conftest import TASKS_FILE, run_cli, start_submit, wait_for


def interval_job(tmp_path: Path, name: str, n: int, seconds: float, priority: int = 0) -> Path:
    job = tmp_path / f"{name}.yaml"
    items = ", ".join([str(seconds)] * n)
    job.write_text(
        f"name: {name}\ndefaults:\n  priority: {priority}\n"
        f"tasks:\n  - id: t\n    call: interval\n    map: [{items}]\n"
    )
    return job


def results(tmp_path: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / f"{name}.results.jsonl").read_text().splitlines()]


def test_two_jobs_share_the_workers_fairly_and_never_oversubscribe(tmp_path, nameserver, worker_factory):
    worker_factory(2, "--services", "compute", "--concurrency", "2", "--tasks", TASKS_FILE)
    samples: list[tuple[int, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            done = run_cli("status", "--ns", nameserver, "--json")
            if done.returncode == 0:
                samples.extend((w["busy"], w["slots"]) for w in json.loads(done.stdout)["workers"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    procs = [start_submit(interval_job(tmp_path, n, 80, 0.1), nameserver, tmp_path, "--quiet") for n in "ab"]
    try:
        codes = [p.wait(timeout=90) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.communicate()
        sampling.set()
        sampler.join(timeout=10)
    wall = time.monotonic() - started
    assert codes == [0, 0]
    a, b = results(tmp_path, "a"), results(tmp_path, "b")
    assert all(r["status"] == "ok" for r in a + b)
    assert samples and all(busy <= slots for busy, slots in samples), samples
    ends = {"a": sorted(r["result"][2] for r in a), "b": sorted(r["result"][2] for r in b)}
    both_from = max(min(r["result"][1] for r in a), min(r["result"][1] for r in b))
    both_to = min(ends["a"][-1], ends["b"][-1])
    counts = {k: sum(both_from <= t <= both_to for t in v) for k, v in ends.items()}
    share = counts["a"] / max(1, counts["a"] + counts["b"])
    assert 0.35 <= share <= 0.65, counts
    ideal = 160 * 0.1 / 4
    run_s = max(ends["a"][-1], ends["b"][-1]) - min(r["result"][1] for r in a + b)
    assert run_s <= 1.5 * ideal + 1.0, (run_s, wall)


@pytest.mark.slow
def test_a_high_priority_task_from_another_job_starts_at_the_next_free_slot(
    tmp_path, nameserver, worker_factory
):
    # One worker, two slots: which slot frees first is then the worker's business, not a guess.
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--tasks", TASKS_FILE)
    first = start_submit(interval_job(tmp_path, "bulk", 30, 0.5), nameserver, tmp_path, "--quiet")
    try:
        with Cluster(nameserver) as second:
            wait_for(lambda: (tmp_path / "bulk.results.jsonl").exists() and results(tmp_path, "bulk"), 30)
            urgent = second.options(priority=10)
            urgent.submit("interval", 0.0).result(timeout=30)  # connected: the next call goes at once
            submitted = time.time()
            urgent_start = urgent.submit("interval", 0.1).result(timeout=30)[1]
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
        first.communicate()
    # Waiting tasks: those not already on their way when the urgent one was submitted (one the
    # worker's gate held may start as the urgent call is still on its way: 0.15 s under load).
    waiting = [r["result"][1] for r in results(tmp_path, "bulk") if r["result"][1] > submitted + 0.15]
    assert waiting, "the first job had no waiting task left"
    assert urgent_start <= min(waiting) + 0.05, (urgent_start - submitted, sorted(waiting)[:3])
    assert urgent_start - submitted <= 0.5 + 0.5, "not at the next free slot"


@pytest.mark.timeout(120)
def test_a_new_job_of_a_higher_priority_takes_every_slot_that_frees_from_its_first_task(
    tmp_path, nameserver, worker_factory
):
    """Its coordinator learns at once that other jobs hold the worker, so it queues its calls there
    from the start: no round of the other jobs' tasks runs between its own (it lost one when it
    sent only a slot's worth until its first reply)."""
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--tasks", TASKS_FILE)
    bulk = [start_submit(interval_job(tmp_path, n, 16, 0.4), nameserver, tmp_path, "--quiet") for n in "ab"]
    try:
        wait_for(lambda: all((tmp_path / f"{n}.results.jsonl").exists() for n in "ab"), 30)
        job = interval_job(tmp_path, "d", 8, 0.4, priority=5)
        urgent = run_cli("submit", str(job), "--ns", nameserver, cwd=tmp_path)
        assert urgent.returncode == 0, urgent
        assert [p.wait(timeout=60) for p in bulk] == [0, 0]
    finally:
        for p in bulk:
            p.kill()
            p.communicate()
    d_starts = sorted(r["result"][1] for r in results(tmp_path, "d"))
    # Bulk tasks that started while urgent ones waited (after the first urgent one was under way,
    # allowing a bulk task already on its way then), before the last urgent one started.
    between = [
        r["result"][1]
        for n in "ab"
        for r in results(tmp_path, n)
        if d_starts[0] + 0.2 < r["result"][1] < d_starts[-1] - 0.05
    ]
    assert not between, (d_starts, sorted(between))
