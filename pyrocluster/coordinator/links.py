"""The coordinator's connection to one worker: its sender threads and its liveness prober.

A link never decides anything itself: it reports what happened on the wire to its owner (the
dispatcher) and does what it is told. Proxies belong to one thread, so every sender thread and
the prober own their proxies.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import Pyro5.errors

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.coordinator.balancer import BatchSizer
from pyrocluster.coordinator.calls import Batch
from pyrocluster.coordinator.retry import Quarantine
from pyrocluster.defaults import CONNECT_TIMEOUT_S, PROBE_INTERVAL_S
from pyrocluster.nameserver.registry import CONTROL, WorkerEntry

if TYPE_CHECKING:
    from pyrocluster.coordinator.dispatch import Dispatcher

log = logging.getLogger(__name__)

READY, SUSPECT, DRAINING, GONE = "ready", "suspect", "draining", "gone"
"""Link states: takes work / set aside and re-probed / refuses work / forgotten."""
CALL_GRACE_S = 5.0
"""Seconds a batch call may overrun its calls' timeout before the coordinator gives up on it."""


class Unsent(Exception):
    """The batch never reached the worker (connection refused): no attempt was used."""


class WorkerLink:
    """One worker as the dispatcher sees it: capacity, state, in-flight batches, threads."""

    def __init__(
        self,
        entry: WorkerEntry,
        owner: Dispatcher,
        settings: Settings,
        probe_timeout_s: float,
        max_batch: int,
    ) -> None:
        self.name = entry.name
        self.entry = entry
        self.tags = entry.tags
        self.state = READY
        self.quarantine = Quarantine()
        self.batches: dict[int, Batch] = {}
        self.in_flight: dict[str, int] = {s: 0 for s in entry.uris}
        self.sizers: dict[str, BatchSizer] = {s: BatchSizer(limit=max_batch) for s in entry.uris}
        self.outboxes: dict[str, queue.SimpleQueue[Batch | None]] = {
            s: queue.SimpleQueue() for s in entry.uris
        }
        self.idle: dict[str, int] = {s: 0 for s in entry.uris}
        self.senders: dict[str, int] = {s: 0 for s in entry.uris}
        self._owner = owner
        self._settings = settings
        self._probe_timeout_s = probe_timeout_s
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._calling: set[Any] = set()
        self._prober = threading.Thread(target=self._probe_loop, name=f"probe-{self.name}", daemon=True)
        self._prober.start()

    # -- capacity (read under the dispatcher's lock) ---------------------------------------

    def offers(self, service: str, tags: frozenset[str]) -> bool:
        """True when it offers ``service`` and carries every tag."""
        return service in self.entry.uris and tags <= self.tags

    def free_slots(self, service: str) -> int:
        """Batches it may still take for ``service`` (0 unless ready)."""
        if self.state != READY or service not in self.in_flight:
            return 0
        return self.entry.slots.get(service, 0) - self.in_flight[service]

    def busy(self) -> bool:
        """True while any batch is in flight on it."""
        return bool(self.batches)

    # -- sending -----------------------------------------------------------------------------

    def send(self, batch: Batch) -> None:
        """Hand a batch to a sender thread, starting one when none is idle."""
        service = batch.service
        self.outboxes[service].put(batch)
        with self._lock:
            start = self.outboxes[service].qsize() > self.idle[service]
            if start:
                self.senders[service] += 1
        if start:
            threading.Thread(
                target=self._send_loop, args=(service,), name=f"send-{self.name}-{service}", daemon=True
            ).start()

    def take_back_outbox(self) -> None:
        """Drop batches not yet picked up by a sender (the dispatcher re-queued their calls)."""
        for box in self.outboxes.values():
            while True:
                try:
                    box.get_nowait()
                except queue.Empty:
                    break

    def _send_loop(self, service: str) -> None:
        uri = self.entry.uris[service]
        proxy: Any = None
        box = self.outboxes[service]
        while True:
            with self._lock:
                self.idle[service] += 1
            batch = box.get()
            with self._lock:
                self.idle[service] -= 1
            if batch is None:
                break
            if proxy is None:
                proxy = make_proxy(uri, self._settings)
            try:
                reply = self._call(proxy, batch)
            except Unsent as exc:
                proxy = self._release(proxy)
                self._owner.batch_unsent(self, batch, str(exc))
            except Pyro5.errors.SerializeError as exc:
                proxy = self._release(proxy)
                self._owner.batch_unserializable(self, batch, exc)
            except Pyro5.errors.CommunicationError as exc:
                proxy = self._release(proxy)
                self._owner.batch_lost(self, batch, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # the worker raised: the batch failed, the worker is fine
                self._owner.batch_raised(self, batch, exc)
            else:
                self._owner.batch_replied(self, batch, reply, time.monotonic() - batch.sent_at)
        with self._lock:
            self.senders[service] -= 1
        self._release(proxy)

    def _call(self, proxy: Any, batch: Batch) -> Any:
        if proxy._pyroConnection is None:
            proxy._pyroTimeout = CONNECT_TIMEOUT_S
            try:
                proxy._pyroBind()
            except Pyro5.errors.SecurityError as exc:
                raise Unsent(f"authentication refused: {exc}") from None
            except Pyro5.errors.CommunicationError as exc:
                raise Unsent(f"{type(exc).__name__}: {exc}") from None
        timeout_s = max(c.timeout_s for c in batch.calls) + CALL_GRACE_S
        if proxy._pyroTimeout != timeout_s:  # the setter is a syscall: skip it when nothing changes
            proxy._pyroTimeout = timeout_s
        batch.sent_at = time.monotonic()
        conn = proxy._pyroConnection
        with self._lock:
            self._calling.add(conn)
        try:
            return proxy.run_batch([c.wire() for c in batch.calls])
        finally:
            with self._lock:
                self._calling.discard(conn)

    def abort_calls(self) -> None:
        """Cut the connections of calls under way (the worker was set aside): their threads return now.

        Without this, a thread waiting on a silent worker would hold its socket until the call's timeout.
        """
        with self._lock:
            connections = list(self._calling)
        for conn in connections:
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _release(proxy: Any) -> None:
        if proxy is not None:
            # A proxy of a dead connection may fail to close; there is nothing more to do then.
            with contextlib.suppress(Exception):
                proxy._pyroRelease()
        return None

    # -- liveness ----------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        """Ping while work is in flight (about once a second); re-probe with backoff when set aside."""
        proxy: Any = None
        while self.state != GONE and not self._owner.closed:
            now = time.monotonic()
            if self.state == SUSPECT:
                if not self.quarantine.due(now):
                    self._wake.wait(min(PROBE_INTERVAL_S, self.quarantine.next_probe_at - now))
                    self._wake.clear()
                    continue
            elif not self.busy():
                self._wake.wait(PROBE_INTERVAL_S)
                self._wake.clear()
                continue
            if proxy is None:
                proxy = make_proxy(self.entry.uris[CONTROL], self._settings, timeout_s=self._probe_timeout_s)
            started = time.monotonic()
            try:
                proxy.ping()
            except Pyro5.errors.PyroError as exc:
                proxy = self._release(proxy)
                self._owner.probe_failed(self, f"stopped answering its liveness probe ({type(exc).__name__})")
            else:
                self._owner.probe_ok(self)
            if self.state == READY:
                self._wake.wait(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - started)))
                self._wake.clear()
        self._release(proxy)

    def wake(self) -> None:
        """Make the prober look at the state now."""
        self._wake.set()

    def stop(self) -> None:
        """Forget this worker: end the prober and idle senders."""
        self.state = GONE
        self.take_back_outbox()
        for service, box in self.outboxes.items():
            for _ in range(self.senders[service]):
                box.put(None)
        self.wake()
