"""Calls waiting for a worker, one queue per requirement, served by priority then round robin (pure)."""

from __future__ import annotations

import itertools
import operator
from collections import deque
from collections.abc import Iterator

from pyrocluster.coordinator.calls import Call, Requirement

_REQUIREMENT = operator.attrgetter("requirement")
_DONE = operator.attrgetter("done")
_PAYLOAD = operator.attrgetter("payload")


def take(queue: deque[Call], size: int, max_bytes: int) -> list[Call]:
    """The next batch from the head of ``queue``: up to ``size`` unsettled calls (settled ones are
    dropped) whose payloads total under ``max_bytes``; a call that would take the total past it
    stays first in line for the next batch, unless it is the batch's first (it goes alone)."""
    calls = list(map(deque.popleft, itertools.repeat(queue, min(size, len(queue)))))  # a C-level loop
    if not any(map(_DONE, calls)) and sum(map(len, map(_PAYLOAD, calls))) <= max_bytes:
        return calls  # the common batch, checked in C-level passes (payloads are never empty)
    queue.extendleft(reversed(calls))
    calls = []
    nbytes = 0
    while queue and len(calls) < size and nbytes < max_bytes:
        call = queue.popleft()
        if call.done:
            continue
        if calls and nbytes + len(call.payload) > max_bytes:
            queue.appendleft(call)  # a big call goes alone, in the next batch
            break
        calls.append(call)
        nbytes += len(call.payload)
    return calls


class WaitingRoom:
    """Queues of waiting calls by requirement (service, tags, task, priority).

    Higher priorities first; requirements of one priority take turns (the one just served goes
    to the back), so no tag or task waits behind another's backlog.
    """

    def __init__(self) -> None:
        self._queues: dict[Requirement, deque[Call]] = {}
        self._levels: dict[int, deque[Requirement]] = {}
        self._order: list[int] = []
        self.since: dict[Requirement, float] = {}
        """When each requirement last had a batch sent (or first waited): for ``wait`` expiry."""

    def add(self, call: Call, now: float, front: bool = False) -> None:
        """Queue a call (``front``: a re-queued call goes first)."""
        queue = self._queue(call.requirement, now)
        if front:
            queue.appendleft(call)
        else:
            queue.append(call)

    def add_all(self, calls: list[Call], now: float) -> None:
        """Queue calls in order, as :meth:`add` of each (a run of one requirement at once)."""
        for req, run in itertools.groupby(calls, key=_REQUIREMENT):
            self._queue(req, now).extend(run)

    def _queue(self, req: Requirement, now: float) -> deque[Call]:
        queue = self._queues.get(req)
        if queue is None:
            queue = self._queues[req] = deque()
            self.since[req] = now
            level = self._levels.get(req[3])
            if level is None:
                level = self._levels[req[3]] = deque()
                self._order = sorted(self._levels, reverse=True)
            level.appendleft(req)  # never served yet: its turn comes first
        return queue

    def empty(self) -> bool:
        """True when no call waits."""
        return not self._queues

    def levels(self) -> list[deque[Requirement]]:
        """Requirements by priority, highest first; each deque in turn order."""
        return [self._levels[p] for p in self._order]

    def waiting(self, req: Requirement) -> deque[Call] | None:
        """The queue of ``req`` without settled calls at its head; None (and forgotten) when empty."""
        queue = self._queues.get(req)
        if queue is not None:
            while queue and queue[0].done:
                queue.popleft()
            if queue:
                return queue
            self._drop(req)
        return None

    def take_out(self, call: Call, most: int) -> bool:
        """Take ``call`` out of its queue to send it now: True when it waited in a queue of at most
        ``most`` calls and no call of a higher priority waits (it passes none that should go first)."""
        req = call.requirement
        queue = self._queues.get(req)
        if queue is None or len(queue) > most or self._order[0] > req[3]:
            return False
        try:
            queue.remove(call)
        except ValueError:  # sent meanwhile
            return False
        if not queue:
            self._drop(req)
        return True

    def served(self, req: Requirement, now: float) -> None:
        """``req`` had a batch sent: it goes to the back of its priority's turn."""
        self.since[req] = now
        level = self._levels[req[3]]
        if len(level) > 1:
            level.remove(req)
            level.append(req)

    def replace(self, req: Requirement, calls: deque[Call]) -> None:
        """Keep only ``calls`` waiting for ``req``."""
        if calls:
            self._queues[req] = calls
        elif req in self._queues:
            self._drop(req)

    def requirements(self) -> list[Requirement]:
        """Every requirement with waiting calls."""
        return list(self._queues)

    def calls(self) -> Iterator[Call]:
        """Every waiting call (settled ones included)."""
        for queue in self._queues.values():
            yield from queue

    def counts(self) -> dict[str, int]:
        """Unsettled waiting calls per service (what an autoscaler reads as demand)."""
        counts: dict[str, int] = {}
        for req, queue in self._queues.items():
            counts[req[0]] = counts.get(req[0], 0) + sum(1 for call in queue if not call.done)
        return counts

    def clear(self) -> None:
        """Forget every waiting call."""
        self._queues.clear()
        self._levels.clear()
        self._order = []
        self.since.clear()

    def _drop(self, req: Requirement) -> None:
        del self._queues[req]
        self.since.pop(req, None)
        level = self._levels[req[3]]
        level.remove(req)
        if not level:
            del self._levels[req[3]]
            self._order = sorted(self._levels, reverse=True)
