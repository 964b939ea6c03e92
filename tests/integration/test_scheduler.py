"""Real schedulers on a real name server and worker: failover, overlap, a name-server restart, the example.

Every scheduler here runs in the test's temporary directory (``runs/`` goes there) and is a
separate ``pyrocluster scheduler`` process; leaders are SIGKILLed, not asked to stop.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import run_cli, wait_for

ROOT = Path(__file__).parents[2]
TICK_JOB = "name: tick\ntasks:\n  - {id: a, call: add, args: [40, 2]}\n  - {id: h, call: sha256, args: [x]}\n"


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def ticks_of(cwd: Path, schedule: str) -> list[dict]:
    path = cwd / "runs" / schedule / "ticks.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_schedules(cwd: Path, job: str, **fields: str) -> Path:
    (cwd / "job.yaml").write_text(job)
    extra = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    path = cwd / "schedules.yaml"
    path.write_text(f"schedules:\n  - name: s\n    job: job.yaml\n{extra}")
    return path


def start_scheduler(processes, ns: str, schedules: Path, name: str, *extra: str) -> ManagedProcess:
    proc = processes.add(ManagedProcess(["scheduler", str(schedules), "--ns", ns, "--name", name, *extra]))
    proc.wait_ready()
    return proc


def without_gaps(lines: list[dict], every_s: float) -> bool:
    """True when every tick between the first and the last line has a line (a fired tick's line is
    written when its run ends, so a run still under way leaves a gap for a while)."""
    ticks = sorted({seconds(line["tick"]) for line in lines})
    return ticks == [ticks[0] + every_s * k for k in range(round((ticks[-1] - ticks[0]) / every_s) + 1)]


def assert_each_tick_once(lines: list[dict], every_s: float) -> None:
    """Every tick between the first and the last appears exactly once, and no tick fired twice."""
    counts = Counter(line["tick"] for line in lines)
    assert all(n == 1 for n in counts.values()), [t for t, n in counts.items() if n > 1]
    report = "\n".join(json.dumps(x) for x in lines)
    assert without_gaps(lines, every_s), f"a tick of the window is missing from ticks.jsonl:\n{report}"


def runs_in_flight(cwd: Path) -> set[str]:
    """Ticks whose run started (its results file exists) but whose line is not written yet."""
    started = {p.name.split(".")[0] for p in (cwd / "runs" / "s").glob("*.results.jsonl")}
    return started - {x["tick"].replace("-", "").replace(":", "") for x in ticks_of(cwd, "s")}


def results_written_once(cwd: Path, lines: list[dict], tasks: int) -> None:
    for line in lines:
        if line["decision"] != "fired" or line["run_status"] != "ok":
            continue
        stamp = line["tick"].replace("-", "").replace(":", "")
        records = (cwd / "runs" / "s" / f"{stamp}.results.jsonl").read_text().splitlines()
        assert len(records) == tasks, f"results of {line['tick']} written more than once: {records}"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_two_schedulers_leader_killed_every_tick_fires_once(processes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    processes.add(start_worker(ns, ["--services", "compute", "--concurrency", "2"]))
    # overlap: allow, so that a run slowed down by a loaded machine is not a skipped tick here.
    # Ticks every second: the window below holds as many ticks as 40 s of a 2 s schedule.
    schedules = write_schedules(tmp_path, TICK_JOB, every="1s", misfire="once", catchup="1h", overlap="allow")
    a = start_scheduler(processes, ns, schedules, "a")
    wait_for(lambda: any(x["scheduler"] == "a" for x in ticks_of(tmp_path, "s")), 10, what="a fires")
    b = start_scheduler(processes, ns, schedules, "b")
    started = time.time()
    time.sleep(random.uniform(2, 6))  # the failure comes at a random moment of the schedule
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    killed = time.time()
    first_b = wait_for(
        lambda: [x for x in ticks_of(tmp_path, "s") if x["scheduler"] == "b" and x["decision"] == "fired"],
        15,
        what="the standby fires",
    )[0]
    assert seconds(first_b["decided_at"]) - killed <= 10, (
        f"standby fired {first_b} after the kill at {killed}"
    )
    a = start_scheduler(processes, ns, schedules, "a")  # back, as a standby now
    wait_for(lambda: time.time() - started >= 24, 30, interval_s=0.5, what="24 s of schedule")
    for proc in (a, b):
        proc.signal(signal.SIGTERM)
    assert b.proc.wait(timeout=30) == 0 and a.proc.wait(timeout=30) == 0

    lines = sorted(ticks_of(tmp_path, "s"), key=lambda x: x["tick"])  # fired lines come at run end
    report = "\n".join(json.dumps(x) for x in lines)
    assert_each_tick_once(lines, 1.0)
    assert {x["decision"] for x in lines} <= {"fired", "skipped-misfire"}, report
    assert sum(x["decision"] == "fired" for x in lines) >= 12, report
    results_written_once(tmp_path, lines, tasks=2)
    late = [
        x for x in lines if x["decision"] == "fired" and seconds(x["decided_at"]) - seconds(x["tick"]) > 10
    ]
    assert len(late) <= 1, report
    # misfire: once: the ticks nobody led through are skipped but the newest of them, which fires.
    missed = [x for x in lines if x["decision"] == "skipped-misfire"]
    if missed:
        after = [x for x in lines if x["tick"] > missed[-1]["tick"]][0]
        assert after["decision"] == "fired" and after["scheduler"] == "b", report
        assert seconds(after["tick"]) - seconds(missed[-1]["tick"]) == 1.0, report
    assert {x["run_status"] for x in lines if x["decision"] == "fired"} <= {"ok", "lost"}, report


@pytest.mark.slow
def test_overlap_skip_records_skipped_ticks_and_runs_never_overlap(processes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    worker_args = ["--services", "compute", "--pool", "thread", "--concurrency", "2", "--drain-timeout", "0"]
    processes.add(start_worker(ns, worker_args))
    job = "name: slow\ntasks:\n  - {id: nap, call: sleep, args: [2.5]}\n"
    schedules = write_schedules(tmp_path, job, every="1s", overlap="skip")
    sched = start_scheduler(processes, ns, schedules, "only")
    wait_for(lambda: sum(x["decision"] == "fired" for x in ticks_of(tmp_path, "s")) >= 2, 25, what="two runs")
    sched.signal(signal.SIGTERM)
    assert sched.proc.wait(timeout=30) == 0
    lines = ticks_of(tmp_path, "s")
    report = "\n".join(json.dumps(x) for x in lines)
    assert_each_tick_once(lines, 1.0)
    fired = [seconds(x["decided_at"]) for x in lines if x["decision"] == "fired"]
    # Each run takes 2.5 s, more than two ticks: the next one may start only after it.
    assert all(b - a >= 2.5 for a, b in zip(fired, fired[1:], strict=False)), report
    assert sum(x["decision"] == "skipped-overlap" for x in lines) >= 2, report


@pytest.mark.slow
def test_nameserver_restart_with_sqlite_storage_fires_no_tick_twice(processes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = ["--storage", str(tmp_path / "ns.sqlite")]
    ns_proc, ns = start_nameserver(storage)
    processes.add(ns_proc)
    port = int(ns.rsplit(":", 1)[1])
    processes.add(start_worker(ns, ["--services", "compute", "--heartbeat", "1"]))
    schedules = write_schedules(tmp_path, TICK_JOB, every="1s")
    first = start_scheduler(processes, ns, schedules, "a", "--state", str(tmp_path / "a.state.json"))
    wait_for(lambda: sum(x["decision"] == "fired" for x in ticks_of(tmp_path, "s")) >= 2, 15, what="ticks")
    # The name server and the scheduler both die; the new scheduler has no state file of its own
    # and, as on another host, no claims folder: what was decided before can only come back from
    # the name server's sqlite file.
    for proc in (ns_proc, first):
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait()
    shutil.rmtree(tmp_path / "runs" / "s" / "claims")
    processes.add(start_nameserver(storage, port=port)[0])
    before = len(ticks_of(tmp_path, "s"))
    start_scheduler(processes, ns, schedules, "b", "--state", str(tmp_path / "b.state.json"))
    wait_for(lambda: len(ticks_of(tmp_path, "s")) >= before + 4, 25, what="ticks after the restart")
    wait_for(lambda: not runs_in_flight(tmp_path), 15, what="the runs under way recorded")
    # A run that fired but has not made its results file yet is not seen above; its line comes
    # when it ends. A tick truly missing never fills its gap, and the assertion below fails.
    deadline = time.monotonic() + 15
    while not without_gaps(ticks_of(tmp_path, "s"), 1.0) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = ticks_of(tmp_path, "s")
    assert_each_tick_once(lines, 1.0)
    results_written_once(tmp_path, lines, tasks=2)
    # After the restart only b decides (a run of a's cut short by the kill is recorded lost, as a's).
    assert {x["scheduler"] for x in lines[before:] if x["run_status"] != "lost"} == {"b"}
    assert "skipped-misfire" in {x["decision"] for x in lines[before:]}  # the outage, by misfire: once


def test_example_schedules_fire_and_show_in_status(processes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    processes.add(start_worker(ns, ["--services", "compute", "--concurrency", "1"]))
    sched = start_scheduler(processes, ns, ROOT / "examples" / "schedules.yaml", "example")
    fired = wait_for(
        lambda: [x for x in ticks_of(tmp_path, "heartbeat") if x["decision"] == "fired"], 20, what="a tick"
    )
    assert fired[0]["run_status"] == "ok" and fired[0]["scheduler"] == "example", fired

    def schedules() -> dict:
        status = json.loads(run_cli("status", "--ns", ns, "--json").stdout)
        return {s["name"]: s for s in status["schedules"]}

    shown = wait_for(lambda: (s := schedules()) and s["heartbeat"]["last_status"] == "ok" and s, 10, 0.5)
    assert set(shown) == {"heartbeat", "nightly-report"}, shown
    assert shown["heartbeat"]["leader"] == "example" and shown["heartbeat"]["last_fire"] == fired[0]["tick"]
    nightly = shown["nightly-report"]
    assert nightly["next_fire"].endswith(("T01:00:00Z", "T02:00:00Z")), shown  # 03:00 Berlin
    assert nightly["timezone"] == "Europe/Berlin" and nightly["next_fire_local"][10:] in (
        "T03:00:00+01:00",
        "T03:00:00+02:00",
    ), nightly
    assert "timezone" not in shown["heartbeat"], shown  # every: no zone
    table = run_cli("status", "--ns", ns).stdout
    assert "Schedules (2)" in table and "heartbeat" in table and "03:00 Europe/Berlin" in table, table
    sched.signal(signal.SIGINT)
    assert sched.proc.wait(timeout=30) == 0
    output = "\n".join(sched.output)
    assert "stopped" in output
    # It says what it does: its part in each schedule, each tick's decision and each run's end.
    assert "schedule heartbeat: leading (token 1)" in output, output
    assert f"schedule heartbeat tick {fired[0]['tick']}: fired" in output, output
    assert f"schedule heartbeat tick {fired[0]['tick']}: run ended ok" in output, output
