"""Two real schedulers, every scheduler alive: a tick never runs twice and keeps one true line.

Each test starts two ``pyrocluster scheduler`` processes on one ``every: 2s`` schedule whose job
creates one side-effect file per run, then does one ordinary thing to the leader or the name
server: restarts a memory-storage name server right after fires, SIGSTOPs the leader for 6 s,
or SIGTERMs it in the middle of a long run. Afterwards every tick has exactly one line in
``ticks.jsonl``, with the run's real end, and the side-effect files count one run per fired tick.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from pyrocluster.local import start_nameserver, start_worker
from tests.conftest import TASKS_FILE, wait_for
from tests.integration.test_scheduler import (
    assert_each_tick_once,
    runs_in_flight,
    seconds,
    start_scheduler,
    ticks_of,
)


def write_job(cwd: Path, nap: float) -> None:
    """The job: one ``side_effect`` call of ``nap`` seconds into ``cwd/side`` (each run reads it anew)."""
    (cwd / "job.yaml").write_text(
        f"name: tick\ntasks:\n  - {{id: t, call: side_effect, args: [{str(cwd / 'side')!r}, {nap}]}}\n"
    )


def side_effect_job(cwd: Path, nap: float, **fields: str) -> Path:
    """A schedules file (``every: 2s``) whose job runs ``side_effect`` into ``cwd/side``."""
    (cwd / "side").mkdir()
    write_job(cwd, nap)
    extra = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    path = cwd / "schedules.yaml"
    path.write_text(f"schedules:\n  - name: s\n    job: job.yaml\n    every: 2s\n{extra}")
    return path


def runs(cwd: Path) -> list[tuple[float, float]]:
    """(start, end) of every run of the job's task, from its side-effect files."""
    return sorted(tuple(map(float, p.read_text().split())) for p in (cwd / "side").glob("*.run"))


def started_ticks(cwd: Path) -> set[str]:
    """Stamps of the ticks whose run started (its results file exists)."""
    return {p.name.split(".")[0] for p in (cwd / "runs" / "s").glob("*.results.jsonl")}


def recorded(cwd: Path) -> set[str]:
    return {x["tick"].replace("-", "").replace(":", "") for x in ticks_of(cwd, "s")}


def cluster(processes, tmp_path: Path) -> tuple[str, object]:
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    worker = ["--services", "compute", "--pool", "thread", "--concurrency", "8", "--heartbeat", "1"]
    processes.add(start_worker(ns, [*worker, "--tasks", TASKS_FILE, "--drain-timeout", "0"]))
    return ns, ns_proc


def leader_and_standby(processes, cwd: Path, nap: float, *extra: str, **fields: str):
    """A name server, a worker and two schedulers of a side-effect job: ``a`` leads (it has fired
    once), ``b`` stands by. Returns the name server's address and process, ``a`` and ``b``."""
    ns, ns_proc = cluster(processes, cwd)
    schedules = side_effect_job(cwd, nap, **fields)
    a = start_scheduler(processes, ns, schedules, "a", *extra)
    wait_for(lambda: started_ticks(cwd), 10, 0.02, what="a fires")
    return ns, ns_proc, a, start_scheduler(processes, ns, schedules, "b", *extra)


def stop_all(*scheds) -> None:
    for proc in scheds:
        proc.signal(signal.SIGTERM)
    for proc in scheds:
        assert proc.proc.wait(timeout=30) == 0


def assert_one_true_line_per_tick(cwd: Path) -> list[dict]:
    """One line per tick; each fired tick ran its job exactly once and its line says ``ok``."""
    lines = sorted(ticks_of(cwd, "s"), key=lambda x: x["tick"])
    report = "\n".join(json.dumps(x) for x in lines)
    assert_each_tick_once(lines, 2.0)
    fired = [x for x in lines if x["decision"] == "fired"]
    assert {x["run_status"] for x in fired} == {"ok"}, report
    assert len(runs(cwd)) == len(fired), f"{len(runs(cwd))} runs for {len(fired)} fired ticks\n{report}"
    assert started_ticks(cwd) == {x["tick"].replace("-", "").replace(":", "") for x in fired}, report
    return lines


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_memory_name_server_restarted_right_after_fires_runs_no_tick_twice(processes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns, ns_proc, a, b = leader_and_standby(processes, tmp_path, 0.2)
    port = int(ns.rsplit(":", 1)[1])
    for _ in range(3):
        seen = started_ticks(tmp_path)
        wait_for(lambda seen=seen: started_ticks(tmp_path) - seen, 10, 0.02, what="a fire")
        ns_proc.proc.send_signal(signal.SIGKILL)  # memory storage: claims, lease, watermark forgotten
        ns_proc.proc.wait()
        ns_proc = processes.add(start_nameserver(port=port)[0])
    count = len(started_ticks(tmp_path))
    wait_for(lambda: len(started_ticks(tmp_path)) > count, 15, what="a fire after the restarts")
    wait_for(lambda: not runs_in_flight(tmp_path), 10, what="runs recorded")
    stop_all(a, b)
    assert_one_true_line_per_tick(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_leader_stopped_6s_then_resumed_records_its_true_status_and_overlap_holds(
    processes, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _, _, a, b = leader_and_standby(processes, tmp_path, 8, overlap="skip")
    (paused,) = started_ticks(tmp_path)
    a.signal(signal.SIGSTOP)  # the leader stops in the middle of its 8 s run, for 6 s
    stopped = time.monotonic()
    write_job(tmp_path, 0.5)  # the runs after it are short: stopping waits for the one under way
    try:
        wait_for(lambda: any(x["scheduler"] == "b" for x in ticks_of(tmp_path, "s")), 10, what="b decides")
        wait_for(lambda: time.monotonic() - stopped >= 6, 7, what="6 s of pause")
    finally:
        a.signal(signal.SIGCONT)
    wait_for(lambda: paused in recorded(tmp_path), 15, what="the paused run's end recorded")
    wait_for(lambda: len(started_ticks(tmp_path)) >= 2, 15, what="the next run after it")
    stop_all(a, b)
    lines = assert_one_true_line_per_tick(tmp_path)
    report = "\n".join(json.dumps(x) for x in lines)
    first = next(x for x in lines if x["tick"].replace("-", "").replace(":", "") == paused)
    assert (first["scheduler"], first["run_status"]) == ("a", "ok"), report
    spans = runs(tmp_path)
    assert all(nxt[0] >= prev[1] for prev, nxt in zip(spans, spans[1:], strict=False)), (
        f"runs overlapped: {spans}"
    )
    assert any(x["scheduler"] == "b" and x["decision"] == "skipped-overlap" for x in lines), report


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_draining_leader_hands_over_at_once_and_the_standby_fires_within_10s(
    processes, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # misfire: skip drops every tick nobody leads through: a handover must leave none.
    _, _, a, b = leader_and_standby(
        processes, tmp_path, 3, "--drain-timeout", "60", overlap="allow", misfire="skip"
    )
    seen = started_ticks(tmp_path)
    wait_for(lambda: started_ticks(tmp_path) - seen, 10, 0.02, what="a fires again")
    a.signal(signal.SIGTERM)  # in the middle of its runs of 3 s
    termed = time.time()
    draining = started_ticks(tmp_path)
    write_job(tmp_path, 0.5)  # the standby's runs are short: stopping it waits for the one under way
    first_b = wait_for(
        lambda: [x for x in ticks_of(tmp_path, "s") if x["scheduler"] == "b" and x["decision"] == "fired"],
        12,
        what="the standby fires",
    )[0]
    assert seconds(first_b["decided_at"]) - termed <= 10, (first_b, termed)
    stop_all(b)  # b drains its own runs too
    assert a.proc.wait(timeout=30) == 0  # its runs ended within the drain
    lines = assert_one_true_line_per_tick(tmp_path)
    report = "\n".join(json.dumps(x) for x in lines)
    assert not any(x["decision"] == "skipped-misfire" for x in lines), report
    mine = [x for x in lines if x["tick"].replace("-", "").replace(":", "") in draining]
    assert {(x["scheduler"], x["run_status"]) for x in mine} == {("a", "ok")}, report
    assert all(x["scheduler"] == "a" for x in lines if x["decided_at"] < first_b["decided_at"]), report
