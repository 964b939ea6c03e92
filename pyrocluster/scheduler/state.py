"""What a scheduler holds: its options, and per schedule its lease, ledger, watermark and runs."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyrocluster.defaults import DEFAULT_DRAIN_TIMEOUT_S, DEFAULT_SCHEDULER_STATE, DEFAULT_SUBMIT_WAIT_S
from pyrocluster.scheduler.lease import Leadership
from pyrocluster.scheduler.ledger import Ledger
from pyrocluster.scheduler.spec import Schedule
from pyrocluster.scheduler.store import Claim, Watermark
from pyrocluster.scheduler.ticks import Policy, iso, local_time

UTC = timezone.utc


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

    @property
    def busy(self) -> int:
        """Runs of this schedule going on: ours and, while we lead, the other schedulers'."""
        return len(self.running) + len(self.foreign)

    @property
    def policy(self) -> Policy:
        """The schedule's misfire and overlap rules."""
        s = self.schedule
        return Policy(misfire=s.misfire, catchup_s=s.catchup_s, overlap=s.overlap)

    def adopt(self, mark: Watermark) -> bool:
        """Take the leader's newer (or equal) watermark as ours while we stand by; True if taken."""
        theirs = parse_iso(mark.tick)
        if self.watermark is not None and theirs < self.watermark:
            return False
        self.watermark, self.last_fire, self.last_status = theirs, mark.fire, mark.status
        return True

    def status_row(self, now: datetime) -> dict[str, Any]:
        """What ``status`` shows of this schedule."""
        timing = self.schedule.timing
        return {
            "name": self.schedule.name,
            "next_fire": iso(timing.next_after(now)),
            **local_time(timing, timing.next_after(now)),
            "last_fire": self.last_fire or None,
            "last_status": self.last_status or None,
            "leader": self.lease.leader_name or None,
        }


def parse_iso(text: str) -> datetime:
    """A UTC instant from ISO 8601 text (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
