"""Applying the failover table (``policy.py``) to what the links report: replies, failed batches,
probes. The dispatcher (``dispatch.py``) decides where calls go; this is how their attempts end.

Every method runs under the dispatcher's condition variable, or takes it; outcomes are collected
as resolutions and settled outside it.
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
from collections.abc import Callable
from typing import Any

from pyrocluster.coordinator import balancer
from pyrocluster.coordinator.book import DRAINING, GONE, READY, SUSPECT, WorkerRecord
from pyrocluster.coordinator.calls import Batch, Call, Requirement, Resolution, ending, settle, tell_waiters
from pyrocluster.coordinator.links import Link
from pyrocluster.coordinator.policy import EndsAs, Happened, WorkerAction, decide, worker_action
from pyrocluster.coordinator.replies import Outcome, decode_reply, failure_text, ok_columns, shown
from pyrocluster.defaults import PROBE_INTERVAL_S
from pyrocluster.errors import TaskFailed

log = logging.getLogger(__name__)

_ELAPSED = operator.itemgetter(2)
"""An outcome's ELAPSED_MS."""
_DONE = operator.attrgetter("done")


class Failover:
    """The dispatcher's half that applies what happened to a batch or a worker (a base class of
    :class:`~pyrocluster.coordinator.dispatch.Dispatcher`, which owns the state below)."""

    closed: bool
    retried: int
    max_batch: int
    records: dict[str, WorkerRecord]
    links: dict[str, Link]
    _clock: Callable[[], float]
    _cond: threading.Condition
    _back: list[Call]
    _candidates: dict[Requirement, list[WorkerRecord]]
    _costs: dict[tuple[str, str], balancer.CallCost]
    _last_probe: dict[str, float]
    _dispatch_ready: Callable[[], None]
    _lone_ok: Callable[[Any, Batch, Any, Outcome, float], None]

    def _changed(self) -> None:
        """A worker's state or catalog changed: candidates are recomputed."""
        self._candidates.clear()
        self._cond.notify()

    # -- applying the failover table -----------------------------------------------------------

    def _record_of(self, link: Any) -> WorkerRecord | None:
        """The record of the worker a link reports for; None when that link was replaced or forgotten."""
        known = self.links.get(link.name)
        return self.records.get(link.name) if known is not None and known is link else None

    def _apply(
        self, call: Call, happened: Happened, reason: str, value: Any, out: list[Resolution], worker: str
    ) -> None:
        """The table's verdict for one call whose current attempt ended with ``happened``."""
        verdict = decide(happened, call.attempts, call.retries, call.retry_on_error)
        call.last_error = reason
        if verdict.requeue:
            if verdict.costs_attempt:
                self.retried += 1
            else:
                call.attempts -= 1  # this attempt does not count: it is made again
            call.batch_id = 0
            self._back.append(call)
            return
        call.done = True
        call.worker = worker or call.worker
        out.append((call, None, ending(call, verdict.ends_as, reason, value)))

    def _take_back(self, rec: WorkerRecord, happened: Happened, reason: str, out: list[Resolution]) -> None:
        """Re-queue (or end) every call in flight on a worker."""
        for batch in rec.clear():
            for call in batch.calls:
                if not call.done and call.batch_id == batch.id:
                    self._apply(call, happened, f"worker {rec.name} {reason}", None, out, rec.name)
        self.links[rec.name].drop_unsent()

    def _set_aside(self, rec: WorkerRecord, happened: Happened, reason: str, out: list[Resolution]) -> None:
        if rec.state in (GONE, SUSPECT):
            return
        log.warning("worker %s %s: its calls go elsewhere", rec.name, reason)
        rec.state = SUSPECT
        rec.quarantine.set_aside(self._clock())
        link = self.links[rec.name]
        link.abort_calls()
        link.wake()
        self._changed()
        self._take_back(rec, happened, reason, out)

    def _worker_does(self, rec: WorkerRecord, action: WorkerAction) -> None:
        if action is WorkerAction.DRAINING and rec.state == READY:
            rec.state = DRAINING
            self._changed()
        elif action is WorkerAction.FULL:
            rec.answered_busy(self._clock())

    # -- what the links report (called from their threads) -------------------------------------

    def batch_replied(self, link: Any, batch: Batch, reply: Any, elapsed_s: float) -> None:
        """A worker answered a batch: apply each outcome (decoded here, outside the lock)."""
        columns = ok_columns(reply, len(batch.calls))  # the common reply: every call succeeded
        outcomes = decode_reply(reply, len(batch.calls)) if columns is None else None
        if type(outcomes) is list and len(outcomes) == 1 and outcomes[0][0] is None:
            self._lone_ok(link, batch, reply.get("load"), outcomes[0], elapsed_s)  # lonelane.py
            return
        out: list[Resolution] = []
        ended: list[Call] | None = None
        with self._cond:
            try:
                if columns is not None:
                    ended = self._apply_ok(link, batch, reply, columns, elapsed_s)
                    if ended is None:  # a call ended meanwhile: the reply call by call
                        outcomes = list(zip(itertools.repeat(None), *columns))
                if outcomes is not None:
                    self._apply_reply(link, batch, reply, outcomes, elapsed_s, out)
            except Exception:  # a reply our bookkeeping cannot take: its calls fail, none hangs
                log.exception("a reply could not be applied: its calls fail with DecodeError")
                self._fail_unsettled(link, batch, out)
            self._dispatch_ready()
        if ended is not None:
            tell_waiters(ended)
        settle(out)

    def _apply_ok(
        self,
        link: Any,
        batch: Batch,
        reply: dict[str, Any],
        columns: tuple[list[Any], list[float]],
        elapsed_s: float,
    ) -> list[Call] | None:
        """A reply whose every call succeeded, stored straight into the calls (no resolution a
        call): the calls to tell their waiters about; None, having changed nothing, when one of
        the calls ended meanwhile (then :meth:`_apply_reply` takes the reply call by call).
        ``batch_replied`` of 2,048 ``add``: 424-441 ns a call this way, 557-559 call by call."""
        calls = batch.calls
        if any(map(_DONE, calls)):
            return None
        rec = self._record_of(link)
        name = ""
        if rec is not None:
            name = rec.name
            live = rec.retire(batch)  # first: the load tells others' calls from ours still out
            load = reply.get("load")
            if load is not None:  # a direct call's reply carries none
                rec.observe_load(load)
            if live:
                self._learn(rec, batch, elapsed_s, sum(columns[1]))
        for call, value, elapsed_ms in zip(calls, *columns, strict=True):  # one Python pass a call
            call.done = True
            call.worker = name
            call.elapsed_ms = elapsed_ms
            call.value = value
        return calls

    def _apply_reply(
        self,
        link: Any,
        batch: Batch,
        reply: Any,
        outcomes: Happened | list[Outcome],
        elapsed_s: float,
        out: list[Resolution],
    ) -> None:
        rec = self._record_of(link)
        live = rec is not None and rec.retire(batch)
        load = reply.get("load") if isinstance(reply, dict) else None
        if rec is not None and load is not None:  # a direct call's reply carries none
            rec.observe_load(load)
        name = rec.name if rec is not None else ""
        if isinstance(outcomes, Happened):  # a reply about the whole batch
            if live and rec is not None:
                self._worker_does(rec, worker_action(outcomes))
                why = f"worker {name}: {outcomes.value}"
                if outcomes is Happened.BAD_REPLY:
                    why = f"worker {name} sent a malformed reply: {shown(reply)}"
                for call in batch.calls:
                    if not call.done and call.batch_id == batch.id:
                        self._apply(call, outcomes, why, None, out, name)
        else:
            if live and rec is not None:
                worked_ms = outcomes[0][2] if len(outcomes) == 1 else sum(map(_ELAPSED, outcomes))
                self._learn(rec, batch, elapsed_s, worked_ms)
            for call, (happened, value, elapsed_ms) in zip(batch.calls, outcomes, strict=False):
                if call.done:
                    continue
                if happened is None:  # OK: even a stale attempt's success settles the call
                    call.done = True
                    call.worker = name
                    call.elapsed_ms = elapsed_ms
                    out.append((call, value, None))
                    continue
                if not live or call.batch_id != batch.id:
                    continue  # a stale attempt's failure: the re-queued copy reports its own
                if happened is Happened.NOT_RUNNABLE_HERE and rec is not None:
                    rec.missing.add(call.name)
                    self._changed()
                call.elapsed_ms = elapsed_ms
                self._apply(call, happened, failure_text(name, happened, value), value, out, name)

    def _learn(self, rec: WorkerRecord, batch: Batch, elapsed_s: float, worked_ms: float) -> None:
        """Learn from a batch that came back: its worker's batch size (the round trip) and its
        task's cost (the time its calls ran)."""
        rec.sizers[batch.service].observe(len(batch.calls), elapsed_s)
        cost = self._costs.get(batch.cost_key)
        if cost is None:
            cost = self._costs[batch.cost_key] = balancer.CallCost(limit=self.max_batch)
        cost.observe(len(batch.calls), worked_ms / 1000.0)
        cost.heard_at = self._clock()

    def _fail_unsettled(self, link: Any, batch: Batch, out: list[Resolution]) -> None:
        """End every call of ``batch`` not yet settled with DecodeError, and retire the batch."""
        rec = self._record_of(link)
        if rec is not None:
            rec.retire(batch)
        for call in batch.calls:
            if not call.done:
                call.done = True
                out.append(
                    (call, None, TaskFailed(EndsAs.DECODE_ERROR.value, "the reply could not be applied"))
                )

    def batch_failed(self, link: Any, batch: Batch, happened: Happened, detail: str) -> None:
        """A batch did not come back with a reply: apply the table to it (and to its worker)."""
        out: list[Resolution] = []
        with self._cond:
            rec = self._record_of(link)
            if rec is not None and batch.id in rec.batches:
                self._batch_ended(rec, batch, happened, detail, out)
            self._dispatch_ready()
        settle(out)

    def _batch_ended(
        self, rec: WorkerRecord, batch: Batch, happened: Happened, detail: str, out: list[Resolution]
    ) -> None:
        """Apply the table to a batch in flight that ended without a reply (and to its worker)."""
        rec.retire(batch)
        if worker_action(happened) is WorkerAction.SET_ASIDE:
            for call in batch.calls:
                if not call.done and call.batch_id == batch.id:
                    self._apply(call, happened, f"worker {rec.name}: {detail}", None, out, rec.name)
            rest = Happened.CLOSED if happened is Happened.REFUSED else happened
            self._set_aside(rec, rest, f"failed during a call ({detail})", out)
            return
        current = [c for c in batch.calls if not c.done and c.batch_id == batch.id]
        if happened is Happened.TOO_LARGE:
            rec.sizers[batch.service].size = max(1, len(batch.calls) // 2)
            if len(batch.calls) == 1:
                happened = Happened.TOO_LARGE_ALONE
        for call in current:
            self._apply(call, happened, f"worker {rec.name}: {detail}", None, out, rec.name)

    def probe_failed(self, link: Any, reason: str) -> None:
        """A liveness probe failed or timed out."""
        out: list[Resolution] = []
        with self._cond:
            rec = self._record_of(link)
            if rec is not None:
                if rec.state == SUSPECT:
                    rec.quarantine.set_aside(self._clock())
                else:
                    self._set_aside(rec, Happened.PROBE_SILENT, reason, out)
            self._dispatch_ready()
        settle(out)

    def probe_answered(self, link: Any, load: Any) -> None:
        """A probe answered: learn the worker's load; a set-aside worker is used again."""
        with self._cond:
            rec = self._record_of(link)
            if rec is None:
                return
            rec.observe_load(load)
            if rec.state == SUSPECT:
                log.warning("worker %s answers again: it gets work again", rec.name)
                rec.quarantine.clear()
                rec.state = READY
                self._changed()
            self._dispatch_ready()

    def holds(self, link: Any, batch_ids: set[int]) -> bool:
        """True while any of these batches is still in flight on the link's worker."""
        with self._cond:
            rec = self._record_of(link)
            return rec is not None and any(b in rec.batches for b in batch_ids)

    def probe_wait(self, link: Any, now: float) -> float | None:
        """Seconds the link's prober waits before probing again; None when the worker is forgotten."""
        with self._cond:
            rec = self._record_of(link)
            if rec is None or self.closed or rec.state == GONE:
                return None
            if rec.state == SUSPECT:
                return max(0.0, min(PROBE_INTERVAL_S, rec.quarantine.next_probe_at - now))
            if not rec.wants_probes():
                return PROBE_INTERVAL_S
            wait = self._last_probe.get(rec.name, -PROBE_INTERVAL_S) + PROBE_INTERVAL_S - now
            if wait <= 0:
                self._last_probe[rec.name] = now
                return 0.0
            return wait
