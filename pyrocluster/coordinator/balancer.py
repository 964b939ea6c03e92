"""Pure choices of the dispatcher: which worker gets the next batch, and how big it is."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

MIN_BATCH = 1
MAX_BATCH = 2048
"""Most calls sent in one batch."""
TARGET_BATCH_S = 0.01
"""A batch should take about this long on the worker: long enough to hide the round trip."""


class Candidate(Protocol):
    """What the balancer needs to know of a worker."""

    name: str

    def room(self, service: str, now: float) -> int: ...

    def free_slots(self, service: str) -> int: ...


C = TypeVar("C", bound=Candidate)


def choose(candidates: Iterable[C], service: str, now: float) -> C | None:
    """The candidate with the most free slots for ``service`` among those we may still send to.

    Free slots count the work other coordinators hold there (the workers' reported load), so
    "most free" stays true with several jobs; ties go by name; None when none has room.
    """
    best: C | None = None
    best_free = 0
    for cand in candidates:
        if cand.room(service, now) <= 0:
            continue
        free = cand.free_slots(service)
        if best is None or free > best_free or (free == best_free and cand.name < best.name):
            best, best_free = cand, free
    return best


def share(queued: int, free_slots_total: int) -> int:
    """Calls per batch that still spread ``queued`` calls over every free slot."""
    return max(1, math.ceil(queued / max(1, free_slots_total)))


@dataclass
class BatchSizer:
    """Adaptive batch size for one worker and service: grow while batches are quick, shrink when slow."""

    size: int = 1
    per_call_s: float | None = None
    limit: int = MAX_BATCH
    """Largest batch allowed (1 turns batching off)."""

    def observe(self, calls: int, elapsed_s: float) -> None:
        """Learn from a finished batch of ``calls`` that took ``elapsed_s`` on the wire."""
        if calls <= 0:
            return
        sample = elapsed_s / calls
        self.per_call_s = sample if self.per_call_s is None else 0.7 * self.per_call_s + 0.3 * sample
        ideal = TARGET_BATCH_S / max(self.per_call_s, 1e-7)
        # Grow by at most 4x a step so one lucky batch cannot make the next one huge.
        self.size = int(max(MIN_BATCH, min(self.limit, ideal, self.size * 4)))

    def next_size(self, queued: int, free_slots_total: int) -> int:
        """Size of the next batch for ``queued`` waiting calls."""
        return max(MIN_BATCH, min(self.size, share(queued, free_slots_total), queued))
