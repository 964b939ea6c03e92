"""The schedulers' records in the name server: tick claims, lease tokens, watermarks, published status.

Every record is a name-server entry whose metadata is the data (its URI points nowhere):

* ``pyrocluster.sched.<schedule>.tick.<stamp>`` -- the claim of one tick. Registered with
  ``safe=True``, which the name server refuses when the name exists (a compare-and-set under
  its lock; with ``--storage sqlite`` on disk before the call returns). A tick is decided by
  the scheduler that wins both this and the claim file of :mod:`ledger`.
* ``pyrocluster.sched.<schedule>.end.<stamp>`` -- how a fired tick's run ended, registered the
  same way by whoever records it first (its scheduler, or a leader that found it dead).
* ``pyrocluster.sched.<schedule>.lease.<token>`` -- a leadership token, claimed the same way;
  the highest token is the leader, which bumps ``beat`` in its metadata to show it is alive.
* ``pyrocluster.sched.<schedule>.last`` -- the newest decided tick, the newest fired tick and
  its run status (what ``status`` shows, and where a new leader starts); it only moves forward.

Running schedulers' own entries (what ``status`` shows) are ``pyrocluster.nameserver.schedules``.

Functions take a name-server proxy (or Pyro5's plain ``NameServer`` object in unit tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import Pyro5.errors

from pyrocluster.nameserver.schedules import DATA_URI, parse_meta
from pyrocluster.scheduler.ticks import from_stamp, stamp

SCHED_PREFIX = "pyrocluster.sched."
"""Prefix of every per-schedule record (claims, tokens, watermark)."""
TOKEN_DIGITS = 12
"""Width of a zero-padded lease token in its entry's name."""


def _meta(items: Mapping[str, Any]) -> set[str]:
    return {f"{k}:{v}" for k, v in items.items() if v is not None and v != ""}


def claim_name(schedule: str, tick: datetime) -> str:
    """The claim entry of one tick."""
    return f"{SCHED_PREFIX}{schedule}.tick.{stamp(tick)}"


def token_name(schedule: str, token: int) -> str:
    """A leadership token entry (zero-padded so that names sort as numbers)."""
    return f"{SCHED_PREFIX}{schedule}.lease.{token:0{TOKEN_DIGITS}d}"


def end_name(schedule: str, tick: datetime) -> str:
    """The run-end entry of one fired tick."""
    return f"{SCHED_PREFIX}{schedule}.end.{stamp(tick)}"


def last_name(schedule: str) -> str:
    """The watermark entry of a schedule."""
    return f"{SCHED_PREFIX}{schedule}.last"


@dataclass(frozen=True)
class Claim:
    """Who decided a tick, what, with which lease token, and where that scheduler runs."""

    decision: str
    by: str
    name: str
    token: int = 0
    at: str = ""
    host: str = ""
    pid: int = 0
    started: float = 0.0
    """The start time of the process ``pid`` (tells a reused pid from the scheduler's)."""

    def meta(self) -> set[str]:
        """As name-server metadata."""
        return _meta(
            {
                "decision": self.decision,
                "by": self.by,
                "name": self.name,
                "token": self.token,
                "at": self.at,
                "host": self.host,
                "pid": self.pid,
                "started": repr(self.started),
            }
        )

    @classmethod
    def from_meta(cls, metadata: Iterable[str] | None) -> Claim:
        """Read back what :meth:`meta` wrote."""
        m = parse_meta(metadata)
        return cls(
            decision=m.get("decision", "unknown"),
            by=m.get("by", ""),
            name=m.get("name", ""),
            token=_int(m.get("token")),
            at=m.get("at", ""),
            host=m.get("host", ""),
            pid=_int(m.get("pid")),
            started=_float(m.get("started")),
        )


@dataclass(frozen=True)
class End:
    """How a fired tick's run ended (``ok``, ``failed``, ``lost``...) and which scheduler recorded it."""

    status: str
    by: str


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _float(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def try_claim(ns: Any, schedule: str, tick: datetime, claim: Claim) -> Claim | None:
    """Register the claim of ``tick`` unless it exists; None when won, else the claim that holds it.

    A claim found with our own ``by`` is ours (an earlier attempt whose reply was lost): None.
    """
    try:
        ns.register(claim_name(schedule, tick), DATA_URI, safe=True, metadata=claim.meta())
        return None
    except Pyro5.errors.NamingError:
        pass
    held = read_claim(ns, schedule, tick)
    if held is not None and held.by == claim.by and held.decision == claim.decision:
        return None
    return held or Claim(decision="unknown", by="", name="")


def read_claim(ns: Any, schedule: str, tick: datetime) -> Claim | None:
    """The claim of ``tick``, or None when nobody claimed it (or it was pruned)."""
    try:
        _, metadata = ns.lookup(claim_name(schedule, tick), return_metadata=True)
    except Pyro5.errors.NamingError:
        return None
    return Claim.from_meta(metadata)


def try_end(ns: Any, schedule: str, tick: datetime, end: End) -> End | None:
    """Record how ``tick``'s run ended unless someone did; None when this record is ours."""
    try:
        ns.register(end_name(schedule, tick), DATA_URI, safe=True, metadata=_meta(asdict(end)))
        return None
    except Pyro5.errors.NamingError:
        pass
    held = read_end(ns, schedule, tick) or End("unknown", "")
    return None if held.by == end.by else held


def read_end(ns: Any, schedule: str, tick: datetime) -> End | None:
    """How ``tick``'s run ended, or None while nobody recorded it."""
    try:
        _, metadata = ns.lookup(end_name(schedule, tick), return_metadata=True)
    except Pyro5.errors.NamingError:
        return None
    m = parse_meta(metadata)
    return End(m.get("status", ""), m.get("by", ""))


def unended(ns: Any, schedule: str) -> dict[datetime, Claim]:
    """Fired ticks whose run has no recorded end, with their claims."""
    prefix = f"{SCHED_PREFIX}{schedule}.tick."
    ended = {n.rsplit(".", 1)[1] for n in ns.list(prefix=f"{SCHED_PREFIX}{schedule}.end.")}
    out: dict[datetime, Claim] = {}
    for name, (_, metadata) in ns.list(prefix=prefix, return_metadata=True).items():
        tick = name[len(prefix) :]
        claim = Claim.from_meta(metadata)
        if claim.decision == "fired" and tick not in ended:
            out[from_stamp(tick)] = claim
    return out


def remove_claims(ns: Any, schedule: str, ticks: Iterable[datetime]) -> None:
    """Forget old claims and run ends (pruning)."""
    for tick in ticks:
        ns.remove(claim_name(schedule, tick))
        ns.remove(end_name(schedule, tick))


@dataclass(frozen=True)
class LeaseRecord:
    """The highest leadership token of a schedule, its holder and its heartbeat counter."""

    token: int
    by: str
    name: str
    beat: int
    released: bool = False


def read_lease(ns: Any, schedule: str) -> tuple[LeaseRecord | None, list[int]]:
    """The highest token's record (None when there is none) and every token number present."""
    prefix = f"{SCHED_PREFIX}{schedule}.lease."
    listing = ns.list(prefix=prefix, return_metadata=True)
    tokens = sorted(int(n[len(prefix) :]) for n in listing if n[len(prefix) :].isdigit())
    if not tokens:
        return None, []
    m = parse_meta(listing[token_name(schedule, tokens[-1])][1])
    record = LeaseRecord(
        token=tokens[-1],
        by=m.get("by", ""),
        name=m.get("name", ""),
        beat=int(m.get("beat", "0") or 0),
        released="released" in m,
    )
    return record, tokens


def token_released(ns: Any, schedule: str, token: int) -> bool:
    """True when ``token`` was handed over by its holder (one lookup: cheap enough to poll)."""
    try:
        _, metadata = ns.lookup(token_name(schedule, token), return_metadata=True)
    except Pyro5.errors.NamingError:
        return False
    return "released" in parse_meta(metadata)


def claim_token(ns: Any, schedule: str, token: int, by: str, name: str) -> bool:
    """Try to take leadership token ``token``; True when it is ours now."""
    meta = _meta({"by": by, "name": name, "beat": 0})
    try:
        ns.register(token_name(schedule, token), DATA_URI, safe=True, metadata=meta)
        return True
    except Pyro5.errors.NamingError:
        return False


def beat(ns: Any, schedule: str, token: int, by: str, name: str, count: int, released: bool = False) -> None:
    """Show the holder of ``token`` alive (or ``released``); NamingError when the token is gone."""
    meta = _meta({"by": by, "name": name, "beat": count})
    ns.set_metadata(token_name(schedule, token), meta | ({"released:1"} if released else set()))


def remove_tokens(ns: Any, schedule: str, tokens: Iterable[int]) -> None:
    """Forget superseded tokens."""
    for token in tokens:
        ns.remove(token_name(schedule, token))


@dataclass(frozen=True)
class Watermark:
    """A schedule's newest decided tick, newest fired tick and that run's status (ISO strings)."""

    tick: str = ""
    fire: str = ""
    status: str = ""
    by: str = ""


def read_watermark(ns: Any, schedule: str) -> Watermark | None:
    """The schedule's watermark entry, or None when the name server has none."""
    try:
        _, metadata = ns.lookup(last_name(schedule), return_metadata=True)
    except Pyro5.errors.NamingError:
        return None
    m = parse_meta(metadata)
    return Watermark(m.get("tick", ""), m.get("fire", ""), m.get("status", ""), m.get("by", ""))


def write_watermark(ns: Any, schedule: str, mark: Watermark) -> None:
    """Create or replace the watermark entry, unless it already shows a newer tick.

    The comparison keeps a stale writer (a leader that was paused) from moving it back; what a
    lost race between the read and the write costs is only a refused claim later.
    """
    held = read_watermark(ns, schedule)
    if held is not None and held.tick > mark.tick:
        return
    ns.register(last_name(schedule), DATA_URI, safe=False, metadata=_meta(asdict(mark)))
