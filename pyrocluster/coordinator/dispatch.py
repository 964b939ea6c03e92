"""The dispatcher: queues calls, sends batches to the worker with the most free slots, fails over.

All decisions happen under one condition variable; the links report what happened on the wire
and the dispatcher settles each call exactly once (the first outcome wins), re-queueing calls
whose worker died, hung or refused them while attempts remain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import Pyro5.errors

from pyrocluster.config import Settings
from pyrocluster.coordinator import balancer
from pyrocluster.coordinator.calls import Batch, Call, Resolution, gave_up, settle, task_failed
from pyrocluster.coordinator.links import DRAINING, GONE, READY, SUSPECT, WorkerLink
from pyrocluster.coordinator.retry import attempts_left
from pyrocluster.defaults import CONNECT_TIMEOUT_S, DISCOVERY_INTERVAL_S
from pyrocluster.errors import PyroClusterError, TaskFailed, WorkerUnavailable
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.tasks import ERROR, OK

log = logging.getLogger(__name__)

Requirement = tuple[str, frozenset[str]]
WAIT_CHECK_S = 0.25
"""How often calls without any live worker are checked against ``wait``, in seconds."""


class Dispatcher:
    """Owns the queues, the worker links and the threads that discover workers and dispatch."""

    def __init__(self, settings: Settings, probe_timeout_s: float, wait_s: float, max_batch: int) -> None:
        self.settings = settings
        self.max_batch = max_batch
        self.probe_timeout_s = probe_timeout_s
        self.wait_s = wait_s
        self.closed = False
        self.retried = 0
        self.links: dict[str, WorkerLink] = {}
        self._cond = threading.Condition()
        self._pending: dict[Requirement, deque[Call]] = {}
        self._no_worker_since: dict[Requirement, float] = {}
        self._ns: Any = None
        self._ns_ok = False
        self._first_discovery = threading.Event()
        self._closing = threading.Event()
        self._threads = [
            threading.Thread(target=self._dispatch_loop, name="dispatch", daemon=True),
            threading.Thread(target=self._discovery_loop, name="discovery", daemon=True),
        ]

    def start(self) -> None:
        """Start dispatching once the first look-up of workers is done."""
        for t in self._threads:
            t.start()
        self._first_discovery.wait(CONNECT_TIMEOUT_S * 2)

    def close(self) -> None:
        """Stop everything; calls not settled fail with WorkerUnavailable."""
        self._closing.set()
        with self._cond:
            self.closed = True
            leftovers = [c for q in self._pending.values() for c in q if not c.done]
            for link in self.links.values():
                leftovers.extend(c for b in link.batches.values() for c in b.calls if not c.done)
                link.stop()
            self._pending.clear()
            self._cond.notify_all()
        err = WorkerUnavailable("the cluster was closed before the call finished")
        settle([(c, None, err) for c in leftovers])
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2)

    # -- submitting --------------------------------------------------------------------------

    def submit(self, calls: Iterable[Call]) -> None:
        """Queue calls and send what free slots allow right away (no hop through the dispatch thread)."""
        now = time.monotonic()
        with self._cond:
            if self.closed:
                raise WorkerUnavailable("the cluster is closed")
            for call in calls:
                call.queued_at = now
                self._pending.setdefault(call.requirement, deque()).append(call)
            self._dispatch_ready()

    def capacity(self, service: str) -> int:
        """Slots for ``service`` over the workers that take work now."""
        with self._cond:
            return sum(lk.entry.slots.get(service, 0) for lk in self.links.values() if lk.state == READY)

    def in_flight(self) -> int:
        """Calls currently sent to workers."""
        with self._cond:
            return sum(len(b.calls) for link in self.links.values() for b in link.batches.values())

    # -- discovery ---------------------------------------------------------------------------

    def discover(self) -> bool:
        """Ask the name server for workers and update the links; False when it was unreachable."""
        try:
            if self._ns is None:
                self._ns = registry.connect(self.settings)
            entries = registry.find_workers(self._ns)
        except (PyroClusterError, Pyro5.errors.PyroError) as exc:
            if self._ns_ok:
                log.warning("name server unreachable, keeping the %d known workers: %s", len(self.links), exc)
            self._ns_ok = False
            if self._ns is not None:
                self._ns._pyroRelease()
                self._ns = None
            return False
        self._ns_ok = True
        with self._cond:
            if self.closed:
                return True
            self._update_links(entries)
            self._cond.notify()
        return True

    def _update_links(self, entries: list[WorkerEntry]) -> None:
        listed = {e.name for e in entries}
        for entry in entries:
            link = self.links.get(entry.name)
            if link is not None and dict(link.entry.uris) == dict(entry.uris):
                link.entry, link.tags = entry, entry.tags
                continue
            if link is not None:
                self._forget(link, "was replaced by a new registration")
            self.links[entry.name] = WorkerLink(
                entry, self, self.settings, self.probe_timeout_s, self.max_batch
            )
        for name, link in list(self.links.items()):
            if name not in listed and link.state in (SUSPECT, DRAINING) and not link.busy():
                self._forget(link, "left the cluster")

    def _forget(self, link: WorkerLink, reason: str) -> None:
        resolutions = self._take_back(link, reason)
        link.stop()
        self.links.pop(link.name, None)
        # Settling happens under the lock here; these are failures only, whose callbacks are cheap.
        settle(resolutions)

    def _discovery_loop(self) -> None:
        """Look up workers now and then every DISCOVERY_INTERVAL_S (the NS proxy is this thread's)."""
        while not self.closed:
            self.discover()
            self._first_discovery.set()
            self._closing.wait(DISCOVERY_INTERVAL_S)
        if self._ns is not None:
            self._ns._pyroRelease()

    # -- dispatching -------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        with self._cond:
            while not self.closed:
                self._dispatch_ready()
                expired = self._expire_waiting(time.monotonic())
                if expired:
                    self._cond.release()
                    try:
                        settle(expired)
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait(WAIT_CHECK_S)

    def _dispatch_ready(self) -> None:
        for req, queue in list(self._pending.items()):
            while queue and queue[0].done:
                queue.popleft()
            if not queue:
                del self._pending[req]
                self._no_worker_since.pop(req, None)
                continue
            service = req[0]
            candidates = [lk for lk in self.links.values() if lk.state == READY and lk.offers(*req)]
            if not candidates:
                self._no_worker_since.setdefault(req, time.monotonic())
                continue
            self._no_worker_since.pop(req, None)
            free_total = sum(max(0, lk.free_slots(service)) for lk in candidates)
            while queue and free_total > 0:
                link = balancer.choose(candidates, service)
                if link is None:
                    break
                size = link.sizers[service].next_size(len(queue), free_total)
                calls: list[Call] = []
                while queue and len(calls) < size:
                    call = queue.popleft()
                    if not call.done:
                        calls.append(call)
                if not calls:
                    break
                self._send(link, Batch(service, calls))
                free_total -= 1

    def _send(self, link: WorkerLink, batch: Batch) -> None:
        for call in batch.calls:
            call.attempts += 1
            call.batch_id = batch.id
        link.batches[batch.id] = batch
        link.in_flight[batch.service] += 1
        link.send(batch)

    def _expire_waiting(self, now: float) -> list[Resolution]:
        """Fail calls that found no live worker for their service and tags within ``wait``."""
        expired: list[Resolution] = []
        for req, since in list(self._no_worker_since.items()):
            queue = self._pending.get(req)
            if not queue:
                continue
            keep: deque[Call] = deque()
            for call in queue:
                if call.done:
                    continue
                if now - max(since, call.queued_at) >= self.wait_s:
                    tags = f" with tags {sorted(req[1])}" if req[1] else ""
                    why = call.last_error or f"no live worker offers {req[0]}{tags}"
                    expired.append((call, None, WorkerUnavailable(f"{why} (waited {self.wait_s:g} s)")))
                    call.done = True
                else:
                    keep.append(call)
            self._pending[req] = keep
        return expired

    # -- outcomes (called from sender threads) -----------------------------------------------

    def _requeue(self, call: Call, reason: str, count_attempt: bool, out: list[Resolution]) -> None:
        """Put a call back at the front of its queue, or give up when it has no attempts left."""
        call.batch_id = 0
        call.last_error = reason
        if not count_attempt:
            call.attempts -= 1
        if count_attempt and not attempts_left(call.attempts, call.retries):
            call.done = True
            out.append((call, None, gave_up(call, reason)))
            return
        if count_attempt:
            self.retried += 1
        call.queued_at = time.monotonic()
        self._pending.setdefault(call.requirement, deque()).appendleft(call)

    def _retire_batch(self, link: WorkerLink, batch: Batch) -> bool:
        """Remove a batch from its link; False when it had already been taken back."""
        if link.batches.pop(batch.id, None) is None:
            return False
        link.in_flight[batch.service] -= 1
        return True

    def _take_back(self, link: WorkerLink, reason: str) -> list[Resolution]:
        """Re-queue every call in flight on a link."""
        out: list[Resolution] = []
        for batch in link.batches.values():
            for call in batch.calls:
                if not call.done and call.batch_id == batch.id:
                    self._requeue(call, f"worker {link.name} {reason}", True, out)
        link.batches.clear()
        for service in link.in_flight:
            link.in_flight[service] = 0
        link.take_back_outbox()
        return out

    def _set_aside(self, link: WorkerLink, reason: str) -> list[Resolution]:
        if link.state == GONE:
            return []
        log.warning("worker %s %s: its calls go elsewhere", link.name, reason)
        link.state = SUSPECT
        link.quarantine.set_aside(time.monotonic())
        link.abort_calls()
        link.wake()
        self._cond.notify()
        return self._take_back(link, reason)

    def batch_replied(self, link: WorkerLink, batch: Batch, reply: Any, elapsed_s: float) -> None:
        """A worker answered a batch."""
        out: list[Resolution] = []
        with self._cond:
            live = self._retire_batch(link, batch)
            if isinstance(reply, dict) and "refused" in reply:
                if live:
                    link.state = DRAINING
                    for call in batch.calls:
                        if not call.done:
                            self._requeue(call, f"worker {link.name} is draining", False, out)
            elif (
                isinstance(reply, dict)
                and isinstance(reply.get("outcomes"), list)
                and len(reply["outcomes"]) == len(batch.calls)
            ):
                if live:
                    link.sizers[batch.service].observe(len(batch.calls), elapsed_s)
                for call, outcome in zip(batch.calls, reply["outcomes"], strict=False):
                    self._settle_outcome(link, call, outcome, live and call.batch_id == batch.id, out)
            else:
                error = TaskFailed(
                    "InvalidReply", f"worker {link.name} sent a malformed reply: {str(reply)[:200]}"
                )
                for call in batch.calls:
                    if not call.done:
                        call.done = True
                        out.append((call, None, error))
            self._dispatch_ready()
        settle(out)

    def _settle_outcome(
        self, link: WorkerLink, call: Call, outcome: Any, current: bool, out: list[Resolution]
    ) -> None:
        if call.done:
            return
        try:
            kind, value, elapsed_ms = outcome
        except (TypeError, ValueError):
            kind, value, elapsed_ms = ERROR, {"type": "InvalidReply", "message": repr(outcome)[:200]}, 0.0
        if kind == OK:
            call.done = True
            call.worker = link.name
            call.elapsed_ms = float(elapsed_ms)
            out.append((call, value, None))
            return
        if not current:
            return  # a stale attempt's failure: the re-queued copy will report its own outcome
        if kind == ERROR:
            if call.retry_on_error and attempts_left(call.attempts, call.retries):
                self._requeue(call, f"{value.get('type')}: {value.get('message')}", True, out)
                return
            call.done = True
            call.worker = link.name
            call.elapsed_ms = float(elapsed_ms)
            out.append((call, None, task_failed(value)))
            return
        reason = value.get("message", "failed") if isinstance(value, dict) else str(value)
        self._requeue(call, f"on worker {link.name}: {reason}", True, out)
        if call.done:
            call.worker = link.name

    def batch_unsent(self, link: WorkerLink, batch: Batch, reason: str) -> None:
        """The batch never reached the worker: set it aside; the calls lose no attempt."""
        out: list[Resolution] = []
        with self._cond:
            if self._retire_batch(link, batch):
                for call in batch.calls:
                    if not call.done and call.batch_id == batch.id:
                        self._requeue(call, f"worker {link.name} unreachable: {reason}", False, out)
                out.extend(self._set_aside(link, f"is unreachable ({reason})"))
            self._dispatch_ready()
        settle(out)

    def batch_lost(self, link: WorkerLink, batch: Batch, reason: str) -> None:
        """The connection broke or timed out during the call: the worker is set aside."""
        out: list[Resolution] = []
        with self._cond:
            if batch.id in link.batches:
                out.extend(self._set_aside(link, f"failed during a call ({reason})"))
            self._dispatch_ready()
        settle(out)

    def batch_unserializable(self, link: WorkerLink, batch: Batch, exc: Exception) -> None:
        """Arguments or results that the serializer refused: split the batch, fail lone calls."""
        out: list[Resolution] = []
        with self._cond:
            if self._retire_batch(link, batch):
                if len(batch.calls) == 1:
                    call = batch.calls[0]
                    if not call.done:
                        call.done = True
                        out.append((call, None, TaskFailed("SerializeError", str(exc))))
                else:
                    for call in batch.calls:
                        if not call.done:
                            self._requeue(call, str(exc), False, out)
                    link.sizers[batch.service].size = 1
            self._dispatch_ready()
        settle(out)

    def batch_raised(self, link: WorkerLink, batch: Batch, exc: Exception) -> None:
        """The worker raised while handling the batch: its calls fail with that error."""
        tb = "".join(Pyro5.errors.get_pyro_traceback(type(exc), exc, exc.__traceback__))
        error = TaskFailed(type(exc).__name__, str(exc), tb)
        out: list[Resolution] = []
        with self._cond:
            self._retire_batch(link, batch)
            for call in batch.calls:
                if not call.done:
                    call.done = True
                    out.append((call, None, error))
            self._dispatch_ready()
        settle(out)

    # -- liveness (called from probers) ------------------------------------------------------

    def probe_failed(self, link: WorkerLink, reason: str) -> None:
        """A liveness probe failed or timed out."""
        out: list[Resolution] = []
        with self._cond:
            if link.state == SUSPECT:
                link.quarantine.set_aside(time.monotonic())
            elif link.state != GONE:
                out = self._set_aside(link, reason)
        settle(out)

    def probe_ok(self, link: WorkerLink) -> None:
        """A probe answered: a set-aside worker is used again."""
        with self._cond:
            if link.state == SUSPECT:
                log.warning("worker %s answers again: it gets work again", link.name)
                link.quarantine.clear()
                link.state = READY
                self._cond.notify()
