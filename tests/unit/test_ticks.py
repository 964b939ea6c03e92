"""Ticks without a clock: next tick, DST on US/Pacific and Europe/Berlin, misfire and overlap rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pyrocluster.scheduler.ticks import (
    FIRE,
    QUEUE,
    SKIPPED_MISFIRE,
    SKIPPED_OVERLAP,
    Action,
    Cron,
    Every,
    Policy,
    cron_problem,
    plan,
    stamp,
    ticks_between,
    zone_of,
)

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(expr: str, zone: str = "UTC") -> Cron:
    tz = zone_of(zone)
    assert tz is not None
    return Cron(expr, tz)


# -- next tick -------------------------------------------------------------------------


def test_every_ticks_on_multiples_of_the_interval_since_the_epoch():
    every = Every(10)
    assert every.next_after(utc(2026, 12, 1, 3, 0, 4)) == utc(2026, 12, 1, 3, 0, 10)
    assert every.next_after(utc(2026, 12, 1, 3, 0, 10)) == utc(2026, 12, 1, 3, 0, 20)  # strictly after
    assert Every(3600).next_after(utc(2026, 12, 1, 3, 59, 59)) == utc(2026, 12, 1, 4)


def test_cron_next_tick_in_utc_and_in_a_zone():
    assert cron("0 3 * * *").next_after(utc(2026, 12, 1, 3)) == utc(2026, 12, 2, 3)
    assert cron("*/5 * * * *").next_after(utc(2026, 12, 1, 3, 2, 30)) == utc(2026, 12, 1, 3, 5)
    # 03:00 in Berlin in winter is 02:00 UTC.
    assert cron("0 3 * * *", "Europe/Berlin").next_after(utc(2026, 12, 1)) == utc(2026, 12, 1, 2)
    # Monday to Friday only: Saturday 2026-12-05 goes to Monday 2026-12-07.
    assert cron("0 9 * * 1-5").next_after(utc(2026, 12, 4, 10)) == utc(2026, 12, 7, 9)


def test_ticks_between_is_half_open_and_keeps_the_newest():
    every = Every(2)
    start = utc(2026, 12, 1)
    ticks = ticks_between(every, start, start + timedelta(seconds=10))
    assert ticks == [start + timedelta(seconds=s) for s in (2, 4, 6, 8, 10)]
    assert ticks_between(every, start, start + timedelta(seconds=10), limit=2) == ticks[-2:]


def test_stamp_is_utc_compact():
    berlin = zone_of("Europe/Berlin")
    assert stamp(datetime(2026, 12, 1, 4, 0, tzinfo=berlin)) == "20261201T030000Z"


def test_cron_problems_are_named():
    assert cron_problem("0 3 * * *") is None
    assert "5 fields" in (cron_problem("0 3 * *") or "")
    assert "5 fields" in (cron_problem("0 0 3 * * *") or "")
    assert cron_problem("61 * * * *") == "Bad minute"
    assert cron_problem("0 0 30 2 *") is not None  # 30 February never comes


# -- daylight saving -------------------------------------------------------------------


def test_berlin_spring_forward_missing_time_fires_when_the_clocks_jump():
    # 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist.
    daily = cron("30 2 * * *", "Europe/Berlin")
    assert daily.next_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert daily.next_after(utc(2026, 3, 29, 1)) == utc(2026, 3, 30, 0, 30)  # 02:30 CEST next day


def test_berlin_fall_back_repeated_time_fires_once():
    # 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:00-03:00 happens twice.
    daily = cron("30 2 * * *", "Europe/Berlin")
    day = ticks_between(daily, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert day == [utc(2026, 10, 25, 0, 30)]  # the first 02:30 (CEST) only
    half_hourly = cron("*/30 * * * *", "Europe/Berlin")
    ticks = ticks_between(half_hourly, utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 2, 15))
    # 02:00 and 02:30 CEST fire; the second 02:00 and 02:30 (CET) do not; then 03:00 CET.
    assert ticks == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2)]


def test_pacific_spring_forward_missing_times_collapse_into_one_tick():
    # 2026-03-08: 02:00 PST becomes 03:00 PDT (10:00 UTC): 02:00-02:59 do not exist.
    every_quarter_at_two = cron("*/15 2 * * *", "US/Pacific")
    ticks = ticks_between(every_quarter_at_two, utc(2026, 3, 8, 9), utc(2026, 3, 8, 12))
    assert ticks == [utc(2026, 3, 8, 10)]
    both = cron("0,30 2,3 * * *", "US/Pacific")  # 02:00, 02:30 and 03:00 are one instant
    assert ticks_between(both, utc(2026, 3, 8, 9), utc(2026, 3, 8, 12)) == [
        utc(2026, 3, 8, 10),
        utc(2026, 3, 8, 10, 30),
    ]


def test_pacific_fall_back_hourly_fires_every_wall_hour_once():
    # 2026-11-01: 02:00 PDT becomes 01:00 PST (09:00 UTC): 01:00-01:59 happen twice.
    hourly = cron("0 * * * *", "US/Pacific")
    ticks = ticks_between(hourly, utc(2026, 11, 1, 7, 30), utc(2026, 11, 1, 11, 30))
    # 01:00 PDT (08:00Z); the second 01:00 (PST, 09:00Z) does not fire; 02:00 PST; 03:00 PST.
    assert ticks == [utc(2026, 11, 1, 8), utc(2026, 11, 1, 10), utc(2026, 11, 1, 11)]


def test_next_tick_from_inside_the_repeated_hour_does_not_go_back():
    hourly = cron("15 * * * *", "US/Pacific")
    second_pass = utc(2026, 11, 1, 9, 5)  # 01:05 PST, after 01:15 PDT already fired
    assert hourly.next_after(second_pass) == utc(2026, 11, 1, 10, 15)  # 02:15 PST


def test_every_ignores_daylight_saving():
    hourly = Every(3600)
    ticks = ticks_between(hourly, utc(2026, 10, 25, 0), utc(2026, 10, 25, 3))
    assert ticks == [utc(2026, 10, 25, 1), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]


# -- misfire and overlap ---------------------------------------------------------------

T0 = utc(2026, 12, 1, 3)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kinds(actions: list[Action]) -> list[tuple[float, str]]:
    return [((a.tick - T0).total_seconds(), a.kind) for a in actions]


def test_on_time_tick_fires():
    actions = plan([at(0)], [], now=at(0.01), leader_since=at(-100), running=0, policy=Policy())
    assert kinds(actions) == [(0, FIRE)]


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        ("skip", [SKIPPED_MISFIRE, SKIPPED_MISFIRE, SKIPPED_MISFIRE]),
        ("once", [SKIPPED_MISFIRE, SKIPPED_MISFIRE, FIRE]),
        ("all", [FIRE, FIRE, FIRE]),
    ],
)
def test_missed_ticks_inside_catchup_follow_misfire(misfire, expected):
    # Ticks at 0, 10, 20 fell before this scheduler started leading at 25.
    policy = Policy(misfire=misfire, catchup_s=3600, overlap="allow")
    actions = plan([at(0), at(10), at(20)], [], now=at(25), leader_since=at(25), running=0, policy=policy)
    assert [k for _, k in kinds(actions)] == expected


@pytest.mark.parametrize("misfire", ["skip", "once", "all"])
def test_missed_ticks_outside_catchup_never_fire(misfire):
    policy = Policy(misfire=misfire, catchup_s=60, overlap="allow")
    actions = plan([at(0), at(10), at(20)], [], now=at(200), leader_since=at(200), running=0, policy=policy)
    assert [k for _, k in kinds(actions)] == [SKIPPED_MISFIRE] * 3


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        ("skip", [SKIPPED_MISFIRE, SKIPPED_MISFIRE, SKIPPED_MISFIRE]),
        ("once", [SKIPPED_MISFIRE, SKIPPED_MISFIRE, FIRE]),
        ("all", [SKIPPED_MISFIRE, FIRE, FIRE]),
    ],
)
def test_misfire_straddling_the_catchup_limit(misfire, expected):
    # catchup 60 s at now=70: the tick at 0 is 70 s late (outside), 10 and 20 are inside.
    policy = Policy(misfire=misfire, catchup_s=60, overlap="allow")
    actions = plan([at(0), at(10), at(20)], [], now=at(70), leader_since=at(70), running=0, policy=policy)
    assert [k for _, k in kinds(actions)] == expected


def test_catchup_limit_is_inclusive():
    policy = Policy(misfire="all", catchup_s=60, overlap="allow")
    actions = plan([at(0)], [], now=at(60), leader_since=at(60), running=0, policy=policy)
    assert kinds(actions) == [(0, FIRE)]


def test_late_tick_of_a_continuous_leader_is_not_a_misfire():
    # A leader that was busy for 3 s still fires its own tick (misfire concerns absences).
    policy = Policy(misfire="skip")
    actions = plan([at(0)], [], now=at(3), leader_since=at(-60), running=0, policy=policy)
    assert kinds(actions) == [(0, FIRE)]


def test_overlap_skip_records_ticks_while_a_run_runs():
    policy = Policy(overlap="skip")
    assert kinds(plan([at(0)], [], at(0), at(-60), running=1, policy=policy)) == [(0, SKIPPED_OVERLAP)]
    # misfire: all with overlap: skip: the first missed tick runs, the others would overlap it.
    policy = Policy(misfire="all", overlap="skip")
    actions = plan([at(0), at(10)], [], at(15), at(15), running=0, policy=policy)
    assert kinds(actions) == [(0, FIRE), (10, SKIPPED_OVERLAP)]


def test_overlap_allow_fires_whatever_runs():
    policy = Policy(overlap="allow")
    assert kinds(plan([at(0)], [], at(0), at(-60), running=3, policy=policy)) == [(0, FIRE)]


def test_overlap_queue_waits_for_the_run_then_fires_in_order():
    policy = Policy(overlap="queue")
    first = plan([at(0)], [], at(0), at(-60), running=1, policy=policy)
    assert kinds(first) == [(0, QUEUE)]
    second = plan([at(10)], [at(0)], at(10), at(-60), running=1, policy=policy)
    assert kinds(second) == [(0, QUEUE), (10, QUEUE)]
    ended = plan([], [at(0), at(10)], at(12), at(-60), running=0, policy=policy)
    assert kinds(ended) == [(0, FIRE), (10, QUEUE)]


def test_queued_ticks_that_waited_past_catchup_are_misfires():
    policy = Policy(overlap="queue", catchup_s=30)
    actions = plan([at(40)], [at(0), at(20)], at(40), at(-60), running=0, policy=policy)
    assert kinds(actions) == [(0, SKIPPED_MISFIRE), (20, FIRE), (40, QUEUE)]
