"""What a scheduler holds: its options, and per schedule its lease, ledger, watermark and runs."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pyrocluster.defaults import DEFAULT_DRAIN_TIMEOUT_S, DEFAULT_SCHEDULER_STATE, DEFAULT_SUBMIT_WAIT_S
from pyrocluster.scheduler.lease import Leadership
from pyrocluster.scheduler.ledger import Ledger
from pyrocluster.scheduler.spec import Schedule
from pyrocluster.scheduler.store import Claim, Watermark
from pyrocluster.scheduler.ticks import Policy, iso, local_time

UTC = timezone.utc
AHEAD_SLACK = timedelta(seconds=5)
"""How far a recorded tick may be ahead of our clock unsaid (clocks of hosts differ a little)."""


def utc_now() -> datetime:
    """The wall clock, UTC."""
    return datetime.now(UTC)


@dataclass
class SchedulerOptions:
    """What ``pyrocluster scheduler`` was told besides the shared settings."""

    schedules_file: str
    name: str = ""
    state_path: str = DEFAULT_SCHEDULER_STATE
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    wait_s: float = DEFAULT_SUBMIT_WAIT_S

    def resolved_name(self) -> str:
        """The name, defaulting to ``<hostname>-<pid>``."""
        return self.name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ScheduleState:
    """What this scheduler holds for one schedule."""

    schedule: Schedule
    lease: Leadership
    ledger: Ledger
    watermark: datetime | None = None
    """Every tick at or before this instant is decided (by someone)."""
    queued: list[datetime] = field(default_factory=list)
    running: dict[datetime, threading.Thread] = field(default_factory=dict)
    foreign: dict[datetime, Claim] = field(default_factory=dict)
    """Runs of other schedulers with no recorded end, while we lead (they count for ``overlap``)."""
    last_fire: str = ""
    last_status: str = ""
    pruned_to: datetime | None = None
    role: str = ""
    """What we last said of our part in this schedule (leading, standing by)."""
    paused_seen: datetime | None = None
    """When a round last found the schedule paused: the ticks before it came due while paused."""
    ahead_said: datetime | None = None
    """The recorded tick ahead of our clock that we warned about (said once)."""

    @property
    def busy(self) -> int:
        """Runs of this schedule going on: ours and, while we lead, the other schedulers'."""
        return len(self.running) + len(self.foreign)

    @property
    def policy(self) -> Policy:
        """The schedule's misfire and overlap rules."""
        s = self.schedule
        return Policy(misfire=s.misfire, catchup_s=s.catchup_s, overlap=s.overlap)

    def missed_before(self) -> datetime | None:
        """Due ticks before this instant are decided by ``misfire``: nobody led them, or the
        schedule was paused when they came due."""
        since = self.lease.leading_since
        if since is None or self.paused_seen is None:
            return since
        return max(since, self.paused_seen)

    def ahead(self, now: datetime) -> str | None:
        """Once per recorded tick: why no tick fires when our state says a tick after ``now`` was decided.

        Ticks up to it are never decided again (a tick never fires twice), so the schedule would
        look dead until then without a word.
        """
        mark = self.watermark
        if mark is None or mark - now <= AHEAD_SLACK or mark == self.ahead_said:
            return None
        self.ahead_said = mark
        return (
            f"schedule {self.schedule.name}: its state says the tick {iso(mark)} was already decided, "
            f"later than now ({iso(now.replace(microsecond=0))}): ticks until then will not fire "
            "(clock set back, or an edited state file)"
        )

    def adopt(self, mark: Watermark) -> bool:
        """Take the leader's newer (or equal) watermark as ours while we stand by; True if taken."""
        theirs = parse_iso(mark.tick)
        if self.watermark is not None and theirs < self.watermark:
            return False
        self.watermark, self.last_fire, self.last_status = theirs, mark.fire, mark.status
        return True

    def status_row(self, now: datetime) -> dict[str, Any]:
        """What ``status`` shows of this schedule: its next tick is the first one not decided yet
        (after a recorded tick ahead of the clock, not one that will never fire)."""
        timing = self.schedule.timing
        upcoming = timing.next_after(max(now, self.watermark or now))
        return {
            "name": self.schedule.name,
            "next_fire": iso(upcoming),
            **local_time(timing, upcoming),
            "last_fire": self.last_fire or None,
            "last_status": self.last_status or None,
            "leader": self.lease.leader_name or None,
        }


def parse_iso(text: str) -> datetime:
    """A UTC instant from ISO 8601 text (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
