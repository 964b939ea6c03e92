"""Leadership and tick claims on Pyro5's own NameServer object (no socket), memory and sqlite storage."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from Pyro5.nameserver import NameServer, SqlStorage

from pyrocluster.nameserver import schedules
from pyrocluster.scheduler import store
from pyrocluster.scheduler.lease import Leadership, LeaseWatch

WALL = datetime(2026, 12, 1, 3, tzinfo=timezone.utc)
TICK = datetime(2026, 12, 1, 3, 0, 10, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "sqlite"])
def ns(request, tmp_path):
    """The real name-server logic with the storage the name server would use; no network."""
    if request.param == "memory":
        return NameServer()
    return NameServer(storageProvider=SqlStorage(str(tmp_path / "ns.sqlite")))


def test_watch_expires_only_after_ttl_of_no_change():
    watch = LeaseWatch(ttl_s=4)
    watch.observe((1, 0), now=100)
    assert not watch.expired(103.9)
    watch.observe((1, 1), now=103.9)  # a beat: the holder lives
    assert not watch.expired(107.8)
    assert watch.expired(107.9)
    watch.reset()
    assert not watch.expired(200)


def test_first_scheduler_leads_the_second_stands_by(ns):
    a, b = Leadership("s", "a.1", "a"), Leadership("s", "b.1", "b")
    assert a.step(ns, 0.0, WALL) and a.token == 1 and a.leading_since == WALL
    for t in range(10):
        assert a.step(ns, float(t), WALL)
        assert not b.step(ns, t + 0.5, WALL)
    assert b.leader_name == "a"


def test_standby_takes_over_after_ttl_of_silence_and_old_leader_steps_down(ns):
    a, b = Leadership("s", "a.1", "a", ttl_s=4), Leadership("s", "b.1", "b", ttl_s=4)
    assert a.step(ns, 0.0, WALL)
    assert not b.step(ns, 0.5, WALL)  # a falls silent now
    assert not b.step(ns, 4.0, WALL)
    assert b.step(ns, 4.5, WALL) and b.token == 2 and b.leading_since == WALL
    assert not a.step(ns, 5.0, WALL) and not a.leading and a.leader_name == "b"


def test_released_lease_is_taken_at_once_and_nothing_since_the_standby_last_saw_it_held_is_missed(ns):
    a, b = Leadership("s", "a.1", "a"), Leadership("s", "b.1", "b")
    assert a.step(ns, 0.0, WALL)
    assert not b.step(ns, 0.1, WALL)
    a.release(ns)
    assert not a.leading and a.leader_name == ""
    later = WALL + timedelta(seconds=0.9)
    assert b.step(ns, 1.0, later) and b.leading_since == WALL  # a led until it released


def test_a_lease_released_long_after_the_standby_looked_counts_the_gap_as_missed(ns):
    a, b = Leadership("s", "a.1", "a"), Leadership("s", "b.1", "b", ttl_s=4)
    assert a.step(ns, 0.0, WALL) and not b.step(ns, 0.1, WALL)
    a.release(ns)
    b.interrupted()  # b could not look for a while
    later = WALL + timedelta(seconds=30)
    assert b.step(ns, 30.0, later) and b.leading_since == later


def test_a_lease_the_name_server_forgot_is_taken_back_by_its_leader_and_waited_for_by_the_standby(tmp_path):
    first = NameServer()
    a, b = Leadership("s", "a.1", "a", ttl_s=4), Leadership("s", "b.1", "b", ttl_s=4)
    assert a.step(first, 0.0, WALL) and not b.step(first, 0.5, WALL)
    again = NameServer()  # memory storage restarted: no lease at all
    assert not b.step(again, 1.0, WALL)  # the standby's round comes first: it waits
    assert a.step(again, 1.1, WALL) and a.token == 1 and a.leading_since == WALL and a.retaken
    for t in range(2, 12):
        assert a.step(again, float(t), WALL) and not a.retaken and not b.step(again, t + 0.5, WALL)
    # Alone after a restart, a standby that saw a lease before takes it after a ttl, above it.
    lone = NameServer()
    assert not b.step(lone, 20.0, WALL) and not b.step(lone, 23.9, WALL)
    assert b.step(lone, 24.0, WALL) and b.token == 2


def test_a_new_token_is_above_the_fence_and_a_fresh_cluster_is_led_at_once(ns):
    a = Leadership("s", "a.1", "a")
    assert a.step(ns, 0.0, WALL, floor=0) and a.token == 1
    b = Leadership("s", "b.1", "b", ttl_s=4)
    fresh = NameServer()
    assert not b.step(fresh, 0.0, WALL, floor=7)  # someone led before (the fence): wait a ttl
    assert b.step(fresh, 4.0, WALL, floor=7) and b.token == 8


def test_a_leader_is_fresh_only_within_half_a_lease_of_its_last_renewal(ns):
    a = Leadership("s", "a.1", "a", ttl_s=4)
    assert not a.fresh(0.0)
    assert a.step(ns, 10.0, WALL)
    assert a.fresh(11.9) and not a.fresh(12.0)  # paused 2 s: look at the lease before deciding


def test_two_standbys_racing_for_one_token_one_wins(ns):
    a, b, c = (Leadership("s", f"{n}.1", n, ttl_s=1) for n in "abc")
    assert a.step(ns, 0.0, WALL)
    assert not b.step(ns, 0.1, WALL) and not c.step(ns, 0.1, WALL)
    # Both saw the lease unchanged for a full ttl; b asks first, then c, for the same next token.
    assert b.step(ns, 1.2, WALL)
    assert not c.step(ns, 1.2, WALL)
    assert [x.leading for x in (a, b, c)] == [True, True, False]  # a has not looked yet...
    assert not a.step(ns, 1.3, WALL)  # ...and steps down when it does
    assert store.read_lease(ns, "s")[0].by == "b.1"


def test_leader_that_could_not_beat_for_a_ttl_restarts_its_leading_since(ns):
    a = Leadership("s", "a.1", "a", ttl_s=4)
    assert a.step(ns, 0.0, WALL)
    later = datetime(2026, 12, 1, 3, 1, tzinfo=timezone.utc)
    assert a.step(ns, 10.0, later) and a.leading_since == later  # ticks in the gap count as missed


def test_a_tick_is_claimed_once_and_its_run_ends_once(ns):
    mine = store.Claim("fired", "a.1", "a", 1, "2026-12-01T03:00:10Z", "host", 42, 1.5)
    theirs = store.Claim("skipped-misfire", "b.1", "b", 2, "2026-12-01T03:00:11Z")
    assert store.try_claim(ns, "s", TICK, mine) is None
    held = store.try_claim(ns, "s", TICK, theirs)
    assert held == mine
    assert store.try_claim(ns, "s", TICK, mine) is None  # our own earlier claim (a lost reply) is ours
    assert store.unended(ns, "s") == {TICK: mine}
    assert store.try_end(ns, "s", TICK, store.End("ok", "a.1")) is None
    assert store.try_end(ns, "s", TICK, store.End("ok", "a.1")) is None  # again, after a lost reply
    assert store.try_end(ns, "s", TICK, store.End("lost", "b.1")) == store.End("ok", "a.1")
    assert store.read_end(ns, "s", TICK) == store.End("ok", "a.1") and store.unended(ns, "s") == {}
    store.remove_claims(ns, "s", [TICK])
    assert store.read_claim(ns, "s", TICK) is None and store.read_end(ns, "s", TICK) is None


def test_claims_and_lease_survive_a_restart_with_sqlite(tmp_path):
    path = str(tmp_path / "ns.sqlite")
    first = NameServer(storageProvider=SqlStorage(path))
    assert store.try_claim(first, "s", TICK, store.Claim("fired", "a.1", "a", 1)) is None
    assert Leadership("s", "a.1", "a").step(first, 0.0, WALL)
    first.storage.close()
    again = NameServer(storageProvider=SqlStorage(path))
    assert store.try_claim(again, "s", TICK, store.Claim("fired", "b.1", "b", 2)) is not None
    assert store.read_lease(again, "s")[0].token == 1


def test_watermark_round_trip_and_it_never_moves_back(ns):
    assert store.read_watermark(ns, "s") is None
    mark = store.Watermark("2026-12-01T03:00:10Z", "2026-12-01T03:00:10Z", "running", "a")
    store.write_watermark(ns, "s", mark)
    assert store.read_watermark(ns, "s") == mark
    store.write_watermark(ns, "s", store.Watermark("2026-12-01T03:00:08Z", "", "", "stale"))
    assert store.read_watermark(ns, "s") == mark


def test_published_schedules_prefer_the_leader_and_drop_stale_entries():
    def entry(name: str, updated: float, leader: str, last: str) -> tuple[str, set[str]]:
        shown = json.dumps(
            {"name": "s", "leader": leader, "last_fire": last, "next_fire": "x", "last_status": "ok"}
        )
        return ("uri", {f"name:{name}", f"updated:{updated}", "schedule:" + shown})

    now = time.time()
    listing = {
        "a": entry("a", now - 1, "a", "leader's view"),
        "b": entry("b", now, "a", "standby's view"),
        "dead": entry("dead", now - 60, "dead", "old"),
    }
    assert schedules.published_schedules(listing, now, stale_s=10) == [
        {"name": "s", "next_fire": "x", "last_fire": "leader's view", "last_status": "ok", "leader": "a"}
    ]
    assert schedules.published_schedules({"dead": listing["dead"]}, now, stale_s=10) == []
