"""The order in which a worker starts the batches waiting for its slots: fair by calls (SPEC 5.6).

Higher priority first. Between senders (coordinators), the one that has had the fewest calls
started goes next, whatever the size of its batches: a batch of 2,048 calls is charged 2,048,
a batch of one call is charged one. Within one sender, first in, first out.

The counts are kept relative to a *virtual time* ``V``, the count of the sender served last:
a sender that starts waiting is counted from ``V`` at least, so time it spent away earns it no
credit (it shares from now on, it does not take back what others ran while it had nothing
waiting), and a sender that just ran a large batch stays charged for it when it comes back.
A sender is forgotten once it has nothing waiting and ``V`` has caught up with its count, so the
state is bounded by the senders of the last moments.

Pure bookkeeping: no threads, no sockets, no clock (time plays no part, only calls started).
The charge is a number of calls; asks of other sizes (resources, SPEC 10) can be charged the
same way, and a ``fits`` check would only narrow the candidates of :meth:`AdmissionOrder.pop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)  # compared by identity: list.remove finds the very entry
class _Waiting(Generic[T]):
    sender: str
    priority: int
    size: int
    seq: int
    item: T


class AdmissionOrder(Generic[T]):
    """Waiting items of several senders; :meth:`pop` gives the one to start next."""

    def __init__(self) -> None:
        self._waiting: list[_Waiting[T]] = []
        self._seq = 0
        self._clock = 0
        """Virtual time: the started-calls count of the sender served last (never goes back)."""
        self._started: dict[str, int] = {}
        """Calls started per sender, counted from the virtual time it joined at."""
        self._queued: dict[str, int] = {}
        """Items waiting per sender."""

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, sender: str, priority: int, size: int, item: T) -> None:
        """Add ``item`` of ``size`` calls from ``sender`` (higher ``priority`` starts first)."""
        if sender not in self._queued:  # it starts waiting: time away earns no credit
            self._started[sender] = max(self._started.get(sender, self._clock), self._clock)
            self._queued[sender] = 0
        self._queued[sender] += 1
        self._waiting.append(_Waiting(sender, priority, max(1, size), self._seq, item))
        self._seq += 1

    def pop(self) -> T | None:
        """Remove and return the item to start next, or None when nothing waits; charge its sender."""
        if not self._waiting:
            return None
        top = max(w.priority for w in self._waiting)
        started = self._started
        best = min(
            (w for w in self._waiting if w.priority == top),
            key=lambda w: (started[w.sender], w.seq),
        )
        self._unqueue(best)
        self._charge(best.sender, started[best.sender], best.size)
        return best.item

    def start_now(self, sender: str, size: int) -> None:
        """Charge ``sender`` for ``size`` calls that start at once: nothing of anyone waits.

        The same as :meth:`push` then :meth:`pop`, without the queue (the path of every batch
        that finds a free slot; a third of its cost).
        """
        self._charge(sender, max(self._started.get(sender, self._clock), self._clock), max(1, size))

    def _charge(self, sender: str, count: int, size: int) -> None:
        self._clock = max(self._clock, count)
        self._started[sender] = count + size
        if len(self._started) > 1:  # a sender alone is never forgotten early
            self._forget_idle()

    def remove(self, item: T) -> bool:
        """Drop a waiting ``item`` (identity), charging nothing; False when it is not waiting."""
        for w in self._waiting:
            if w.item is item:
                self._unqueue(w)
                self._forget_idle()
                return True
        return False

    def _unqueue(self, w: _Waiting[T]) -> None:
        self._waiting.remove(w)
        left = self._queued[w.sender] - 1
        if left:
            self._queued[w.sender] = left
        else:
            del self._queued[w.sender]

    def _forget_idle(self) -> None:
        """Drop senders with nothing waiting whose count the virtual time has reached."""
        stale = [s for s, n in self._started.items() if n <= self._clock and s not in self._queued]
        for sender in stale:
            del self._started[sender]
