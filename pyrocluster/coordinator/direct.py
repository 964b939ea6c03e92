"""The direct path, in the coordinator: a plain batch sent straight to a worker's slot process.

A worker lists in its load the ports of the slots it lends to direct calls (``"direct"``, see
``slots/lending.py``); a link learns them from every load it sees. A plain batch (compute calls
of one task with one timeout, no resources asked, no big arguments, no references among them:
a lone call, whose big result it would keep on the worker comes back in the reply, or a batch
of a ``map``, not a job's, whose big results stay on the worker) whose worker lends a slot goes
there as the same ``run_batch`` request (a batch of several calls as columns) on a channel of
its own (the slot's object id is the worker's compute object id and ``.direct``), which saves
the worker's request thread and the pipe hops (BENCHMARKS.md, "W1 latency" and "The runs of
2026-12-07, 07:24, 07:34 and 07:52 UTC").

Whatever does not run there goes the ordinary way, with no attempt counted: a ``busy`` answer
(the slot was not lent any more), a refused or failed connect (a replaced slot's old port), a
refusal. When the connection breaks under a batch, the worker is asked for the outcomes its
supervisor gave its calls (``compute.direct_outcome``: each finished call's own, TIMEOUT,
CRASHED or CANCELLED for the one in progress, NOT_RUN or CANCELLED for the rest); with none, the
calls end as under a broken ``run_batch`` (``CLOSED``).
"""

from __future__ import annotations

import functools
import operator
import threading
import time
from collections.abc import Callable
from typing import Any

import Pyro5.core
import Pyro5.errors

from pyrocluster import attachments
from pyrocluster.config import Settings
from pyrocluster.coordinator.calls import Batch
from pyrocluster.coordinator.channel import Channel, Done, Unsent
from pyrocluster.coordinator.wire import Wire, lonecall
from pyrocluster.slots.direct import DIRECT_SUFFIX

OUTCOME_ASK_S = 10.0
"""Longest the ask for a broken direct call's outcome may take (the worker waits up to 5 s)."""

Replied = Callable[[Batch, Any], None]
Failed = Callable[[Batch, BaseException], None]
Fallback = Callable[[Batch], None]


_REFS, _PAYLOAD, _KEEP = (operator.attrgetter(name) for name in ("refs", "payload", "keep"))


def plain(batch: Batch) -> bool:
    """True for a batch the direct path may carry: compute calls with one timeout (a slot's
    supervision watches one timeout for all), nothing but their arguments, and none whose big
    result should stay on its worker (a job's calls: a slot keeps no value, their big results
    would all come back), unless it is a lone call (its reply holds its one value)."""
    calls = batch.calls
    if batch.service != "compute" or batch.requirement[4]:
        return False
    if len(calls) == 1:
        return not calls[0].refs and len(calls[0].payload) < attachments.ATTACH_BYTES
    return (
        batch.timeouts.count(batch.timeouts[0]) == len(calls)
        and not any(map(_KEEP, calls))
        and not any(map(_REFS, calls))
        and max(map(len, map(_PAYLOAD, calls))) < attachments.ATTACH_BYTES
    )


class DirectRoute:
    """One worker's lent slots as this coordinator knows them, and the channels to them."""

    def __init__(
        self,
        compute_uri: str,
        settings: Settings,
        wire: Wire,
        sender: str,
        compute: tuple[Callable[[], Channel], Callable[[Channel], None]],
    ) -> None:
        """``compute``: take and put back a channel to the worker's compute object (the link's)."""
        uri = Pyro5.core.URI(compute_uri)
        self._object = f"{uri.object}{DIRECT_SUFFIX}"
        self._host = uri.host
        self._take_compute, self._put_compute = compute
        self._settings = settings
        self._wire = wire
        self._sender = sender
        self._lock = threading.Lock()
        self._ports: list[int] = []
        self._idle: dict[int, list[Channel]] = {}
        self.busy: set[Channel] = set()
        """Channels with a direct call out (cut with the link's others when the worker is set aside)."""
        self._open: dict[int, int] = {}
        """Channels per port: idle, busy, or connecting."""
        self._connecting: set[int] = set()
        """Ports a channel is being connected to, one at a time each (a slot busy with a long call
        answers a connect only after that call: its port must not hold back the others')."""
        self._stopped = False
        self.sent = 0
        """Calls sent here (they ran here, or went the ordinary way after)."""

    def learn(self, load: Any) -> None:
        """Take the lent ports from a worker's load (a reply's or a probe's)."""
        if not isinstance(load, dict):
            return
        ports = load.get("direct")
        fresh = [p for p in ports if type(p) is int and 0 < p < 65536] if isinstance(ports, list) else []
        with self._lock:
            self._ports = fresh
            idle = []
            for port in [p for p in self._idle if p not in fresh]:
                dropped = self._idle.pop(port)
                self._open[port] -= len(dropped)
                idle += dropped
        for channel in idle:
            channel.release()

    def _channel(self) -> tuple[int, Channel] | None:
        """A connected channel to a lent slot; None when there is none (one is connected meanwhile,
        off the call's path: the handshake costs more than the call)."""
        with self._lock:
            if not self._ports:
                return None
            for port in self._ports:
                idle = self._idle.get(port)
                if idle:
                    channel = idle.pop()
                    self.busy.add(channel)
                    return port, channel
            free = [p for p in self._ports if p not in self._connecting]
            if not free:
                return None
            port = min(free, key=lambda p: self._open.get(p, 0))
            self._connecting.add(port)
            self._open[port] = self._open.get(port, 0) + 1
        channel = Channel(f"PYRO:{self._object}@{self._host}:{port}", self._settings)

        def connected(exc: BaseException | None) -> None:
            try:
                self._put_back(port, channel, keep=exc is None, lent=exc is None)
            finally:
                with self._lock:
                    self._connecting.discard(port)

        self._wire.connect_later(channel, connected)
        return None

    def _put_back(self, port: int, channel: Channel, keep: bool, lent: bool) -> None:
        """Keep the channel (or close it); without ``lent`` the port is not used until the
        worker lists it again (not lent any more, or gone)."""
        with self._lock:
            self.busy.discard(channel)
            if not lent and port in self._ports:
                self._ports.remove(port)
            if keep and not self._stopped:
                self._idle.setdefault(port, []).append(channel)
                return
            self._open[port] = self._open.get(port, 1) - 1
        channel.release()

    def send(self, batch: Batch, replied: Replied, failed: Failed, fallback: Fallback) -> bool:
        """Send a plain batch to a lent slot; False (nothing sent) when none is known."""
        if not plain(batch):
            return False
        taken = self._channel()
        if taken is None:
            return False
        port, channel = taken
        self.sent += len(batch.calls)
        lone = len(batch.calls) == 1
        request = batch.request(self._sender)
        batch.sent_at = time.monotonic()

        def done(reply: Any, exc: BaseException | None) -> None:
            if exc is None and isinstance(reply, dict) and ("outcomes" in reply or "kinds" in reply):
                self._put_back(port, channel, keep=True, lent=True)
                replied(batch, reply)
            elif exc is None or isinstance(exc, (Unsent, Pyro5.errors.SecurityError, PermissionError)):
                # Nothing ran: not lent any more, a replaced slot's port, a refusal the worker
                # gives the same way. The ordinary path decides.
                self._put_back(port, channel, keep=exc is None, lent=False)
                batch.by_sender = False  # its request is written by the wire, not by a sender
                fallback(batch)
            elif isinstance(exc, Pyro5.errors.CommunicationError) and not isinstance(
                exc, Pyro5.errors.TimeoutError
            ):
                self._put_back(port, channel, keep=False, lent=False)
                self._ask_outcome(batch, replied, failed, exc)
            else:
                self._put_back(port, channel, keep=False, lent=False)
                failed(batch, exc)

        if not (lone and batch.by_sender and self._send_lone(batch, channel, request, done)):
            # plain: no payload big enough to travel as an attachment, so no scan for one
            self._wire.call(channel, "run_batch", (request,), done, hold_write=batch.by_sender, scan=False)
            batch.started_on(self._wire, channel)
        return True

    def _send_lone(self, batch: Batch, channel: Channel, request: dict[str, Any], done: Done) -> bool:
        """Start a call its sender writes as one function and its waiter reads as another
        (``wire/lonecall.py``); False (nothing started) when its request does not fit that path."""
        try:
            data = channel.encode("run_batch", (request,), small=True)  # plain: nothing big
        except Exception:  # the ordinary way encodes it again and reports why it cannot
            return False
        if not isinstance(data, bytes) or not lonecall.fits(channel, data):
            return False
        wire = self._wire
        call_no = lonecall.start(wire, channel, done)
        reader = functools.partial(lonecall.read, wire, channel, call_no, awake=batch.awake)
        unread = batch.sent_on(reader, functools.partial(wire.watch, channel, call_no))
        batch.push = functools.partial(lonecall.write, wire, channel, call_no, data, unread)
        return True

    def _ask_outcome(self, batch: Batch, replied: Replied, failed: Failed, broke: BaseException) -> None:
        """The slot's connection broke under the batch: the worker says how its calls ended, if it
        knows (its reply read by the thread that waits for a lone call, as the call's own would be)."""
        channel = self._take_compute()
        call_id = str(batch.calls[0].id)

        def done(reply: Any, exc: BaseException | None) -> None:
            self._put_compute(channel)
            if exc is None and isinstance(reply, dict):
                replied(batch, reply)
            else:  # no outcome known (or no answer): as a broken run_batch
                failed(batch, broke)

        call_no = channel.call_no + 1
        self._wire.call(channel, "direct_outcome", (self._sender, call_id), done, OUTCOME_ASK_S)
        batch.sent_on(lambda wait_s: self._wire.receive_here(channel, call_no, wait_s))

    def stop(self) -> None:
        """Close the idle channels."""
        with self._lock:
            idle = [c for chans in self._idle.values() for c in chans]
            self._idle.clear()
            self._ports = []
            self._stopped = True
        for channel in idle:
            channel.release()
