"""Leadership of one schedule through the name server: a lease of numbered tokens with a heartbeat.

The leader is the holder of the highest token ``pyrocluster.sched.<schedule>.lease.<n>``. It
bumps the token's ``beat`` every round. A standby takes over when the highest token's
(token, beat) has not changed for ``ttl_s`` seconds of *its own* monotonic clock -- so no two
hosts' clocks are ever compared -- by registering token ``n + 1`` with ``safe=True``: of
several standbys exactly one wins. A leader that finds a higher token steps down.

The token is a fencing token: every tick claim carries the token of the scheduler that made
it. The lease only decides *who tries* to decide ticks; that a tick is decided once is the
per-tick claim's job (see ``store``), so two schedulers that both believe they lead (a
paused process, a partition) cost a refused claim, never a second run.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Any

from pyrocluster.scheduler import store

LEASE_TTL_S = 4.0
"""Seconds of an unchanged heartbeat after which a standby takes the lease."""
KEEP_TOKENS = 3
"""Superseded tokens kept in the name server (for the record)."""


class LeaseWatch:
    """Says when a lease looks dead: what we observe of it has not changed for ``ttl_s`` (our clock)."""

    def __init__(self, ttl_s: float = LEASE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._seen: Hashable = object()
        self._since: float | None = None

    def observe(self, key: Hashable, now: float) -> None:
        """Record what the lease looks like at monotonic time ``now``."""
        if self._since is None or key != self._seen:
            self._seen, self._since = key, now

    def reset(self) -> None:
        """Forget the history (we could not look for a while: start watching again)."""
        self._since = None

    def expired(self, now: float) -> bool:
        """True when the observation has not changed for ``ttl_s``."""
        return self._since is not None and now - self._since >= self.ttl_s


class Leadership:
    """One schedule's lease as one scheduler sees it; :meth:`step` renews, watches or takes over."""

    def __init__(self, schedule: str, instance: str, name: str, ttl_s: float = LEASE_TTL_S) -> None:
        self.schedule = schedule
        self.instance = instance
        self.name = name
        self.ttl_s = ttl_s
        self.token: int | None = None
        """Our token while we lead."""
        self.max_seen = 0
        self.leader_name = ""
        """The display name of the current leader ('' when none is known)."""
        self.leading_since: datetime | None = None
        """When we last started to lead without a gap (ticks before it count as missed)."""
        self.superseded = ""
        """The instance we took the lease from, when it did not release it (it died or stalled)."""
        self._watch = LeaseWatch(ttl_s)
        self._beats = 0
        self._renewed = 0.0

    @property
    def leading(self) -> bool:
        """True while we hold the highest token."""
        return self.token is not None

    def interrupted(self) -> None:
        """The name server could not be reached: watch afresh once it is back."""
        self._watch.reset()

    def step(self, ns: Any, now: float, wall: datetime) -> bool:
        """One round at monotonic ``now`` and UTC ``wall``: True when we lead after it."""
        record, tokens = store.read_lease(ns, self.schedule)
        if record is not None:
            self.max_seen = max(self.max_seen, record.token)
        if self.token is not None:
            if record is not None and record.token == self.token and record.by == self.instance:
                if now - self._renewed > self.ttl_s:
                    self.leading_since = wall  # we may have looked dead meanwhile: a gap
                self._beat(ns, now)
                return True
            self.token, self.leading_since = None, None  # superseded, or the name server forgot
            self._watch.reset()
        self.leader_name = record.name if record is not None and not record.released else ""
        if record is not None and not record.released:
            self._watch.observe((record.token, record.beat, record.by), now)
            if not self._watch.expired(now):
                return False
        token = self.max_seen + 1
        self.max_seen = token
        if not store.claim_token(ns, self.schedule, token, self.instance, self.name):
            return False
        self.token, self.leading_since, self.leader_name = token, wall, self.name
        self.superseded = record.by if record is not None and not record.released else ""
        self._beat(ns, now)
        store.remove_tokens(ns, self.schedule, [t for t in tokens if t < token - KEEP_TOKENS])
        return True

    def _beat(self, ns: Any, now: float) -> None:
        assert self.token is not None
        self._beats += 1
        store.beat(ns, self.schedule, self.token, self.instance, self.name, self._beats)
        self._renewed = now

    def release(self, ns: Any) -> None:
        """Hand the lease over at once (a standby need not wait ``ttl_s``)."""
        if self.token is not None:
            store.beat(
                ns, self.schedule, self.token, self.instance, self.name, self._beats + 1, released=True
            )
            self.token, self.leading_since = None, None
