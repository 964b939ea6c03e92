"""When a batch in flight is overdue: the longest a live worker may take to answer it (pure).

A worker that answers its liveness probes but never answers a batch (a bug, a hostile worker, a
reply lost on a path that stays up) would otherwise hold that batch's calls for ever. A worker
runs the calls of a batch one after another, each stopped at its own timeout (a task holding the
interpreter lock is killed half a second later and its slot replaced), so a batch that started
is answered within the sum of its calls' timeouts plus a kill each; ``BATCH_GRACE_S`` covers the
reply's transfer and a wait in the worker's admission queue. While the worker reports work of
other coordinators, ours may be queued behind theirs: the deadline then moves on by the same span,
at most ``QUEUE_SPANS`` times. Past its deadline a batch counts as ``TIMED_OUT`` (policy.py: its
calls go elsewhere, the worker is set aside and probed again).
"""

from __future__ import annotations

from collections.abc import Iterable

PER_CALL_GRACE_S = 1.0
"""Seconds allowed per call beyond its timeout (the worker's kill and the slot's replacement)."""
BATCH_GRACE_S = 10.0
"""Seconds allowed per batch beyond its calls' (the reply's transfer, a wait in the queue)."""
QUEUE_SPANS = 4
"""How many times the deadline moves on while the worker holds other coordinators' work."""


def span(timeouts: Iterable[float], grace_s: float = BATCH_GRACE_S) -> float:
    """Seconds a live worker may take to answer a batch whose calls have these timeouts."""
    timeouts = timeouts if isinstance(timeouts, (list, tuple)) else list(timeouts)
    return sum(timeouts) + PER_CALL_GRACE_S * len(timeouts) + grace_s


def extends(moved: int, others_hold_work: bool) -> bool:
    """True when a batch past its deadline gets another span (it may have waited in the queue)."""
    return others_hold_work and moved < QUEUE_SPANS
