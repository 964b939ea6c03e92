"""A schedule's state, clock injected: a recorded tick ahead of the clock, ticks that fell while paused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pyrocluster.scheduler.lease import Leadership
from pyrocluster.scheduler.ledger import Ledger
from pyrocluster.scheduler.spec import load_schedules
from pyrocluster.scheduler.state import ScheduleState
from pyrocluster.scheduler.ticks import SKIPPED_MISFIRE, plan, ticks_between

NOW = datetime(2026, 12, 7, 20, 0, 0, 250000, tzinfo=timezone.utc)


@pytest.fixture
def state(tmp_path) -> ScheduleState:
    (tmp_path / "job.yaml").write_text("name: j\ntasks:\n  - {call: add, args: [1, 2]}\n")
    (tmp_path / "s.yaml").write_text(
        "schedules:\n  - {name: nightly, job: job.yaml, every: 1m, misfire: skip, overlap: allow}\n"
    )
    (schedule,) = load_schedules(tmp_path / "s.yaml")
    return ScheduleState(schedule, Leadership("nightly", "a.1", "a"), Ledger(tmp_path / "claims"))


def test_a_recorded_tick_ahead_of_the_clock_is_said_once_and_status_shows_the_tick_after_it(state):
    state.watermark = datetime(2027, 1, 1, 3, 0, tzinfo=timezone.utc)
    said = state.ahead(NOW)
    assert said == (
        "schedule nightly: its state says the tick 2027-01-01T03:00:00Z was already decided, later than "
        "now (2026-12-07T20:00:00Z): ticks until then will not fire (clock set back, or an edited state file)"
    )
    assert state.ahead(NOW + timedelta(minutes=1)) is None  # once
    assert state.status_row(NOW)["next_fire"] == "2027-01-01T03:01:00Z"
    state.watermark += timedelta(days=1)  # edited again: said again
    assert state.ahead(NOW) is not None


def test_a_recorded_tick_a_few_seconds_ahead_is_clock_skew_between_hosts_and_not_said(state):
    state.watermark = NOW.replace(microsecond=0) + timedelta(seconds=4)
    assert state.ahead(NOW) is None
    state.watermark = None
    assert state.ahead(NOW) is None


def test_ticks_that_fell_while_paused_are_missed_and_later_ones_are_not(state):
    state.lease.leading_since = NOW - timedelta(hours=1)
    assert state.missed_before() == state.lease.leading_since  # never paused: only the leader's gaps
    state.paused_seen = NOW + timedelta(minutes=5, seconds=0.3)  # the last round that found it paused
    now = NOW + timedelta(minutes=6, seconds=0.2)  # resumed between the ticks of :05 and :06
    due = ticks_between(state.schedule.timing, NOW, now)

    actions = plan(due, [], now, state.missed_before(), 0, state.policy)
    assert [(a.tick.minute, a.kind) for a in actions] == [
        (1, SKIPPED_MISFIRE),
        (2, SKIPPED_MISFIRE),
        (3, SKIPPED_MISFIRE),
        (4, SKIPPED_MISFIRE),
        (5, SKIPPED_MISFIRE),
        (6, "fire"),
    ]
    state.lease.leading_since = now  # a leader since later than the pause: its own start counts
    assert state.missed_before() == now
