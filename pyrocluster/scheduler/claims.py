"""A tick's claim and its run's end, in both places they are kept: the claims folder and the name server.

A scheduler wins a tick only when it wins both compare-and-sets: the claim file (:mod:`ledger`,
shared by the schedulers that share a directory, never forgotten by a name-server restart) and
the name-server entry (:mod:`store`, shared by every scheduler of the cluster). The file comes
first; when the name server then refuses (a scheduler that shares no directory with us decided
the tick), our file claim is ended as ``withdrawn`` so that nobody waits for a run of ours.
The end of a run is recorded the same way, and only its recorder writes the ``ticks.jsonl`` line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pyrocluster.scheduler import store
from pyrocluster.scheduler.ledger import Ledger
from pyrocluster.scheduler.store import Claim, End

WITHDRAWN = "withdrawn"
"""End of a file claim whose tick the name server gave to a scheduler elsewhere (no line is written)."""


def claim_tick(ns: Any, ledger: Ledger, schedule: str, tick: datetime, claim: Claim) -> Claim | None:
    """Claim ``tick`` in both places: None when it is ours, else the claim that holds it.

    Raises :class:`ledger.Fenced` when a newer leader exists, and the name server's errors.
    """
    held = ledger.claim(tick, claim)
    if held is not None:
        return held
    try:
        held = store.try_claim(ns, schedule, tick, claim)
    except Exception:  # unknown whether it registered: never leave a run nobody will end
        ledger.end(tick, End(WITHDRAWN, claim.by))
        raise
    if held is not None:
        ledger.end(tick, End(WITHDRAWN, claim.by))
    return held


def end_run(ns: Any | None, ledger: Ledger, schedule: str, tick: datetime, end: End) -> End | None:
    """Record how ``tick``'s run ended: None when this record is ours, else the end recorded first.

    With ``ns`` None (the name server is gone at exit) the claims folder alone decides. Safe to
    call again after a name-server error: our own earlier record counts as ours.
    """
    held = ledger.end(tick, end)
    if held is None and ns is not None:
        held = store.try_end(ns, schedule, tick, end)
    return held


def ended(ns: Any, ledger: Ledger, schedule: str, tick: datetime) -> bool:
    """True when the end of ``tick``'s run is recorded in either place."""
    return ledger.ended(tick) is not None or store.read_end(ns, schedule, tick) is not None


def unended(ns: Any, ledger: Ledger, schedule: str) -> dict[datetime, Claim]:
    """Fired ticks with no recorded end, from both places."""
    found = store.unended(ns, schedule)
    found.update(ledger.unended())
    return {tick: claim for tick, claim in found.items() if ledger.ended(tick) is None}
