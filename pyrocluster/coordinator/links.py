"""Transport only: the coordinator's connections to its workers, on one shared multiplexed wire.

A link decides nothing. It sends the batches it is given and reports what happened through
:class:`LinkEvents`; the dispatcher applies the failover table (``policy.py``).

The coordinator's threads do not grow with workers or with batches in flight: every link of
one dispatcher shares a :class:`Transport`, that is one :class:`~pyrocluster.coordinator.wire.Wire`
(one loop thread that writes every request and reads every reply without ever waiting on a
peer, a small pool for connects) and one prober thread that starts each due liveness probe and
each cancel retry as a multiplexed call. Sending a batch only queues its request on the wire:
the dispatcher touches no socket, least of all under its lock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import Pyro5.errors

from pyrocluster.config import Settings
from pyrocluster.coordinator.calls import Batch
from pyrocluster.coordinator.channel import Channel, Undecodable, Unsent
from pyrocluster.coordinator.direct import DirectRoute
from pyrocluster.coordinator.policy import Happened
from pyrocluster.coordinator.wire import Wire
from pyrocluster.defaults import CONNECT_TIMEOUT_S, PROBE_INTERVAL_S
from pyrocluster.nameserver.registry import CONTROL, WorkerEntry
from pyrocluster.roles import lapsed

log = logging.getLogger(__name__)

__all__ = ["Link", "LinkEvents", "LinkFactory", "Transport", "Unsent", "WorkerLink", "sender_name"]

PROBE_TICK_S = 0.1
"""The prober wakes on a grid of this step: a link's next look is rounded up to it. Every worker
that held work was probed at its own moment, and its link looks again a probe interval after
that moment, busy or idle; each distinct moment woke the prober, which scans every link. With
1,000 links due at scattered moments that was 120-600 wake-ups and 60-210 ms of the prober's CPU
a second (O(workers) wake-ups of O(workers) each); on the grid, 10 wake-ups and 6 ms (its
thread's kernel counters, load 6-9). A probe comes less than a tick late.
"""
AHEAD_CHANNELS = 2
"""Channels of a service a coordinator connects to each worker ahead of its first batches
(``WorkerLink.open_ahead``): a job of cheap calls keeps two batches out per worker, one read while
the other runs."""
AHEAD_WORKERS = 8
"""Most workers connected to ahead: a job of cheap calls uses a few workers at a time, and the
others are connected when a batch first goes there, as before."""
CANCEL_RETRY_S = 5.0
"""How long a cancel is repeated for calls the worker does not know yet (still on their way)."""
CANCEL_RETRY_INTERVAL_S = 0.05
"""Seconds between those repeats."""
CANCEL_DELIVERY_S = 2.0
"""How long closing waits for cancels still on their way (a job cancelled, then closed at once):
dropped, they would leave the calls running on their workers to their end."""


class LinkEvents(Protocol):
    """What a link reports to its owner (the dispatcher); called from the transport's threads."""

    sender_id: str

    def batch_replied(self, link: WorkerLink, batch: Batch, reply: Any, elapsed_s: float) -> None: ...

    def batch_failed(self, link: WorkerLink, batch: Batch, happened: Happened, detail: str) -> None: ...

    def probe_answered(self, link: WorkerLink, load: Any) -> None: ...

    def holds(self, link: WorkerLink, batch_ids: set[int]) -> bool:
        """True while any of these batches is still in flight on the link's worker."""
        ...

    def probe_failed(self, link: WorkerLink, reason: str) -> None: ...

    def probe_wait(self, link: WorkerLink, now: float) -> float | None:
        """Seconds until the next probe (0: now), None to stop probing for good."""
        ...


class Link(Protocol):
    """What the dispatcher needs of a link (:class:`WorkerLink`, or a fake in unit tests)."""

    name: str

    def send(self, batch: Batch) -> None: ...

    def drop_unsent(self) -> None: ...

    def abort_calls(self) -> None: ...

    def cancel(self, call_ids: list[str], batch_ids: set[int]) -> None: ...

    def wake(self) -> None: ...

    def stop(self) -> None: ...

    def open_ahead(self, service: str, count: int) -> None: ...


LinkFactory = Callable[[WorkerEntry, LinkEvents], Link]


def sender_name() -> str:
    """This coordinator's id in requests: stable for one Dispatcher, unique in the cluster."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def happened_of(exc: BaseException) -> Happened:
    """What a failed batch call means for its calls (subclasses first)."""
    if isinstance(exc, (Unsent, Pyro5.errors.SecurityError)) and lapsed(str(exc)):
        return Happened.CREDENTIAL_LAPSED
    if isinstance(exc, Unsent):
        return Happened.REFUSED
    if isinstance(exc, Undecodable):
        return Happened.DECODE_FAILED
    if isinstance(exc, Pyro5.errors.SerializeError):
        return Happened.TOO_LARGE
    if isinstance(exc, Pyro5.errors.TimeoutError):
        return Happened.TIMED_OUT
    if isinstance(exc, Pyro5.errors.CommunicationError):
        return Happened.CLOSED
    return Happened.BAD_REPLY  # the worker raised: not the calls' fault


class Transport:
    """The wire, the prober and the timers every link of one dispatcher shares."""

    def __init__(self) -> None:
        self.wire = Wire("wire")
        self._links: dict[int, WorkerLink] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._cancels = 0
        self._no_cancels = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closed = False
        self._prober = threading.Thread(target=self._probe_loop, name="prober", daemon=True)
        self._prober.start()

    def add(self, link: WorkerLink) -> None:
        """Probe this link from now on."""
        with self._lock:
            self._links[id(link)] = link
        self._wake.set()

    def remove(self, link: WorkerLink) -> None:
        """Stop probing this link."""
        with self._lock:
            self._links.pop(id(link), None)

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the prober thread in ``delay_s`` seconds (it must not block)."""
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._order), action))
        self._wake.set()

    def wake(self) -> None:
        """Look at every link's probe schedule now."""
        self._wake.set()

    def cancel_sent(self) -> None:
        """A cancel is on its way: :meth:`close` waits for it (up to CANCEL_DELIVERY_S)."""
        with self._lock:
            self._cancels += 1

    def cancel_ended(self) -> None:
        """That cancel got its answer or failed for good."""
        with self._lock:
            self._cancels -= 1
            if self._cancels == 0:
                self._no_cancels.notify_all()

    def _probe_loop(self) -> None:
        """Start each due probe and timer (each a non-blocking call); sleep until the next is due."""
        while not self._closed:
            now = time.monotonic()
            with self._lock:
                links = list(self._links.values())
                due = []
                while self._timers and self._timers[0][0] <= now:
                    due.append(heapq.heappop(self._timers)[2])
                next_at = min(now + PROBE_INTERVAL_S, self._timers[0][0] if self._timers else now + 1)
            for action in due:
                try:
                    action()
                except Exception:  # one timer's bug must not stop probing
                    log.exception("a link timer failed")
            for link in links:
                try:
                    at = link.next_probe(now)
                except RuntimeError:  # the wire's pool is shut down (the interpreter exits): stop too
                    return
                if at is not None:
                    next_at = min(next_at, at)
            self._wake.wait(max(0.0, next_at - time.monotonic()))
            self._wake.clear()

    def close(self) -> None:
        """Let the cancels on their way arrive (bounded), then stop the prober and the wire."""
        with self._lock:
            self._no_cancels.wait_for(lambda: self._cancels == 0, timeout=CANCEL_DELIVERY_S)
        self._closed = True
        self._wake.set()
        self._prober.join(timeout=2)
        self.wire.close()


class WorkerLink:
    """One worker's channels: one per batch in flight per service (reused), one for probes."""

    def __init__(
        self,
        entry: WorkerEntry,
        owner: LinkEvents,
        settings: Settings,
        probe_timeout_s: float,
        transport: Transport | None = None,
    ) -> None:
        self.name = entry.name
        self.uris = dict(entry.uris)
        self._owner = owner
        self._settings = settings
        self._own_transport = transport is None
        self._transport = transport if transport is not None else Transport()
        self._wire = self._transport.wire
        self._probe_timeout_s = probe_timeout_s
        self._lock = threading.Lock()
        self._idle: dict[str, list[Channel]] = {s: [] for s in self.uris}
        self._busy: set[Channel] = set()
        self._probe_channel = Channel(self.uris[CONTROL], settings, connect_timeout_s=probe_timeout_s)
        self._probing = False
        self._probe_at = 0.0
        self._stopped = False
        self.direct: DirectRoute | None = None
        """Lone calls straight to the worker's lent slots (``direct.py``), when settings allow."""
        if settings.direct and "compute" in self.uris:
            compute = (lambda: self._take("compute"), lambda ch: self._put_back("compute", ch))
            self.direct = DirectRoute(self.uris["compute"], settings, self._wire, owner.sender_id, compute)
        self._transport.add(self)

    # -- sending -----------------------------------------------------------------------------

    def _take(self, service: str) -> Channel:
        with self._lock:
            idle = self._idle[service]
            channel = idle.pop() if idle else Channel(self.uris[service], self._settings)
            self._busy.add(channel)
            return channel

    def _put_back(self, service: str, channel: Channel) -> None:
        with self._lock:
            self._busy.discard(channel)
            if not self._stopped:
                self._idle[service].append(channel)
                return
        channel.release()

    def open_ahead(self, service: str, count: int) -> None:
        """Connect channels of ``service`` until ``count`` are idle, before a batch needs them
        (blocking: the caller's thread passes the handshakes). A fresh coordinator otherwise
        connects at its first batches while their calls wait; one that cannot connect stops
        here, and a batch then connects as it always did."""
        if service not in self.uris:
            return
        with self._lock:
            missing = count - len(self._idle[service])
        for _ in range(missing):
            channel = Channel(self.uris[service], self._settings)
            try:
                channel.connect()
            except Unsent:
                return
            self._put_back(service, channel)  # idle, or released when the link stopped meanwhile

    def send(self, batch: Batch) -> None:
        """Start the batch call: its request is queued on the wire, whose loop writes it (a lone
        call to a slot the worker lends, when it lends one)."""
        direct = self.direct
        if direct is not None and direct.send(batch, self._direct_replied, self._direct_failed, self._send):
            return
        self._send(batch)

    def _direct_replied(self, batch: Batch, reply: Any) -> None:
        self._owner.batch_replied(self, batch, reply, time.monotonic() - batch.sent_at)

    def _direct_failed(self, batch: Batch, exc: BaseException) -> None:
        self._owner.batch_failed(self, batch, happened_of(exc), f"{type(exc).__name__}: {exc}")

    def _send(self, batch: Batch) -> None:
        """The ``run_batch`` call of a batch."""
        service = batch.service
        channel = self._take(service)
        request = batch.request(self._owner.sender_id)
        batch.sent_at = time.monotonic()

        def done(reply: Any, exc: BaseException | None) -> None:
            self._put_back(service, channel)
            if exc is None:
                if self.direct is not None and isinstance(reply, dict):
                    self.direct.learn(reply.get("load"))
                self._owner.batch_replied(self, batch, reply, time.monotonic() - batch.sent_at)
            else:
                self._owner.batch_failed(self, batch, happened_of(exc), f"{type(exc).__name__}: {exc}")

        # No wire deadline (docs/protocol.md): the batch may wait in the worker's admission queue
        # and each call has its own timeout on the worker. A worker that stops answering is the
        # prober's business (abort_calls cuts the connection); one that answers probes but not
        # the batch meets the dispatcher's batch deadline (overdue.py).
        self._wire.call(channel, "run_batch", (request,), done, hold_write=batch.by_sender)
        batch.started_on(self._wire, channel)

    def drop_unsent(self) -> None:
        """Nothing waits to be sent here: a batch is on the wire as soon as it is given."""

    def abort_calls(self) -> None:
        """Cut the connections of calls under way (the worker was set aside): they fail at once."""
        with self._lock:
            busy = list(self._busy)
        if self.direct is not None:
            busy += list(self.direct.busy)
        for channel in busy:
            self._wire.cut(channel)

    def cancel(self, call_ids: list[str], batch_ids: set[int]) -> None:
        """Ask the worker to stop these calls (``compute.cancel``) on a channel of its own.

        A batch still on its way is not known to the worker yet: ask again while its reply is due.
        """
        channel = Channel(self.uris["compute"], self._settings)
        deadline = time.monotonic() + CANCEL_RETRY_S

        def attempt() -> None:
            self._wire.call(channel, "cancel", (self._owner.sender_id, call_ids), done, CONNECT_TIMEOUT_S)

        def done(found: Any, exc: BaseException | None) -> None:
            if exc is not None:  # the worker may be gone: its calls end with it
                log.debug("cancel on %s failed: %s", self.name, exc)
            elif (
                isinstance(found, int)
                and found < len(call_ids)
                and time.monotonic() < deadline
                and self._owner.holds(self, batch_ids)
            ):
                self._transport.later(CANCEL_RETRY_INTERVAL_S, attempt)
                return
            channel.release()
            self._transport.cancel_ended()

        self._transport.cancel_sent()
        attempt()

    # -- liveness ----------------------------------------------------------------------------

    def next_probe(self, now: float) -> float | None:
        """Start the probe if due (called by the prober): when to look again; None while one is out."""
        if self._stopped or self._probing:
            return None
        if now < self._probe_at:
            return self._probe_at
        wait = self._owner.probe_wait(self, now)
        if wait is None:
            self._stopped = True
            self._transport.remove(self)
            return None
        if wait > 0:
            self._probe_at = math.ceil((now + wait) / PROBE_TICK_S) * PROBE_TICK_S
            return self._probe_at
        self._probing = True
        self._wire.call(self._probe_channel, "load", (), self._probed, timeout_s=self._probe_timeout_s)
        return None

    def _probed(self, load: Any, exc: BaseException | None) -> None:
        self._probing = False
        self._probe_at = 0.0
        if exc is None:
            if self.direct is not None:
                self.direct.learn(load)
            self._owner.probe_answered(self, load)
        elif happened_of(exc) is Happened.CREDENTIAL_LAPSED:
            # It answered: it refuses our token, revoked or expired since we connected. Its calls
            # under way end there; the next batch sent ends with the refusal.
            self._probe_channel.release()
            self._owner.probe_answered(self, None)
        elif isinstance(exc, (Pyro5.errors.PyroError, Unsent)):
            self._probe_channel.release()
            self._owner.probe_failed(self, f"stopped answering its liveness probe ({type(exc).__name__})")
        else:  # it answered, with an error: alive, load unknown
            self._owner.probe_answered(self, None)
        self._transport.wake()

    def wake(self) -> None:
        """Make the prober ask its owner again now."""
        self._probe_at = 0.0
        self._transport.wake()

    def stop(self) -> None:
        """Stop probing and close idle connections (calls under way finish or fail on their own)."""
        self._stopped = True
        self._transport.remove(self)
        with self._lock:
            idle = [c for chans in self._idle.values() for c in chans]
            for chans in self._idle.values():
                chans.clear()
        for channel in idle:
            channel.release()
        if self.direct is not None:
            self.direct.stop()
        if not self._probing:
            self._probe_channel.release()
        if self._own_transport:
            self._transport.close()
