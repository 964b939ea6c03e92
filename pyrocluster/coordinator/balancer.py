"""Pure choices of the dispatcher: which worker gets the next batch, and how big it is.

Two rules keep a job of tiny calls from fragmenting into thousands of one-call round trips on a
large cluster, while calls that take real time still spread over every free slot:

* what a call costs is learnt per task from every worker's replies (:class:`CallCost`), so a
  worker seen for the first time starts at the batch size the others reached, not at 1;
* a call is *cheap* when it runs under ``CHEAP_CALL_S`` on its worker: for such
  calls a batch goes out full-size rather than split over every free slot, and at most
  ``CHEAP_IN_FLIGHT`` batches are out at once: the others wait for a reply and ride along in the
  next batch. The coordinator's cost per batch then stays amortised however many workers there
  are. Nothing waits when no batch is out, so one call at a time goes at once;
* a long queue of cheap calls still keeps at most :func:`most_in_flight` batches out, and those
  batches go to the same few workers (:func:`first_look`): see there for why and what it buys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

MIN_BATCH = 1
MAX_BATCH = 2048
"""Most calls sent in one batch."""
TARGET_BATCH_S = 0.01
"""A batch should take about this long on the worker: long enough to hide the round trip."""
CHEAP_CALL_S = 0.0002
"""Worker time per call below which spreading calls over more workers costs more than it saves
(a batch's round trip and the coordinator's work for it are each worth more than this)."""
CHEAP_IN_FLIGHT = 2
"""Batches of cheap calls of one task in flight at once (enough to keep the coordinator busy),
unless the queue fills a batch or holds ``CHEAP_ENOUGH`` calls (then up to :func:`most_in_flight`)."""
REPLY_OVERDUE_S = 0.5
"""A cheap task with batches out and no reply for this long has them stuck on stalled workers or
on calls far slower than usual (a full batch of cheap calls comes back in 15-100 ms): nothing holds
its queue any more, so those batches slow only themselves until they end or their workers' probes
set them aside."""
COORDINATOR_CALL_S = 5e-6
"""The coordinator's own CPU per call of a batch (encoding it, sending, reading the reply,
settling the future): about 5 us (4.3-6.4 us a call in a ``map`` of ``add`` at 2 workers,
``bench/costs.py``)."""
CHEAP_ENOUGH = 256
"""Cheap calls that go out as a batch of their own even while ``CHEAP_IN_FLIGHT`` batches are out:
enough to amortise a batch. A map's last, partial batch used to wait for a reply while slots sat
idle (W1: the last 1,565 of 20,000 ``add`` held 20-30 ms behind two full batches); fewer calls
than this still wait and ride along in the next batch."""
GROWTH = 4
"""Most a batch size grows in one step, so one lucky batch cannot make the next one huge."""
CHEAP_GROWTH = 16
"""The same for calls seen to run under ``CHEAP_CALL_S``: a fresh coordinator's batches of tiny
calls reach ``MAX_BATCH`` in 3 round trips (1, 16, 256, 2048) rather than 6, the ramp every
``submit`` of a job of tiny tasks pays, while a lucky first call of a long task still grows by 4."""
CONCURRENT_SERVICES = frozenset({"crawl"})
"""Services whose worker runs all the calls of a batch at once (the crawl: one event loop)."""
CONCURRENT_BATCHES_PER_WORKER = 4
"""For those services, a batch holds at most 1/this of the worker's slots (see :func:`concurrent_size`)."""


class Candidate(Protocol):
    """What the balancer needs to know of a worker."""

    name: str

    def room(self, service: str, now: float) -> int: ...

    def free_slots(self, service: str) -> int: ...

    def free_for(self, ask: Mapping[str, float]) -> float: ...


C = TypeVar("C", bound=Candidate)


class Sized(Protocol):
    """A worker's slot counts."""

    def slots(self, service: str) -> int: ...


def choose(
    candidates: Sequence[C],
    service: str,
    now: float,
    turn: int = 0,
    ask: Mapping[str, float] | None = None,
    ceiling: int | None = None,
) -> C | None:
    """The candidate with the most free slots for ``service`` among those we may still send to.

    Free slots count the work other coordinators hold there (the workers' reported load), so
    "most free" stays true with several jobs. A call that asks resources ranks workers by how
    many more such calls their free resources hold, free slots breaking ties. Ties go to the
    first from position ``turn`` (taken modulo the count): a caller that advances ``turn``
    spreads equal workers round robin. None when none has room.

    ``ceiling`` is the most free slots any candidate can have (the largest slot count among
    them): the scan stops at the first candidate that has that many free, since no later one can
    beat it. The choice is the same; only its cost changes: O(1) rather than O(workers) while most
    workers are idle (a lone ``submit`` on 128 one-slot workers scanned all 128, about 40 us).
    """
    best: C | None = None
    best_free: tuple[float, int] = (0.0, 0)
    n = len(candidates)
    start = turn % n if n else 0
    stop_at = None if ask or ceiling is None else ceiling
    for i in range(n):
        cand = candidates[(start + i) % n]
        if cand.room(service, now) <= 0:
            continue
        free = (cand.free_for(ask) if ask else 0.0, cand.free_slots(service))
        if best is None or free > best_free:
            best, best_free = cand, free
            if stop_at is not None and free[1] >= stop_at:
                break
    return best


def most_slots(candidates: Sequence[Sized], service: str) -> int:
    """The most free slots for ``service`` any of ``candidates`` can have: its largest slot count."""
    return max((c.slots(service) for c in candidates), default=0)


def near(candidates: Sequence[C], holder: str | None, service: str, now: float) -> C | None:
    """The worker that holds a call's big argument when it has a free slot: it runs the call
    with no transfer. None otherwise (a soft preference: the freest worker takes the call and
    fetches the value, rather than the call waiting for the holder)."""
    if holder is None:
        return None
    for cand in candidates:
        if cand.name == holder:
            return cand if cand.room(service, now) > 0 and cand.free_slots(service) > 0 else None
    return None


def share(queued: int, free_slots_total: int) -> int:
    """Calls per batch that still spread ``queued`` calls over every free slot."""
    return max(1, math.ceil(queued / max(1, free_slots_total)))


def concurrent_size(queued: int, slots: int, limit: int = MAX_BATCH) -> int:
    """Calls per batch of a service whose worker runs a batch's calls at once (one batch per choice).

    Splitting such calls over free slots buys no parallelism (the worker runs them together
    anyway) and costs a round trip per call: the crawl sent one page per batch, and the
    coordinator's and the worker's work per batch cost more CPU than fetching the page. The cap
    (a quarter of the worker's slots) keeps several batches out per worker, so one answers while
    another is under way, and a slow page holds back only a few others' replies. ``limit`` is
    the dispatcher's largest batch (1 turns batching off).

    The figure it buys (with the crawl's rounds of 4): the W3 crawl (3,000 pages from nginx, two
    local workers) used 0.79-0.94 ms of CPU a page against 1.19-1.47 ms one page per batch, at
    1,000-1,600 pages/s against 670-940 (same run, interleaved, load 10 on 2 cores).
    """
    return max(MIN_BATCH, min(queued, slots // CONCURRENT_BATCHES_PER_WORKER, limit))


def _grown(size: int, per_call_s: float, limit: int) -> int:
    """The next batch size after learning ``per_call_s``: towards TARGET_BATCH_S, at most
    ``GROWTH`` times a step (``CHEAP_GROWTH`` for cheap calls)."""
    ideal = TARGET_BATCH_S / max(per_call_s, 1e-7)
    step = CHEAP_GROWTH if per_call_s < CHEAP_CALL_S else GROWTH
    return int(max(MIN_BATCH, min(limit, ideal, size * step)))


@dataclass
class CallCost:
    """Worker time per call of one task, learnt from every worker's replies.

    It uses the time each call ran on its worker (the reply's ELAPSED_MS), not the round trip:
    the round trip of a small batch is mostly the wire and the coordinator's own queue, which
    would make tiny calls look slow and keep their batches tiny.
    """

    per_call_s: float | None = None
    size: int = 1
    """The batch size that cost suggests (what a new worker's sizer starts from)."""
    limit: int = MAX_BATCH
    heard_at: float = 0.0
    """When a reply of this task last came, or its first batch went out with none out (the
    dispatcher's clock): how long its batches out have gone unanswered (:func:`most_in_flight`)."""

    def observe(self, calls: int, worked_s: float) -> None:
        """Learn from a reply to a batch of ``calls`` that ran ``worked_s`` in all on its worker."""
        if calls <= 0:
            return
        sample = max(0.0, worked_s) / calls
        self.per_call_s = sample if self.per_call_s is None else 0.7 * self.per_call_s + 0.3 * sample
        self.size = _grown(max(self.size, calls), self.per_call_s, self.limit)

    @property
    def cheap(self) -> bool:
        """True once calls are known to run under CHEAP_CALL_S each."""
        return self.per_call_s is not None and self.per_call_s < CHEAP_CALL_S


def cost_key(requirement: Sequence[object]) -> tuple[str, str]:
    """``(service, task)`` of a requirement: calls of one task cost alike, tasks of a service do not."""
    return (str(requirement[0]), str(requirement[2]))


def most_in_flight(cost: CallCost) -> int:
    """Most batches of a cheap task out at once, however many calls wait.

    A batch of cheap calls costs the coordinator about as much as it costs its worker, so the
    coordinator, not the workers, sets the pace: ``CHEAP_IN_FLIGHT`` batches keep it busy, plus
    one per ``COORDINATOR_CALL_S`` a call runs on its worker (the workers together then run calls
    as fast as the coordinator sends them). More batches than that buy nothing; on workers that
    share cores (the scale curve: 64 one-slot workers on 2 cores) they cost the coordinator and
    every worker CPU, because a map's chunks of 1,024 calls went each to a worker of its own as
    they came, 10-13 batches in flight instead of 2-3, and twice as many batches a map.
    For ``add`` (~1-5 us a call) this is 3; at 150 us a call, 32.
    """
    per_call_s = cost.per_call_s or 0.0
    return CHEAP_IN_FLIGHT + math.ceil(per_call_s / COORDINATOR_CALL_S)


def counts_full(cost: CallCost | None, calls: int) -> bool:
    """Whether a batch of ``calls`` counts against :func:`most_in_flight`: one of a task of
    unknown cost, or as big as a batch :func:`_held` lets go (``CHEAP_ENOUGH`` calls, or the
    size the task's cost suggests when that is smaller).

    A ``map``'s first chunks (1, 2, 4 ... calls, so that its first results come at once) go as
    batches of 1 and 2 calls: counted, they held its first full batches back, the slots idle
    until a reply was read."""
    return cost is None or calls >= min(cost.size, CHEAP_ENOUGH)


def _held(
    cost: CallCost, queued: int, in_flight: int, size: int, now: float | None, full: int | None = None
) -> bool:
    """Cheap calls wait for a reply while one came within ``REPLY_OVERDUE_S`` before ``now``
    (None: whenever) and ``most_in_flight`` batches that count (:func:`counts_full`: ``full`` of
    the ``in_flight``; None: all of them) are out, or ``CHEAP_IN_FLIGHT`` batches are out and
    the queue would neither fill a batch of ``size`` nor make one of ``CHEAP_ENOUGH``. Past
    that silence the batches out are stuck (a stalled worker, a call far slower than its task's
    usual): the rest, however few, go around them."""
    if not cost.cheap or in_flight < CHEAP_IN_FLIGHT:
        return False
    if now is not None and now - cost.heard_at >= REPLY_OVERDUE_S:
        return False
    return queued < min(size, CHEAP_ENOUGH) or (in_flight if full is None else full) >= most_in_flight(cost)


def hold(
    cost: CallCost, queued: int, in_flight: int, now: float | None = None, full: int | None = None
) -> bool:
    """True when cheap calls should wait for a reply (:func:`_held`; checked before choosing a
    worker, so a held call costs O(1))."""
    return _held(cost, queued, in_flight, cost.size, now, full)


def first_look(cost: CallCost | None, turn: int, home: int) -> int:
    """Where :func:`choose` starts looking among equally free workers: ``home``, a place fixed for
    this coordinator, for calls known to be cheap; ``turn`` (which advances per batch) otherwise.

    Calls that take real time spread over every free worker in turn. Cheap calls gain nothing
    from reaching more workers (the coordinator sets their pace, :func:`most_in_flight`), and a
    worker that ran the last batch answers the next one sooner and with less CPU: its threads are
    awake and its memory in cache, where a worker that idled since the last round must be woken.
    So their few batches go to the first free workers from ``home``. Each coordinator has its own
    ``home``, so several coordinators' cheap calls land on different workers.

    What it changes, with :func:`most_in_flight` (the scale curve, one-slot workers on 2 cores):
    20,000 single ``submit``s of ``add`` reach 3-5 workers instead of 64-93, as on 2 workers;
    the workers' CPU per submit at 128 workers, 9.5-22 us against 12-27 on the old rules under
    load (BENCHMARKS.md, "The scale curve's map").
    """
    return home if cost is not None and cost.cheap else turn


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
        self.size = _grown(self.size, self.per_call_s, self.limit)

    def next_size(
        self,
        queued: int,
        free_slots_total: int,
        cost: CallCost | None = None,
        in_flight: int = 0,
        now: float | None = None,
        full: int | None = None,
    ) -> int:
        """Size of the next batch for ``queued`` waiting calls; 0: hold them for now.

        ``cost`` is the task's shared estimate, ``in_flight`` the batches of that task out now and
        ``full`` how many of them count against the cap (:func:`counts_full`). Cheap calls are
        held as :func:`hold` says; a reply will come and take them.
        """
        size = self.size
        if cost is not None and (self.per_call_s is None or cost.cheap):
            # A worker new to us starts where the others are; cheap calls go at the size every
            # worker's batches taught (one worker's own batches are too few to learn from).
            size = min(self.limit, max(size, cost.size))
        if cost is not None and cost.cheap:
            if _held(cost, queued, in_flight, size, now, full):
                return 0
            return max(MIN_BATCH, min(size, queued))
        return max(MIN_BATCH, min(size, share(queued, free_slots_total), queued))
