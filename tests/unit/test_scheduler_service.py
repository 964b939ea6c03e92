"""The scheduler's loop on Pyro5's own NameServer object with injected clocks: takeover, lost runs, restarts.

No sockets and no sleeping: each scheduler's rounds are driven by the test, its clocks are
moved by hand, and tick jobs are plain functions.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from Pyro5.nameserver import NameServer

from pyrocluster.config import Settings
from pyrocluster.errors import ClusterUnreachable, ConfigError
from pyrocluster.scheduler import store
from pyrocluster.scheduler.service import Scheduler
from pyrocluster.scheduler.spec import load_schedules
from pyrocluster.scheduler.state import SchedulerOptions

START = datetime(2026, 12, 1, 3, 0, 0, 500000, tzinfo=timezone.utc)


class Clocks:
    """A wall clock and a monotonic clock that move only when told."""

    def __init__(self) -> None:
        self.now = START
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


class Jobs:
    """Tick jobs that end when the test says so; remembers every start."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()
        self.running = threading.Event()

    def __call__(self, settings, options, cancel) -> str:
        self.started.append(Path(options.out).name)
        self.running.set()
        self.release.wait(10)
        return "ok"


@pytest.fixture
def schedules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text("name: j\ntasks:\n  - {call: add, args: [1, 2]}\n")
    (tmp_path / "s.yaml").write_text(
        "schedules:\n  - {name: s, job: job.yaml, every: 2s, misfire: once, overlap: allow}\n"
    )
    return load_schedules(tmp_path / "s.yaml")


class Alive:
    """Which schedulers' processes live (all schedulers of a test share this process)."""

    def __init__(self) -> None:
        self.dead: set[int] = set()

    def __call__(self, pid: int, started: float) -> bool:
        return pid not in self.dead


class Switch:
    """A name server that can be restarted (replaced by an empty one) under running schedulers."""

    def __init__(self) -> None:
        self.ns = NameServer()

    def __getattr__(self, name: str):
        return getattr(self.ns, name)


def scheduler(ns, schedules, name: str, clocks: Clocks, jobs: Jobs, state: str, alive=None) -> Scheduler:
    options = SchedulerOptions("s.yaml", name=name, state_path=state)
    s = Scheduler(
        Settings.from_sources(ns="127.0.0.1:9"),
        schedules,
        options,
        wall=lambda: clocks.now,
        clock=lambda: clocks.mono,
        connect=lambda: ns,
        run_job=jobs,
        alive=alive or Alive(),
    )
    s.start()
    return s


def settle(*schedulers: Scheduler) -> None:
    """Let the finished runs of each scheduler be recorded."""
    for s in schedulers:
        for st in s.states:
            for thread in list(st.running.values()):
                thread.join(10)
        s.run_round()


def lines() -> list[dict]:
    return [json.loads(x) for x in Path("runs/s/ticks.jsonl").read_text().splitlines()]


def test_standby_takes_over_records_the_lost_run_and_applies_misfire_once(schedules):
    ns, jobs, alive = NameServer(), Jobs(), Alive()
    ca, cb = Clocks(), Clocks()
    a = scheduler(ns, schedules, "a", ca, jobs, "a.json", alive)
    a.process = replace(a.process, pid=1001)  # its claims name this pid: the test says when it dies
    b = scheduler(ns, schedules, "b", cb, jobs, "b.json", alive)
    a.run_round()
    b.run_round()
    assert a.states[0].lease.leading and not b.states[0].lease.leading
    for clocks in (ca, cb):
        clocks.advance(1.5)  # 03:00:02, a tick
    a.run_round()  # fires 03:00:02, whose job now runs ... and a dies (no more rounds)
    assert jobs.running.wait(10)
    assert jobs.started == ["20261201T030002Z.results.jsonl"]
    alive.dead.add(1001)
    for _ in range(4):  # b sees a's last beat at :03, then nothing changes for 4 s
        cb.advance(1)
        b.run_round()
        assert not b.states[0].lease.leading
    cb.advance(1)  # 03:00:07: b takes over
    b.run_round()
    assert b.states[0].lease.leading
    jobs.release.set()
    settle(b)
    decided = {x["tick"]: (x["decision"], x["scheduler"], x["run_status"]) for x in lines()}
    assert decided["2026-12-01T03:00:02Z"] == ("fired", "a", "lost")
    # 03:00:04 and :06 fell while nobody led: misfire once fires the newest only.
    assert decided["2026-12-01T03:00:04Z"] == ("skipped-misfire", "b", None)
    assert decided["2026-12-01T03:00:06Z"] == ("fired", "b", "ok")
    assert len(lines()) == len(decided), "a tick recorded twice"
    # a, waking up, steps down and never decides again what b decided.
    ca.advance(40)
    a.run_round()
    settle(a)
    assert not a.states[0].lease.leading
    assert len(lines()) == len({x["tick"] for x in lines()})


def test_restart_against_a_name_server_that_forgot_everything_fires_nothing_twice(schedules):
    jobs, clocks = Jobs(), Clocks()
    jobs.release.set()
    first = scheduler(NameServer(), schedules, "a", clocks, jobs, "state.json")
    first.run_round()
    for _ in range(3):
        clocks.advance(2)
        first.run_round()
        settle(first)
    assert len(jobs.started) == 3
    # The scheduler and a memory-storage name server both restart: the claims folder remembers.
    clocks.advance(1)
    again = scheduler(NameServer(), schedules, "a", clocks, jobs, "state.json")
    again.run_round()
    assert not again.states[0].lease.leading  # someone led before: a lease that vanished is waited for
    clocks.advance(4)
    again.run_round()
    settle(again)
    ticks = [x["tick"] for x in lines()]
    assert len(ticks) == len(set(ticks)), ticks
    assert [x["decision"] for x in lines()[3:]] == ["skipped-misfire", "fired"], lines()
    assert len(jobs.started) == 4


def test_overlap_queue_runs_the_waiting_tick_when_the_run_ends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text("name: j\ntasks:\n  - {call: add, args: [1, 2]}\n")
    (tmp_path / "q.yaml").write_text("schedules:\n  - {name: s, job: job.yaml, every: 2s, overlap: queue}\n")
    jobs, clocks = Jobs(), Clocks()
    sched = scheduler(NameServer(), load_schedules(tmp_path / "q.yaml"), "a", clocks, jobs, "state.json")
    sched.run_round()
    clocks.advance(1.5)  # 03:00:02 fires; its run goes on
    sched.run_round()
    assert jobs.running.wait(10)
    for _ in range(2):  # 03:00:04 and :06 wait for it
        clocks.advance(2)
        sched.run_round()
    assert sched.states[0].queued and len(jobs.started) == 1
    jobs.release.set()
    for _ in range(3):  # each run ends, the next queued one starts: one at a time, in order
        settle(sched)
    assert jobs.started == [f"20261201T03000{s}Z.results.jsonl" for s in (2, 4, 6)]
    assert [(x["tick"][-3:-1], x["decision"]) for x in lines()] == [
        ("02", "fired"),
        ("04", "fired"),
        ("06", "fired"),
    ]


def two_schedulers(tmp_path, monkeypatch, ns, body: str, jobs: Jobs):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text("name: j\ntasks:\n  - {call: add, args: [1, 2]}\n")
    (tmp_path / "s.yaml").write_text(f"schedules:\n  - {{name: s, job: job.yaml, every: 2s, {body}}}\n")
    schedules = load_schedules(tmp_path / "s.yaml")
    ca, cb = Clocks(), Clocks()
    a = scheduler(ns, schedules, "a", ca, jobs, "a.json")
    b = scheduler(ns, schedules, "b", cb, jobs, "b.json")
    a.run_round()
    b.run_round()
    assert a.states[0].lease.leading and not b.states[0].lease.leading
    return a, b, ca, cb


def test_paused_leader_records_its_run_s_true_end_and_the_new_leader_keeps_overlap(tmp_path, monkeypatch):
    jobs = Jobs()
    a, b, ca, cb = two_schedulers(tmp_path, monkeypatch, NameServer(), "overlap: skip", jobs)
    for clocks in (ca, cb):
        clocks.advance(1.5)
    a.run_round()  # fires 03:00:02 ... and is paused (SIGSTOP): no round, its clocks run on
    assert jobs.running.wait(10)
    for _ in range(8):  # b takes over after 4 s of silence; a's run goes on: 03:00:06..:10 overlap it
        cb.advance(1)
        b.run_round()
    assert b.states[0].lease.leading and len(jobs.started) == 1
    ca.advance(8)
    a.run_round()  # a resumes: it looks at the lease first and stands by, deciding nothing
    assert not a.states[0].lease.leading and len(jobs.started) == 1
    jobs.release.set()
    settle(a)  # a's run ends: a records it, with its real status
    cb.advance(2)
    b.run_round()  # b sees that end and fires the next tick
    settle(b)
    got = {x["tick"][-3:-1]: (x["decision"], x["scheduler"], x["run_status"]) for x in lines()}
    assert got["02"] == ("fired", "a", "ok")
    assert [got[t][0] for t in ("06", "08", "10")] == ["skipped-overlap"] * 3, got
    assert got["12"] == ("fired", "b", "ok") and len(jobs.started) == 2
    assert len(lines()) == len(got), "a tick recorded twice"


def test_a_leader_paused_between_its_lease_check_and_its_claim_claims_nothing(tmp_path, monkeypatch):
    jobs = Jobs()
    jobs.release.set()
    a, b, ca, cb = two_schedulers(tmp_path, monkeypatch, NameServer(), "overlap: allow", jobs)
    for _ in range(6):  # a is paused; b takes over
        cb.advance(1)
        b.run_round()
    assert b.states[0].lease.leading
    st = a.states[0]
    # a resumes inside a round that had already looked at the lease: the claim itself refuses it.
    st.lease._renewed = ca.mono  # it believes its renewal is fresh
    assert not a._decide(a._connected(), st, datetime(2026, 12, 1, 3, 0, 2, tzinfo=timezone.utc), "fired")
    assert not st.lease.leading and not st.running
    # And with an old renewal it looks at the lease before anything else.
    ca.advance(3)
    assert not a._decide(a._connected(), st, datetime(2026, 12, 1, 3, 0, 4, tzinfo=timezone.utc), "fired")
    assert not st.running and all(x["scheduler"] == "b" for x in lines())


def test_name_server_restart_after_a_fire_with_the_standby_first_fires_nothing_twice(tmp_path, monkeypatch):
    jobs, ns = Jobs(), Switch()
    jobs.release.set()
    a, b, ca, cb = two_schedulers(tmp_path, monkeypatch, ns, "misfire: once", jobs)
    for clocks in (ca, cb):
        clocks.advance(1.5)  # 03:00:02
    a.run_round()
    settle(a)
    ns.ns = NameServer()  # memory storage restarted: no lease, claim or watermark left
    for _ in range(6):
        for s, clocks in ((b, cb), (a, ca)):  # the standby's round comes first, every time
            clocks.advance(0.5)
            s.run_round()
            settle(s)
    assert a.states[0].lease.leading and not b.states[0].lease.leading
    assert store.read_watermark(ns, "s") is not None  # the leader wrote it back at once
    ticks = [x["tick"] for x in lines()]
    assert len(ticks) == len(set(ticks)) and len(jobs.started) == len(ticks), lines()
    assert {x["scheduler"] for x in lines()} == {"a"}


def test_draining_leader_hands_over_at_once_and_misfire_skip_drops_no_tick(tmp_path, monkeypatch):
    jobs = Jobs()
    a, b, ca, cb = two_schedulers(tmp_path, monkeypatch, NameServer(), "misfire: skip, overlap: allow", jobs)
    for clocks in (ca, cb):
        clocks.advance(1.5)
    a.run_round()  # 03:00:02 fires; its run goes on
    assert jobs.running.wait(10)
    cb.advance(0.2)
    b.run_round()
    a._hand_over()  # SIGTERM: a decides nothing more and releases the lease
    for clocks in (ca, cb):
        clocks.advance(2.0)  # 03:00:04.2: the tick of :04 fell between b's last round and now
    a.run_round(deciding=False)
    b.run_round()
    assert b.states[0].lease.leading and not a.states[0].lease.leading
    jobs.release.set()
    settle(a, b)
    got = {x["tick"][-3:-1]: (x["decision"], x["scheduler"], x["run_status"]) for x in lines()}
    assert got == {"02": ("fired", "a", "ok"), "04": ("fired", "b", "ok")}, got


def test_a_second_scheduler_of_a_live_name_is_refused_and_one_of_a_dead_process_is_not(schedules):
    ns, jobs, clocks, alive = NameServer(), Jobs(), Clocks(), Alive()
    first = scheduler(ns, schedules, "a", clocks, jobs, "a.json", alive)
    with pytest.raises(
        ConfigError, match=r"--name a: a scheduler of that name is running \(host .*, pid \d+\)"
    ):
        scheduler(ns, schedules, "a", clocks, jobs, "a2.json", alive)
    scheduler(ns, schedules, "b", clocks, jobs, "b.json", alive)  # another name is welcome
    alive.dead.add(first.process.pid)  # SIGKILLed: its entry stays fresh for a while, its pid is gone
    scheduler(ns, schedules, "a", clocks, jobs, "a3.json", alive)


def test_a_name_server_outage_is_logged_once_and_its_end_once(schedules, caplog):
    clocks, reachable = Clocks(), [True]
    ns = NameServer()

    class Away:
        """The name server, or a refused connection while it is away."""

        def __getattr__(self, name: str):
            if not reachable[0] and not name.startswith("_"):
                raise ClusterUnreachable("cannot reach the name server at 127.0.0.1:9")
            return getattr(ns, name)

    s = scheduler(Away(), schedules, "a", clocks, Jobs(), "state.json")
    caplog.set_level("INFO", logger="pyrocluster")
    s.run_round()
    reachable[0] = False
    for _ in range(5):  # five seconds of rounds while it is away
        clocks.advance(1)
        s.run_round()
    assert not s.reached_ns
    reachable[0] = True
    clocks.advance(1)
    s.run_round()
    said = [r.getMessage() for r in caplog.records if "name server at" in r.getMessage()]
    assert len(said) == 2, said
    assert "cannot reach" in said[0] and said[1].endswith("reached again"), said
