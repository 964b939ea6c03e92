"""The claims folder and the rule for other schedulers' runs: files only, injected clocks, no sockets."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from pyrocluster.scheduler.ledger import Fenced, Ledger
from pyrocluster.scheduler.store import Claim, End
from pyrocluster.scheduler.takeover import RunOwners, process_alive, process_started

TICK = datetime(2026, 12, 1, 3, 0, 10, tzinfo=timezone.utc)
LATER = datetime(2026, 12, 1, 3, 0, 12, tzinfo=timezone.utc)


def test_a_tick_is_claimed_once_and_survives_in_the_folder(tmp_path):
    ledger = Ledger(tmp_path / "claims")
    mine = Claim("fired", "a.1", "a", 1, "2026-12-01T03:00:10Z", "h", 42, 1.5)
    assert ledger.claim(TICK, mine) is None
    assert Ledger(tmp_path / "claims").claim(TICK, Claim("fired", "b.1", "b", 1)) == mine
    assert ledger.claim(TICK, mine) is None  # ours: asking again is harmless
    assert ledger.newest() == TICK and ledger.unended() == {TICK: mine}
    assert ledger.claim(LATER, Claim("skipped-misfire", "a.1", "a", 1)) is None
    assert ledger.newest() == LATER and ledger.unended() == {TICK: mine}  # a skipped tick has no run


def test_a_run_ends_once_whoever_records_it(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.claim(TICK, Claim("fired", "a.1", "a", 1))
    assert ledger.end(TICK, End("ok", "a.1")) is None
    assert ledger.end(TICK, End("ok", "a.1")) is None  # our own record, again (a retry)
    assert ledger.end(TICK, End("lost", "b.1")) == End("ok", "a.1")
    assert ledger.ended(TICK) == End("ok", "a.1") and ledger.unended() == {}
    ledger.claim(LATER, Claim("fired", "a.1", "a", 1))
    ledger.forget([TICK])
    assert ledger.newest() == LATER and ledger.ended(TICK) is None
    ledger.forget_before(LATER)
    assert ledger.newest() == LATER
    ledger.forget_before(LATER + (LATER - TICK))
    assert ledger.newest() is None


def test_a_withdrawn_claim_is_not_ours_any_more(tmp_path):
    ledger = Ledger(tmp_path)
    claim = Claim("fired", "a.1", "a", 1)
    assert ledger.claim(TICK, claim) is None
    ledger.end(TICK, End("withdrawn", "a.1"))
    assert ledger.claim(TICK, claim) == claim


def test_the_fence_refuses_claims_of_a_superseded_leader(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.fence() == 0
    assert ledger.raise_fence(3) and ledger.fence() == 3
    assert ledger.raise_fence(3)  # the holder itself, again
    assert not ledger.raise_fence(2) and ledger.fence() == 3
    with pytest.raises(Fenced):
        ledger.claim(TICK, Claim("fired", "old.1", "old", 2))
    assert ledger.newest() is None
    assert ledger.claim(TICK, Claim("fired", "new.1", "new", 3)) is None


def test_a_local_scheduler_is_dead_only_when_its_process_is_gone():
    alive = {42: True}
    owners = RunOwners("here", alive=lambda pid, started: alive.get(pid, False), lost_after_s=60)
    claim = Claim("fired", "a.1", "a", 1, host="here", pid=42)
    assert not owners.dead(claim, now=0) and not owners.dead(claim, now=10_000)  # paused for ever: alive
    alive[42] = False
    assert owners.dead(claim, now=10_001)


def test_a_remote_scheduler_is_dead_after_lost_after_s_of_an_unchanged_entry():
    owners = RunOwners("here", lambda pid, started: pytest.fail("no pid check elsewhere"), lost_after_s=60)
    claim = Claim("fired", "b.1", "b", 1, host="elsewhere", pid=42)
    assert not owners.dead(claim, now=0)  # never observed: not known dead
    owners.observe("b.1", "100.0", now=0)
    owners.observe("b.1", "102.0", now=30)  # it refreshed its entry
    assert not owners.dead(claim, now=89)
    owners.observe("b.1", None, now=60)  # its entry vanished (or a name server restarted)
    assert not owners.dead(claim, now=119) and owners.dead(claim, now=120)
    owners.forget(set())
    assert not owners.dead(claim, now=500)


def test_process_alive_tells_this_process_from_a_reused_pid():
    assert process_alive(os.getpid(), process_started())
    assert process_alive(os.getpid(), 0.0)
    assert not process_alive(os.getpid(), process_started() - 100)
    assert not process_alive(2**22 + 12345, 0.0)
