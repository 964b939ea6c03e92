"""The order in which a worker starts the batches waiting for one of its slots (SPEC 5.6).

Higher priority first; between coordinators of equal priority, round robin: the one served least
recently goes next, and one that just started waiting counts as served just before the latest
start (after those that have waited longer, before the one that was just served). Within one
coordinator, first in, first out. Pure bookkeeping: no threads, no sockets, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Waiting(Generic[T]):
    sender: str
    priority: int
    seq: int
    item: T


class AdmissionOrder(Generic[T]):
    """Waiting items of several senders; :meth:`pop` gives the one to start next."""

    def __init__(self) -> None:
        self._waiting: list[_Waiting[T]] = []
        self._seq = 0
        self._turn = 1  # grows by 2 per start; a newcomer takes the value just below it
        self._last_served: dict[str, int] = {}  # only senders with something waiting

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, sender: str, priority: int, item: T) -> None:
        """Add ``item`` from ``sender`` (higher ``priority`` starts first)."""
        if sender not in self._last_served:
            self._last_served[sender] = self._turn - 1
        self._waiting.append(_Waiting(sender, priority, self._seq, item))
        self._seq += 1

    def pop(self) -> T | None:
        """Remove and return the item to start next, or None when nothing waits."""
        if not self._waiting:
            return None
        top = max(w.priority for w in self._waiting)
        # the oldest item of each top-priority sender, then the sender whose turn it is
        best = min(
            (w for w in self._waiting if w.priority == top),
            key=lambda w: (self._last_served[w.sender], w.seq),
        )
        self._waiting.remove(best)
        self._turn += 2
        if any(w.sender == best.sender for w in self._waiting):
            self._last_served[best.sender] = self._turn
        else:
            del self._last_served[best.sender]
        return best.item

    def remove(self, item: T) -> bool:
        """Drop a waiting ``item`` (identity); False when it is not waiting."""
        for w in self._waiting:
            if w.item is item:
                self._waiting.remove(w)
                if not any(o.sender == w.sender for o in self._waiting):
                    del self._last_served[w.sender]
                return True
        return False
