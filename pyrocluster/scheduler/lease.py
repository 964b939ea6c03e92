"""Leadership of one schedule through the name server: a lease of numbered tokens with a heartbeat.

The leader is the holder of the highest token ``pyrocluster.sched.<schedule>.lease.<n>``. It
bumps the token's ``beat`` every round. A standby takes over when the highest token's
(token, beat) has not changed for ``ttl_s`` seconds of *its own* monotonic clock -- so no two
hosts' clocks are ever compared -- by registering token ``n + 1`` with ``safe=True``: of
several standbys exactly one wins. A leader that finds a higher token steps down.

A lease that vanished (a name server with memory storage restarted) is treated as a silent
one: its holder, still alive, registers its token again within a round, and a standby takes
the lease only after ``ttl_s`` without it. A new token is above every token seen and above the
claims folder's fence (see ``ledger``), so tokens only grow, across name-server restarts too.

The token is a fencing token: a claim is refused below the fence, and a leader whose last
renewal is older than half the lease (:meth:`Leadership.fresh`: it may have been paused) looks
at the lease again before it decides anything. The lease only decides *who tries* to decide
ticks; that a tick is decided once is the per-tick claim's job, so two schedulers that both
believe they lead cost a refused claim, never a second run.

A lease that was released (its holder is draining) is taken at once, and the ticks since the
standby last saw it held are not missed: the holder led them until it released.
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
        self.retaken = False
        """True after a round in which we registered our token again (the name server had forgotten it)."""
        self._watch = LeaseWatch(ttl_s)
        self._beats = 0
        self._renewed = 0.0
        self._held_seen: tuple[float, datetime] | None = None
        """(monotonic, wall) of the last round in which another scheduler held the lease."""

    @property
    def leading(self) -> bool:
        """True while we hold the highest token."""
        return self.token is not None

    @property
    def role(self) -> str:
        """Our part, in words: ``leading (token 3)`` or ``standing by (leader b)``."""
        if self.token is not None:
            return f"leading (token {self.token})"
        return f"standing by (leader {self.leader_name or 'unknown yet'})"

    def interrupted(self) -> None:
        """The name server could not be reached: watch afresh once it is back."""
        self._watch.reset()
        self._held_seen = None

    def fresh(self, now: float) -> bool:
        """True while we lead and renewed less than half a lease ago: no standby can have taken over."""
        return self.token is not None and now - self._renewed < self.ttl_s / 2

    def step(self, ns: Any, now: float, wall: datetime, floor: int = 0) -> bool:
        """One round at monotonic ``now`` and UTC ``wall``: True when we lead after it.

        ``floor`` is the highest token known elsewhere (the claims folder's fence).
        """
        record, tokens = store.read_lease(ns, self.schedule)
        if record is not None:
            self.max_seen = max(self.max_seen, record.token)
        self.retaken = False
        if self.token is not None:
            ours = record is not None and record.token == self.token and record.by == self.instance
            forgotten = record is None or record.token < self.token
            self.retaken = not ours and forgotten
            if ours or (
                self.retaken and store.claim_token(ns, self.schedule, self.token, self.instance, self.name)
            ):
                if now - self._renewed > self.ttl_s:
                    self.leading_since = wall  # we may have looked dead meanwhile: a gap
                self._beat(ns, now)
                return True
            self.step_down()
        held = record is not None and not record.released
        self.leader_name = record.name if record is not None and held else ""
        if held or (record is None and max(self.max_seen, floor) > 0):
            # Held, or vanished from a name server that restarted: wait for a whole ttl of silence.
            self._watch.observe((record.token, record.beat, record.by) if record else None, now)
            if not self._watch.expired(now):
                if held:
                    self._held_seen = (now, wall)
                return False
        token = max(self.max_seen, floor) + 1
        self.max_seen = token
        if not store.claim_token(ns, self.schedule, token, self.instance, self.name):
            return False
        seen = self._held_seen
        if record is not None and record.released and seen is not None and now - seen[0] <= self.ttl_s:
            self.leading_since = seen[1]  # it led until it released, just now: nothing was missed
        else:
            self.leading_since = wall
        self.token, self.leader_name, self._held_seen = token, self.name, None
        self._beat(ns, now)
        store.remove_tokens(ns, self.schedule, [t for t in tokens if t < token - KEEP_TOKENS])
        return True

    def released(self, ns: Any) -> bool:
        """True when the highest token we saw was handed over (its holder drains): take it now."""
        return (
            self.token is None
            and self.max_seen > 0
            and store.token_released(ns, self.schedule, self.max_seen)
        )

    def step_down(self) -> None:
        """Stop leading without a word (superseded, or fenced off by a newer leader)."""
        self.token, self.leading_since = None, None
        self._watch.reset()
        self._held_seen = None

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
            self.token, self.leading_since, self.leader_name = None, None, ""
