"""A call submitted alone, the short way: one call's steps in the dispatcher without the general
passes a submission of many calls needs, and its successful reply applied in one step.

``cluster.submit(...).result()`` one call at a time is how Pyro5 users work, and the coordinator's
CPU for it was ~130 us of Python spread over ~270 function calls, none above 10 us (BENCHMARKS.md,
"The lone call's coordinator CPU"). Most of those calls are the general path's passes over a
list of calls, a list of outcomes, a list of resolutions. Here, for one call:

* ``submit_one``: its arguments encoded, and, when nothing else waits and a worker has a
  free slot for it, the call booked there as a batch of one (the same ``Batch`` in the same
  worker record, so failover, cancel, the overdue deadline, the in-flight counts and ``status``
  see it as before) and handed to the link (the direct route when the worker lends a slot);
* ``_lone_ok``: a reply that carries one successful outcome for a batch of one: the batch
  retired, the worker's and the task's costs learnt, the future settled, with no per-outcome
  loop, no table, no resolution list.

Everything else takes the ordinary path: arguments that cannot be encoded or are too big, calls
already waiting (the call must not pass them: priorities and fairness), no worker with room (it
waits in the queue), any outcome that is not a success (the failover table decides), a reply
the books cannot take.

The figure it buys: the dispatcher and the future of a lone call (``submit``, the reply,
``result()``, a fake link) 31-32 -> 28.3-28.6 us of CPU, and about 5-10 us of the coordinator's
150-200 us for a whole lone call under load (BENCHMARKS.md, "The lone lane").
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from pyrocluster.coordinator import balancer
from pyrocluster.coordinator.book import WorkerRecord
from pyrocluster.coordinator.calls import (
    Batch,
    Call,
    Requirement,
    Resolution,
    TaskFuture,
    asked,
    encode_one,
    settle,
)
from pyrocluster.coordinator.queues import WaitingRoom
from pyrocluster.coordinator.replies import Outcome
from pyrocluster.coordinator.wire.replyspin import ReplySpin
from pyrocluster.errors import WorkerUnavailable

log = logging.getLogger(__name__)

EXPEDITE_QUEUE = 16
"""Longest queue a waiting call is taken out of when its caller blocks on it: a few threads each
calling at once; a longer queue goes out in batches soon anyway, and its calls keep their turns."""


class LoneLane:
    """The dispatcher's half for a call submitted alone (a base class of
    :class:`~pyrocluster.coordinator.dispatch.Dispatcher`, which owns the state below)."""

    closed: bool
    max_call_bytes: int
    _clock: Callable[[], float]
    _cond: threading.Condition
    _back: list[Call]
    _room: WaitingRoom
    _turn: int
    _home: int
    _awake: ReplySpin
    _costs: dict[tuple[str, str], balancer.CallCost]
    _out: Counter[tuple[str, str]]
    _full: Counter[tuple[str, str]]
    _candidates_for: Callable[[Requirement], list[WorkerRecord]]
    _ceiling: Callable[[Requirement, list[WorkerRecord]], int]
    _dispatch_ready: Callable[[], None]
    _record_of: Callable[[Any], WorkerRecord | None]
    _fail_unsettled: Callable[[Any, Batch, list[Resolution]], None]
    _learn: Callable[[WorkerRecord, Batch, float, float], None]
    _send: Callable[[WorkerRecord, Batch], None]
    cancel: Callable[..., list[Call]]

    def submit_one(self, call: Call) -> None:
        """``Dispatcher.submit`` of ``[call]``: sent at once when nothing waits and a worker has room."""
        refusal = encode_one(call, self.max_call_bytes)
        if refusal is not None:
            settle([refusal])  # cannot be sent: it ends at once, with the reason
            return
        now = self._clock()
        with self._cond:
            if self.closed:
                raise WorkerUnavailable("the cluster is closed")
            future = call.waiter if type(call.waiter) is TaskFuture else None
            if future is not None:
                future.canceller = self.cancel
            call.queued_at = now
            batch = self._send_alone(call, now) if not self._back and self._room.empty() else None
            if batch is None:
                if future is not None:
                    future.expediter = self.expedite
                self._room.add_all([call], now)
                self._dispatch_ready()
        if batch is not None and batch.push is not None:
            batch.push()  # written by this thread now that it holds no lock: no wake-up of the loop

    def expedite(self, call: Call) -> None:
        """Its caller blocks on ``call``, submitted alone and waiting in a short queue (no worker
        had room, or it was held to ride in its cheap task's next batch): sent alone now if a
        worker has room and no call of a higher priority waits, read by the caller as any lone
        call. A few threads calling one task at a time then each have a call out, instead of
        waiting for another's reply and then for the loop thread to read theirs."""
        with self._cond:
            if self.closed or call.done or call.attempts or self._back:
                return
            if not self._room.take_out(call, EXPEDITE_QUEUE):
                return
            now = self._clock()
            batch = self._send_alone(call, now, held=False)
            if batch is None:
                self._room.add(call, now, front=True)  # no room: it waits as before
                return
        if batch.push is not None:
            batch.push()

    def _send_alone(self, call: Call, now: float, held: bool = True) -> Batch | None:
        """Book one call with nothing else waiting on the freest worker and send it (the path of
        ``submit().result()`` one at a time); None when it must wait like any other. Under the lock.
        Without ``held``, a cheap task's rule that holds calls for its next batch does not apply."""
        req = call.requirement
        cands = self._candidates_for(req)
        if not cands:
            return None
        batch = Batch(req, [call])
        key = batch.cost_key
        cost = self._costs.get(key)
        if held and cost is not None and balancer.hold(cost, 1, self._out[key], now, self._full[key]):
            return None
        near = balancer.near(cands, call.near, req[0], now) if call.refs else None
        start = balancer.first_look(cost, self._turn, self._home)
        rec = near or balancer.choose(cands, req[0], now, start, asked(req), self._ceiling(req, cands))
        if rec is None:
            return None
        batch.by_sender = True
        if not any(self._out.values()):  # one call at a time: its reply is awaited awake
            batch.awake = self._awake
        self._send(rec, batch)
        return batch

    def _lone_ok(self, link: Any, batch: Batch, load: Any, outcome: Outcome, elapsed_s: float) -> None:
        """A batch of one call came back with that call's success (``Failover.batch_replied``)."""
        call = batch.calls[0]
        _, value, elapsed_ms = outcome
        out: list[Resolution] = []
        with self._cond:
            try:
                rec = self._record_of(link)
                if rec is not None:
                    if rec.retire(batch):
                        self._learn(rec, batch, elapsed_s, elapsed_ms)
                    if load is not None:  # after the retire: the load no longer holds this call
                        rec.observe_load(load)  # (a direct call's reply carries none)
                if not call.done:  # even a stale attempt's success settles the call
                    call.done = True
                    call.worker = rec.name if rec is not None else ""
                    call.elapsed_ms = elapsed_ms
                    out.append((call, value, None))
            except Exception:  # a reply our bookkeeping cannot take: the call fails, never hangs
                log.exception("a reply could not be applied: its calls fail with DecodeError")
                self._fail_unsettled(link, batch, out)
            if self._back or not self._room.empty():
                self._dispatch_ready()
        if out:
            settle(out)
