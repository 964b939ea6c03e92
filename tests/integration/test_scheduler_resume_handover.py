"""Real schedulers on a real name server: a state in the future, pause and resume, a prompt handover.

* a state that says a tick later than now already fired: nothing fires twice, and the scheduler
  says so once, and ``status`` shows the tick that will really fire next;
* ``schedule resume``: the ticks that came due while paused follow ``misfire``, not ``overlap``;
* SIGTERM on the leader: the standby holds the lease a moment later, not at its next round.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from pyrocluster import config, operate
from pyrocluster.config import Settings
from pyrocluster.local import start_nameserver, start_worker
from pyrocluster.nameserver import registry
from pyrocluster.scheduler import store
from tests.conftest import status_now, wait_for
from tests.integration.test_scheduler import (
    TICK_JOB,
    assert_each_tick_once,
    runs_in_flight,
    seconds,
    start_scheduler,
    ticks_of,
    write_schedules,
)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.timeout(60)
def test_a_state_in_the_future_is_said_once_and_status_shows_the_real_next_tick(
    processes, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    schedules = write_schedules(tmp_path, TICK_JOB, every="1s")
    ahead = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    state = tmp_path / "state.json"  # hand-edited, or written by a clock that ran a day ahead
    state.write_text(
        json.dumps({"schedules": {"s": {"tick": iso(ahead), "fire": iso(ahead), "status": "ok"}}})
    )
    sched = start_scheduler(processes, ns, schedules, "a", "--state", str(state))

    def warnings() -> list[str]:
        return [line for line in sched.output if "already decided, later than now" in line]

    (said,) = wait_for(warnings, 15, what="the warning about the state in the future")
    assert f"schedule s: its state says the tick {iso(ahead)} was already decided" in said, said
    assert "ticks until then will not fire (clock set back, or an edited state file)" in said, said

    def shown() -> dict | None:
        status = status_now(ns)
        return next((s for s in (status or {}).get("schedules", []) if s.get("leader") == "a"), None)

    row = wait_for(shown, 15, what="the schedule in status")
    assert seconds(row["next_fire"]) > ahead.timestamp(), row  # not a tick that will never fire
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started >= 3, 5, what="three rounds more")  # one a second
    assert len(warnings()) == 1, list(sched.output)
    assert not ticks_of(tmp_path, "s")  # never twice: the ticks up to it are not decided again
    sched.signal(signal.SIGTERM)
    assert sched.proc.wait(timeout=30) == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("misfire", "overlap"), [("skip", "allow"), ("once", "skip")])
def test_resume_decides_the_paused_ticks_by_misfire_and_records_each_once(
    processes, tmp_path, monkeypatch, misfire, overlap
):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    processes.add(start_worker(ns, ["--services", "compute", "--concurrency", "2"]))
    schedules = write_schedules(tmp_path, TICK_JOB, every="1s", misfire=misfire, overlap=overlap)
    sched = start_scheduler(processes, ns, schedules, "a")
    wait_for(lambda: any(x["decision"] == "fired" for x in ticks_of(tmp_path, "s")), 15, what="a fire")
    settings = Settings.from_sources(ns=ns)
    config.apply(settings)
    assert operate.set_paused(settings, "s", True)
    paused_at = time.time()  # every tick after this finds the schedule paused
    wait_for(lambda: time.time() - paused_at >= 4.5, 6, what="4 ticks paused")
    assert operate.set_paused(settings, "s", False)
    resumed_at = time.time()
    wait_for(
        lambda: [x for x in ticks_of(tmp_path, "s") if seconds(x["tick"]) > resumed_at + 2],
        15,
        what="ticks after",
    )
    wait_for(lambda: not runs_in_flight(tmp_path), 15, what="the runs under way recorded")
    sched.signal(signal.SIGTERM)
    assert sched.proc.wait(timeout=30) == 0

    lines = sorted(ticks_of(tmp_path, "s"), key=lambda x: x["tick"])
    report = "\n".join(json.dumps(x) for x in lines)
    assert_each_tick_once(lines, 1.0)  # every paused tick has its one line
    window = [x["decision"] for x in lines if paused_at < seconds(x["tick"]) < resumed_at]
    assert len(window) >= 4, report
    # misfire decides the ticks whose round found the schedule paused: skip skips them all, once
    # skips all but the newest, which fires. After them come at most the ticks of the moment of
    # the resume (the mark was removed just before their round), fired on time.
    held = next((i for i, d in enumerate(window) if d != "skipped-misfire"), len(window))
    assert "skipped-misfire" not in window[held:], report
    if misfire == "skip":
        assert len(window) - held <= 1, report
    else:
        assert window[held] == "fired" and len(window) - held <= 2, report
    later = [x["decision"] for x in lines if seconds(x["tick"]) > resumed_at + 1]
    assert later and "skipped-misfire" not in later, report  # resumed: its ticks fire again


def leader_of(proxy, schedule: str) -> str:
    record, _ = store.read_lease(proxy, schedule)
    return record.name if record is not None and not record.released else ""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_standby_takes_the_lease_promptly_after_the_leader_s_sigterm(processes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    schedules = write_schedules(tmp_path, TICK_JOB, every="1h")  # no tick: only the lease moves
    settings = Settings.from_sources(ns=ns)
    config.apply(settings)
    proxy = registry.connect(settings)
    try:
        leader = start_scheduler(processes, ns, schedules, "a")
        wait_for(lambda: leader_of(proxy, "s") == "a", 15, 0.02, what="a leads")
        delays = []
        for name in ("b", "c", "d"):  # each time the standby of the last handover leads
            standby = start_scheduler(processes, ns, schedules, name)
            wait_for(lambda s=standby: any("standing by" in x for x in s.output), 15, 0.02, what="standby")
            leader.signal(signal.SIGTERM)
            termed = time.monotonic()
            wait_for(lambda name=name: leader_of(proxy, "s") == name, 10, 0.005, what=f"{name} leads")
            delays.append(time.monotonic() - termed)
            assert leader.proc.wait(timeout=30) == 0
            leader = standby
        assert max(delays) < 0.5, f"the standby took the lease {delays} s after the leader's SIGTERM"
        leader.signal(signal.SIGTERM)
        assert leader.proc.wait(timeout=30) == 0
    finally:
        proxy._pyroRelease()
