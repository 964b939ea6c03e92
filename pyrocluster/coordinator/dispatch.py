"""The dispatcher: queues calls, sends batches to the worker with the most free slots, fails over.

Every decision happens under one condition variable; what the links report goes through the
failover table (``policy.py``) in :class:`~pyrocluster.coordinator.failover.Failover`, its base
class; no socket code here. Each call is settled exactly once
(the first outcome wins), outside the lock. The clock and the links are injected, so decisions
can be tested with no sockets and no sleeping.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from typing import Any

from pyrocluster.config import Settings
from pyrocluster.coordinator import balancer, overdue
from pyrocluster.coordinator.book import DRAINING, GONE, READY, SUSPECT, WorkerRecord
from pyrocluster.coordinator.calls import (
    Batch,
    Call,
    Requirement,
    Resolution,
    TaskFuture,
    asked,
    encode,
    settle,
)
from pyrocluster.coordinator.discovery import Discovery
from pyrocluster.coordinator.failover import Failover
from pyrocluster.coordinator.links import Link, LinkFactory, Transport, WorkerLink, sender_name
from pyrocluster.coordinator.lonelane import LoneLane
from pyrocluster.coordinator.policy import (
    Happened,
)
from pyrocluster.coordinator.queues import WaitingRoom, take
from pyrocluster.coordinator.wire import Wire
from pyrocluster.coordinator.wire.replyspin import ReplySpin
from pyrocluster.errors import ClusterUnreachable, WorkerUnavailable
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.resources import unfit_reason

log = logging.getLogger(__name__)

WAIT_CHECK_S = 0.25
"""How often waiting calls are checked against ``wait``, in seconds."""


class Dispatcher(LoneLane, Failover):
    """Owns the waiting calls, what it knows of each worker, and the discovery and dispatch threads."""

    def __init__(
        self,
        settings: Settings,
        probe_timeout_s: float,
        wait_s: float,
        max_batch: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        link_factory: LinkFactory | None = None,
    ) -> None:
        self.settings = settings
        self.max_batch = max_batch
        self.probe_timeout_s = probe_timeout_s
        self.wait_s = wait_s
        self.max_call_bytes = settings.max_value_bytes
        """Largest encoded arguments of one call (the wire cap has room for serpent's base64)."""
        self.max_batch_bytes = settings.max_message_bytes // 4
        """Most argument bytes of one batch: a call bigger than this travels alone."""
        self.batch_grace_s = overdue.BATCH_GRACE_S
        """What a batch's deadline allows beyond its calls' timeouts (``overdue.py``)."""
        self.sender_id = sender_name()
        self.closed = False
        self.retried = 0
        self.records: dict[str, WorkerRecord] = {}
        self.links: dict[str, Link] = {}
        self._clock = clock
        self._transport: Transport | None = None
        self._make_link = link_factory or self._new_link
        self._costs: dict[tuple[str, str], balancer.CallCost] = {}
        """What a call of each (service, task) costs on its worker."""
        self._out: Counter[tuple[str, str]] = Counter()
        """Batches in flight per (service, task), kept by the records."""
        self._full: Counter[tuple[str, str]] = Counter()
        """Those of them that count against a cheap task's cap (``balancer.counts_full``)."""
        self._tasks_seen: set[str] = set()
        """Every compute task any worker has offered since this dispatcher started."""
        self._turn = 0
        self._home = zlib.crc32(self.sender_id.encode())
        """Where this coordinator's cheap calls look for a worker first (``balancer.first_look``)."""
        self._awake = ReplySpin(settings.reply_spin_s)
        """How a lone call's thread awaits its reply when it is the only call out (``lonelane.py``)."""
        self._cond = threading.Condition()
        self._room = WaitingRoom()
        self._back: list[Call] = []
        """Calls to re-queue at the front of their queues (the next dispatch round puts them there)."""
        self._candidates: dict[Requirement, list[WorkerRecord]] = {}
        self._ceilings: dict[Requirement, tuple[list[WorkerRecord], int]] = {}
        """Per requirement: its candidate list and their largest slot count (``balancer.choose``)."""
        self._last_probe: dict[str, float] = {}
        self._discovery = Discovery(settings, self.update_workers)
        self._thread = threading.Thread(target=self._dispatch_loop, name="dispatch", daemon=True)

    def start(self) -> None:
        """Start dispatching once the first look-up of workers is done."""
        self._thread.start()
        self._discovery.start()

    def _new_link(self, entry: WorkerEntry, owner: Any) -> Link:
        """A link on the transport every link of this dispatcher shares (made with the first)."""
        return WorkerLink(entry, owner, self.settings, self.probe_timeout_s, self._shared_transport())

    def _shared_transport(self) -> Transport:
        with self._cond:
            if self._transport is None:
                self._transport = Transport()
            return self._transport

    def open_channels(self, service: str, per_worker: int, most: int) -> None:
        """Connect ``per_worker`` channels of ``service`` to up to ``most`` of the workers known now,
        on a thread of its own (never the wire's connect pool, which a batch's connect may need).
        They are taken from where this coordinator's cheap calls look first (``balancer.first_look``),
        so a job of cheap calls finds its workers connected however many there are."""
        with self._cond:
            links = list(self.links.values())
            start = self._home % len(links) if links else 0
            links = (links[start:] + links[:start])[:most]

        def connect() -> None:
            for link in links:
                link.open_ahead(service, per_worker)

        threading.Thread(target=connect, name="open-channels", daemon=True).start()

    def wire(self) -> Wire:
        """The multiplexed wire of this dispatcher's links, for other calls to workers (status)."""
        return self._shared_transport().wire

    def waiting_by_service(self) -> dict[str, int]:
        """Calls queued here, not yet on any worker, per service."""
        with self._cond:
            return self._room.counts()

    def unreachable(self) -> ClusterUnreachable | None:
        """Why the name server could not be reached or refused us at the latest look-up, if it did
        (an address Pyro5 cannot use, e.g. ``http://host:port``, is not reachable either)."""
        failure = self._discovery.failure
        if failure is None or isinstance(failure, ClusterUnreachable):
            return failure
        return ClusterUnreachable(
            f"cannot use the name server at {self.settings.ns_address}: {type(failure).__name__}: {failure}"
        )

    def close(self) -> None:
        """Stop everything; calls not settled fail with WorkerUnavailable (each exactly once)."""
        self._discovery.stop()
        err = WorkerUnavailable("the cluster was closed before the call finished")
        out: list[Resolution] = []
        with self._cond:
            self.closed = True
            pending = list(self._room.calls()) + self._back
            for rec in self.records.values():
                pending.extend(c for b in rec.clear() for c in b.calls)
                rec.state = GONE
            for call in pending:
                if not call.done:
                    call.done = True
                    out.append((call, None, err))
            for link in self.links.values():
                link.stop()
            self._room.clear()
            self._cond.notify_all()
        settle(out)
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._discovery.join()
        if self._transport is not None:
            self._transport.close()

    # -- submitting --------------------------------------------------------------------------

    def submit(self, calls: Iterable[Call]) -> None:
        """Encode and queue calls, sending what free slots allow right away (no hop through a thread).

        A call whose arguments cannot be encoded, or are over the message cap, fails at once.
        """
        calls = calls if isinstance(calls, list) else list(calls)
        if len(calls) == 1:
            self.submit_one(calls[0])  # lonelane.py: the short way for a call submitted alone
            return
        ready, refused = encode(calls, self.max_call_bytes)
        if refused:
            settle(refused)
        now = self._clock()
        with self._cond:
            if self.closed:
                raise WorkerUnavailable("the cluster is closed")
            for call in ready:
                if type(call.waiter) is TaskFuture:
                    call.waiter.canceller = self.cancel
                call.queued_at = now
            self._room.add_all(ready, now)
            self._dispatch_ready()

    def cancel(self, calls: Iterable[Call], running: bool = True) -> list[Call]:
        """Cancel calls not yet settled; return those cancelled (each then settles ``CancelledError``).

        A waiting call never runs. With ``running``, a call already on a worker is stopped there
        (``compute.cancel``: a process slot is killed and replaced, a thread slot abandoned) and
        settles at once, without waiting for the worker's answer; without it, such a call is left alone.
        """
        out: list[Resolution] = []
        stop: dict[str, tuple[list[str], set[int]]] = {}
        with self._cond:
            holders = {bid: rec.name for rec in self.records.values() for bid in rec.batches}
            for call in calls:
                if call.done or (call.batch_id and not running):
                    continue
                call.done = True
                out.append((call, None, CancelledError()))
                holder = holders.get(call.batch_id) if call.batch_id else None
                if holder is not None:
                    ids, batches = stop.setdefault(holder, ([], set()))
                    ids.append(str(call.id))
                    batches.add(call.batch_id)
            for name, (call_ids, batch_ids) in stop.items():
                self.links[name].cancel(call_ids, batch_ids)
        settle(out)
        return [call for call, _, _ in out]

    def calls_of(self, waiter: Any) -> list[Call]:
        """Every unsettled call of ``waiter``, waiting or on a worker (to cancel a whole job)."""
        with self._cond:
            found = [c for c in self._room.calls() if c.waiter is waiter and not c.done]
            found += [c for c in self._back if c.waiter is waiter and not c.done]
            for rec in self.records.values():
                for batch in rec.batches.values():
                    found += [c for c in batch.calls if c.waiter is waiter and not c.done]
            return found

    def capacity(self, service: str) -> int:
        """Slots for ``service`` over the workers that take work now."""
        with self._cond:
            return sum(r.entry.slots.get(service, 0) for r in self.records.values() if r.state == READY)

    def in_flight(self) -> int:
        """Calls currently sent to workers."""
        with self._cond:
            return sum(len(b.calls) for r in self.records.values() for b in r.batches.values())

    # -- workers -------------------------------------------------------------------------------

    def update_workers(self, entries: list[WorkerEntry]) -> None:
        """Apply a name-server listing: new workers get links, replaced and departed ones are forgotten."""
        out: list[Resolution] = []
        with self._cond:
            if self.closed:
                return
            listed = {e.name for e in entries}
            for entry in entries:
                if "compute" in entry.uris:
                    self._tasks_seen.update(entry.tasks)
                rec = self.records.get(entry.name)
                if rec is not None and dict(rec.entry.uris) == dict(entry.uris):
                    rec.refresh(entry)
                    continue
                if rec is not None:
                    self._forget(rec, "was replaced by a new registration", out)
                self.records[entry.name] = WorkerRecord(entry, self.max_batch, self._out, self._full)
                self.links[entry.name] = self._make_link(entry, self)
            for name, rec in list(self.records.items()):
                if name not in listed and rec.state in (SUSPECT, DRAINING) and not rec.busy():
                    self._forget(rec, "left the cluster", out)
            self._candidates.clear()
            self._dispatch_ready()
        settle(out)

    def _forget(self, rec: WorkerRecord, reason: str, out: list[Resolution]) -> None:
        self._take_back(rec, Happened.CLOSED, reason, out)
        rec.state = GONE
        self.links.pop(rec.name).stop()
        del self.records[rec.name]
        self._last_probe.pop(rec.name, None)

    # -- dispatching -------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        with self._cond:
            while not self.closed:
                self._dispatch_ready()
                expired = self.expire_waiting() + self.expire_overdue()
                if expired:
                    self._cond.release()
                    try:
                        settle(expired)
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait(WAIT_CHECK_S)

    def _candidates_for(self, req: Requirement) -> list[WorkerRecord]:
        cands = self._candidates.get(req)
        if cands is None:
            cands = self._candidates[req] = [
                r for r in self.records.values() if r.state == READY and r.offers(req)
            ]
        return cands

    def _ceiling(self, req: Requirement, cands: list[WorkerRecord]) -> int:
        """The largest slot count among ``cands``, kept as long as that candidate list is."""
        known = self._ceilings.get(req)
        if known is None or known[0] is not cands:
            known = self._ceilings[req] = (cands, balancer.most_slots(cands, req[0]))
        return known[1]

    def _dispatch_ready(self) -> None:
        """Send batches while some worker has room: by priority, then requirements in turn."""
        room = self._room
        if not self._back and room.empty():  # nothing waits (a lone call's reply): nothing to send
            return
        now = self._clock()
        if self._back:  # re-queued calls go first, in their original order
            for call in reversed(self._back):
                call.queued_at = now
                room.add(call, now, front=True)
            self._back.clear()
        for level in room.levels():
            progress = True
            while progress:
                progress = False
                for req in list(level):
                    queue = room.waiting(req)
                    if queue is None:
                        continue
                    cands = self._candidates_for(req)
                    if not cands:
                        continue
                    service = req[0]
                    key = balancer.cost_key(req)
                    cost = self._costs.setdefault(key, balancer.CallCost(limit=self.max_batch))
                    if balancer.hold(cost, len(queue), self._out[key], now, self._full[key]):
                        continue  # cheap calls, enough batches out: a reply takes them
                    start = balancer.first_look(cost, self._turn, self._home)
                    rec = balancer.near(cands, queue[0].near, service, now) or balancer.choose(
                        cands, service, now, start, asked(req), self._ceiling(req, cands)
                    )
                    if rec is None:
                        continue
                    if service in balancer.CONCURRENT_SERVICES:
                        slots = rec.entry.slots.get(service, 0)
                        size = balancer.concurrent_size(len(queue), slots, self.max_batch)
                    else:
                        # Only calls spread over every free slot need the total (O(workers) to count).
                        free = (
                            0
                            if cost.cheap
                            else sum(max(0, min(c.room(service, now), c.free_slots(service))) for c in cands)
                        )
                        size = rec.sizers[service].next_size(
                            len(queue), free, cost, self._out[key], now, self._full[key]
                        )
                    calls = take(queue, size, self.max_batch_bytes)
                    if calls:
                        self._send(rec, Batch(req, calls))
                        room.served(req, now)
                        progress = True

    def _send(self, rec: WorkerRecord, batch: Batch) -> None:
        for call in batch.calls:
            call.attempts += 1
            call.batch_id = batch.id
        now = self._clock()
        cost = self._costs.get(batch.cost_key)
        if cost is not None and not self._out[batch.cost_key]:  # none out: replies awaited from now
            cost.heard_at = now
        batch.full = balancer.counts_full(cost, len(batch.calls))
        rec.add(batch)
        batch.deadline = now + self._span(batch)
        self._turn += 1  # equally free workers take turns
        self.links[rec.name].send(batch)

    def expire_waiting(self) -> list[Resolution]:
        """End calls that got no worker within ``wait``: no live worker offers their requirement,
        or none of those has given it a slot (and none holds work of ours that would free one)."""
        now = self._clock()
        expired: list[Resolution] = []
        for req in self._room.requirements():
            since = self._room.since.get(req, now)
            cands = self._candidates_for(req)
            unknown = self._offered_nowhere(req[2]) if req[0] == "compute" and not cands else None
            if unknown is None and (now - since < self.wait_s or any(r.busy() for r in cands)):
                continue
            queue = self._room.waiting(req)
            if queue is None:
                continue
            keep: deque[Call] = deque()
            for call in queue:
                if call.done:
                    continue
                if unknown is not None:
                    call.done = True
                    expired.append((call, None, WorkerUnavailable(unknown)))
                elif now - max(since, call.queued_at) >= self.wait_s:
                    call.done = True
                    why = f"{self._no_worker(req, call)} (waited {self.wait_s:g} s)"
                    expired.append((call, None, WorkerUnavailable(why)))
                else:
                    keep.append(call)
            self._room.replace(req, keep)
        return expired

    def _span(self, batch: Batch) -> float:
        return overdue.span(batch.timeouts, self.batch_grace_s)

    def expire_overdue(self) -> list[Resolution]:
        """Take back, as ``TIMED_OUT``, every batch past its deadline (``overdue.py``): its worker
        may answer its probes, but a batch it does not answer must not hold its calls for ever."""
        now = self._clock()
        out: list[Resolution] = []
        for rec in list(self.records.values()):
            for batch in [b for b in rec.batches.values() if b.deadline <= now]:
                if overdue.extends(batch.moved, rec.others > 0):
                    batch.moved += 1
                    batch.deadline = now + self._span(batch)
                elif batch.id in rec.batches:  # not taken back with an earlier one
                    why = f"no reply to a batch within its deadline ({self._span(batch):g} s)"
                    self._batch_ended(rec, batch, Happened.TIMED_OUT, why, out)
        return out

    def _offered_nowhere(self, task: str) -> str | None:
        """Why a compute task fails at once: workers are known and none has ever offered it (a typo,
        a module not loaded); None while it may yet come (no worker known, or its workers left)."""
        seen = self._tasks_seen
        if not seen or task in seen:
            return None
        close = difflib.get_close_matches(task, seen, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; the workers offer {len(seen)} tasks"
        return f"no live worker offers compute task {task!r}{hint}"

    def _no_worker(self, req: Requirement, call: Call) -> str:
        if call.last_error:
            return call.last_error
        service, tags, task, priority, ask = req
        what = f"{service} task {task!r}" if service == "compute" else service
        tagged = f" with tags {sorted(tags)}" if tags else ""
        if self._candidates_for(req):
            return f"no slot became free for {what}{tagged}"
        wanted = asked(req)
        if wanted:
            plain = (service, tags, task, priority, ())
            totals = [
                dict(r.entry.resources) for r in self.records.values() if r.state == READY and r.offers(plain)
            ]
            reason = unfit_reason(task, wanted, totals) if totals else None
            if reason:
                return reason
        return f"no live worker offers {what}{tagged}"
