"""When ticks fall and what to do with each: next tick, DST, misfire and overlap rules (pure, clock injected).

Nothing here reads a clock or touches the network: every function takes ``now`` (an aware UTC
datetime) and returns decisions, so the rules are tested without sockets or sleeping.

Daylight saving (cron schedules; ``every`` counts real seconds and knows no wall clock):

* a wall-clock time that occurs twice (clocks go back) fires once, at its first occurrence;
* a wall-clock time that does not exist (clocks go forward) fires at the next valid instant,
  the moment the clocks jump; several such times collapse into that one tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

UTC = timezone.utc
MAX_DUE_TICKS = 1000
"""Ticks a scheduler decides about after an absence, at most (the newest ones)."""
LOOKBACK = timedelta(days=7)
"""How far back an absent scheduler looks for ticks it missed."""
_STAMP = "%Y%m%dT%H%M%SZ"


def stamp(tick: datetime) -> str:
    """A tick as ``{fire}`` names it: UTC, ``20261201T030000Z``."""
    return tick.astimezone(UTC).strftime(_STAMP)


def from_stamp(text: str) -> datetime:
    """The tick that :func:`stamp` wrote."""
    return datetime.strptime(text, _STAMP).replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` (``2026-12-01T03:00:00Z``), as ``status --json`` shows times."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def zone_of(name: str) -> ZoneInfo | None:
    """The IANA zone called ``name`` (from the system or the tzdata package), or None."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def cron_problem(expr: str) -> str | None:
    """What is wrong with a 5-field cron expression, or None when it is fine and fires at some time."""
    if len(expr.split()) != 5:
        return f"expected 5 fields (minute hour day month weekday), got {len(expr.split())}"
    try:
        next(CronSim(expr, datetime(2000, 1, 1)))
    except CronSimError as exc:
        return str(exc)
    except StopIteration:
        return "it never fires"
    return None


class Timing(Protocol):
    """A schedule's ticks: instants in UTC."""

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""


@dataclass(frozen=True)
class Every:
    """Every ``seconds`` of real time, on multiples of it since 1970-01-01T00:00Z (all schedulers agree)."""

    seconds: int

    def next_after(self, moment: datetime) -> datetime:
        """The first multiple of ``seconds`` after ``moment``."""
        epoch = int(moment.timestamp() // self.seconds) * self.seconds + self.seconds
        return datetime.fromtimestamp(epoch, UTC)


def local_wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time that ``moment`` shows in ``zone``."""
    return moment.astimezone(zone).replace(tzinfo=None)


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a naive wall time of ``zone`` fires at, by the DST rules of this module."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if local_wall(first, zone) == wall:
        return first  # exists; if it occurs twice, fold=0 is the first occurrence
    # In a gap: fold=1 gives an instant before the jump, fold=0 one after. Find the jump.
    lo = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    hi = int(first.timestamp())
    if lo > hi:
        lo, hi = hi, lo
    while lo < hi:
        mid = (lo + hi) // 2
        if local_wall(datetime.fromtimestamp(mid, UTC), zone) >= wall:
            hi = mid
        else:
            lo = mid + 1
    return datetime.fromtimestamp(hi, UTC)


@dataclass(frozen=True)
class Cron:
    """A 5-field cron expression read on the wall clock of ``zone`` (cronsim matches the fields)."""

    expr: str
    zone: ZoneInfo

    def next_after(self, moment: datetime) -> datetime:
        """The first matching wall time whose instant is after ``moment``."""
        for wall in CronSim(self.expr, local_wall(moment, self.zone)):
            instant = wall_to_instant(wall, self.zone)
            if instant > moment:  # a match in the second pass of a repeated hour maps before it
                return instant
        raise ValueError(f"cron {self.expr!r} never fires after {moment}")  # pragma: no cover


def local_time(timing: Timing, moment: datetime) -> dict[str, str]:
    """``{"timezone", "next_fire_local"}`` of a cron read in a zone other than UTC (``moment`` shown
    there, ISO 8601 with its offset); empty for UTC and ``every``."""
    zone = getattr(timing, "zone", None)
    if not isinstance(zone, ZoneInfo) or zone.key == "UTC":
        return {}
    return {"timezone": zone.key, "next_fire_local": moment.astimezone(zone).isoformat()}


def ticks_between(
    timing: Timing, after: datetime, until: datetime, limit: int = MAX_DUE_TICKS
) -> list[datetime]:
    """Ticks in ``(after, until]``, the newest ``limit`` of them, looking back at most :data:`LOOKBACK`."""
    start = max(after, until - LOOKBACK)
    found: deque[datetime] = deque(maxlen=limit)
    tick = timing.next_after(start)
    while tick <= until:
        found.append(tick)
        tick = timing.next_after(tick)
    return list(found)


def iter_ticks(timing: Timing, after: datetime) -> Iterator[datetime]:
    """Every tick after ``after``, for ever."""
    tick = timing.next_after(after)
    while True:
        yield tick
        tick = timing.next_after(tick)


Misfire = Literal["skip", "once", "all"]
"""What to do with missed ticks within ``catchup``."""
Overlap = Literal["skip", "queue", "allow"]
"""What to do with a tick while the schedule's previous run still runs."""
FIRE, QUEUE = "fire", "queue"
"""Action kinds: run the tick now; hold it until the running run ends."""
SKIPPED_OVERLAP, SKIPPED_MISFIRE = "skipped-overlap", "skipped-misfire"
"""Action kinds that are also the ``decision`` of ``ticks.jsonl``."""


@dataclass(frozen=True)
class Policy:
    """A schedule's rules for missed ticks and for ticks while its previous run still runs."""

    misfire: Misfire = "once"
    catchup_s: float = 3600.0
    overlap: Overlap = "skip"


class Action(NamedTuple):
    """What to do with one tick: ``fire``, ``queue``, ``skipped-overlap`` or ``skipped-misfire``."""

    tick: datetime
    kind: str


def plan(
    due: Sequence[datetime],
    queued: Sequence[datetime],
    now: datetime,
    leader_since: datetime,
    running: int,
    policy: Policy,
) -> list[Action]:
    """Decide the ``queued`` ticks (waiting for a run to end) and the newly ``due`` ones, oldest first.

    A due tick is *missed* when it fell before ``leader_since`` (no scheduler was leading, or
    this one could not reach the name server): ``misfire`` says what happens to missed ticks
    that are at most ``catchup_s`` late; later ones are always ``skipped-misfire``. Ticks that
    would fire go through ``overlap`` against the ``running`` runs (and the ones fired here).
    The returned actions are in tick order; those of kind ``queue`` are the new queue.
    """
    catchup = timedelta(seconds=policy.catchup_s)
    actions: list[Action] = []
    candidates: list[datetime] = []
    for tick in queued:
        if now - tick > catchup:
            actions.append(Action(tick, SKIPPED_MISFIRE))
        else:
            candidates.append(tick)
    missed = [t for t in due if t < leader_since and now - t <= catchup]
    keep = {"skip": set(), "once": set(missed[-1:]), "all": set(missed)}[policy.misfire]
    for tick in due:
        if now - tick > catchup or (tick in missed and tick not in keep):
            actions.append(Action(tick, SKIPPED_MISFIRE))
        else:
            candidates.append(tick)
    for tick in candidates:
        if policy.overlap == "allow" or running == 0:
            if policy.overlap == "queue" and any(a.kind == QUEUE for a in actions):
                actions.append(Action(tick, QUEUE))  # behind the ones already waiting
                continue
            actions.append(Action(tick, FIRE))
            running += 1
        elif policy.overlap == "queue":
            actions.append(Action(tick, QUEUE))
        else:
            actions.append(Action(tick, SKIPPED_OVERLAP))
    actions.sort(key=lambda a: a.tick)
    return actions
