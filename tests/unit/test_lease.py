"""Leadership and tick claims on Pyro5's own NameServer object (no socket), memory and sqlite storage."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

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
    assert b.step(ns, 4.5, WALL) and b.token == 2 and b.superseded == "a.1"
    assert not a.step(ns, 5.0, WALL) and not a.leading and a.leader_name == "b"


def test_released_lease_is_taken_at_once(ns):
    a, b = Leadership("s", "a.1", "a"), Leadership("s", "b.1", "b")
    assert a.step(ns, 0.0, WALL)
    assert not b.step(ns, 0.1, WALL)
    a.release(ns)
    assert b.step(ns, 0.2, WALL) and b.superseded == ""


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


def test_a_tick_is_claimed_once(ns):
    mine = store.Claim("fired", "a.1", "a", 1, "2026-12-01T03:00:10Z")
    theirs = store.Claim("skipped-misfire", "b.1", "b", 2, "2026-12-01T03:00:11Z")
    assert store.try_claim(ns, "s", TICK, mine) is None
    held = store.try_claim(ns, "s", TICK, theirs)
    assert held is not None and held.by == "a.1" and held.decision == "fired"
    assert store.try_claim(ns, "s", TICK, mine) is None  # our own earlier claim (a lost reply) is ours
    store.set_claim_status(ns, "s", TICK, mine, "ok")
    assert store.read_claim(ns, "s", TICK) == store.Claim(
        "fired", "a.1", "a", 1, "2026-12-01T03:00:10Z", "ok"
    )


def test_claims_and_lease_survive_a_restart_with_sqlite(tmp_path):
    path = str(tmp_path / "ns.sqlite")
    first = NameServer(storageProvider=SqlStorage(path))
    assert store.try_claim(first, "s", TICK, store.Claim("fired", "a.1", "a", 1)) is None
    assert Leadership("s", "a.1", "a").step(first, 0.0, WALL)
    first.storage.close()
    again = NameServer(storageProvider=SqlStorage(path))
    assert store.try_claim(again, "s", TICK, store.Claim("fired", "b.1", "b", 2)) is not None
    assert store.read_lease(again, "s")[0].token == 1


def test_watermark_round_trip(ns):
    assert store.read_watermark(ns, "s") is None
    mark = store.Watermark(
        "2026-12-01T03:00:10Z", "2026-12-01T03:00:10Z", "running", "a", ("20261201T030010Z|a.1",)
    )
    store.write_watermark(ns, "s", mark)
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
