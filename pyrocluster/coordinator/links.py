"""Transport only: the coordinator's connection to one worker (sender threads and a prober).

A link decides nothing. It sends the batches it is given and reports what happened through
:class:`LinkEvents`; the dispatcher applies the failover table (``policy.py``). Proxies belong to
one thread, so every sender thread and the prober own their proxies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import Pyro5.errors

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.coordinator.calls import Batch
from pyrocluster.coordinator.policy import Happened
from pyrocluster.defaults import CONNECT_TIMEOUT_S
from pyrocluster.nameserver.registry import CONTROL, WorkerEntry

log = logging.getLogger(__name__)

CANCEL_RETRY_S = 5.0
"""How long a cancel is repeated for calls the worker does not know yet (still on their way)."""
CANCEL_RETRY_INTERVAL_S = 0.05
"""Seconds between those repeats."""


class LinkEvents(Protocol):
    """What a link reports to its owner (the dispatcher); called from the link's threads."""

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


LinkFactory = Callable[[WorkerEntry, LinkEvents], Link]


def sender_name() -> str:
    """This coordinator's id in requests: stable for one Dispatcher, unique in the cluster."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Unsent(Exception):
    """The batch never reached the worker (connection refused): no attempt was used."""


class WorkerLink:
    """Sender threads per service (one per batch in flight, reused) and one liveness prober."""

    def __init__(
        self, entry: WorkerEntry, owner: LinkEvents, settings: Settings, probe_timeout_s: float
    ) -> None:
        self.name = entry.name
        self.uris = dict(entry.uris)
        self._owner = owner
        self._settings = settings
        self._probe_timeout_s = probe_timeout_s
        self._outboxes: dict[str, queue.SimpleQueue[Batch | None]] = {
            s: queue.SimpleQueue() for s in self.uris
        }
        self._idle: dict[str, int] = {s: 0 for s in self.uris}
        self._senders: dict[str, int] = {s: 0 for s in self.uris}
        self._stopped = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._calling: set[Any] = set()
        self._prober = threading.Thread(target=self._probe_loop, name=f"probe-{self.name}", daemon=True)
        self._prober.start()

    # -- sending -----------------------------------------------------------------------------

    def send(self, batch: Batch) -> None:
        """Hand a batch to a sender thread, starting one when none is idle."""
        service = batch.service
        self._outboxes[service].put(batch)
        with self._lock:
            start = self._outboxes[service].qsize() > self._idle[service]
            if start:
                self._senders[service] += 1
        if start:
            threading.Thread(
                target=self._send_loop, args=(service,), name=f"send-{self.name}-{service}", daemon=True
            ).start()

    def drop_unsent(self) -> None:
        """Drop batches not yet picked up by a sender (the dispatcher re-queued their calls)."""
        for box in self._outboxes.values():
            with contextlib.suppress(queue.Empty):
                while True:
                    box.get_nowait()

    def _send_loop(self, service: str) -> None:
        uri = self.uris[service]
        proxy: Any = None
        box = self._outboxes[service]
        while True:
            with self._lock:
                self._idle[service] += 1
            batch = box.get()
            with self._lock:
                self._idle[service] -= 1
            if batch is None:
                break
            try:
                if proxy is None:
                    proxy = self._make_proxy(uri)
                reply = self._call(proxy, batch)
            except Unsent as exc:
                proxy = self._release(proxy)
                self._owner.batch_failed(self, batch, Happened.REFUSED, str(exc))
            except Pyro5.errors.SerializeError as exc:
                proxy = self._release(proxy)
                self._owner.batch_failed(self, batch, Happened.TOO_LARGE, f"{type(exc).__name__}: {exc}")
            except Pyro5.errors.TimeoutError as exc:
                proxy = self._release(proxy)
                self._owner.batch_failed(self, batch, Happened.TIMED_OUT, f"{type(exc).__name__}: {exc}")
            except Pyro5.errors.CommunicationError as exc:
                proxy = self._release(proxy)
                self._owner.batch_failed(self, batch, Happened.CLOSED, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # the worker raised (or a proxy could not be made): not the calls' fault
                proxy = self._release(proxy)
                self._owner.batch_failed(self, batch, Happened.BAD_REPLY, f"{type(exc).__name__}: {exc}")
            else:
                self._owner.batch_replied(self, batch, reply, time.monotonic() - batch.sent_at)
        with self._lock:
            self._senders[service] -= 1
        self._release(proxy)

    def _make_proxy(self, uri: str) -> Any:
        try:
            return make_proxy(uri, self._settings)
        except Exception as exc:  # e.g. TLS files gone: the batch never left, it goes elsewhere
            raise Unsent(f"cannot make a proxy: {type(exc).__name__}: {exc}") from None

    def _call(self, proxy: Any, batch: Batch) -> Any:
        if proxy._pyroConnection is None:
            proxy._pyroTimeout = CONNECT_TIMEOUT_S
            try:
                proxy._pyroBind()
            except Pyro5.errors.SecurityError as exc:
                raise Unsent(f"authentication refused: {exc}") from None
            except Pyro5.errors.CommunicationError as exc:
                raise Unsent(f"{type(exc).__name__}: {exc}") from None
        # No deadline of our own (docs/protocol.md): the batch may wait in the worker's admission
        # queue behind other coordinators' work, each call has its own timeout on the worker, and
        # a worker that stops answering is the prober's business (it cuts this connection).
        if proxy._pyroTimeout is not None:
            proxy._pyroTimeout = None
        request = batch.request(self._owner.sender_id)
        batch.sent_at = time.monotonic()
        conn = proxy._pyroConnection
        with self._lock:
            self._calling.add(conn)
        try:
            return proxy.run_batch(request)
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

    def cancel(self, call_ids: list[str], batch_ids: set[int]) -> None:
        """Ask the worker to stop these calls (``compute.cancel``), from a thread of its own.

        A batch still on its way is not known to the worker yet: ask again while its reply is due.
        """
        threading.Thread(
            target=self._cancel, args=(call_ids, batch_ids), name=f"cancel-{self.name}", daemon=True
        ).start()

    def _cancel(self, call_ids: list[str], batch_ids: set[int]) -> None:
        deadline = time.monotonic() + CANCEL_RETRY_S
        try:
            proxy = make_proxy(self.uris["compute"], self._settings, timeout_s=CONNECT_TIMEOUT_S)
        except Exception as exc:  # no proxy: the calls end with their batch
            log.debug("cancel on %s failed: %s", self.name, exc)
            return
        try:
            while True:
                found = proxy.cancel(self._owner.sender_id, call_ids)
                if found >= len(call_ids) or time.monotonic() > deadline:
                    break
                if not self._owner.holds(self, batch_ids):
                    break  # they ended meanwhile
                time.sleep(CANCEL_RETRY_INTERVAL_S)
        except Exception as exc:  # the worker may be gone: its calls end with it
            log.debug("cancel on %s failed: %s", self.name, exc)
        finally:
            self._release(proxy)

    @staticmethod
    def _release(proxy: Any) -> None:
        if proxy is not None:
            # A proxy of a dead connection may fail to close; there is nothing more to do then.
            with contextlib.suppress(Exception):
                proxy._pyroRelease()
        return None

    # -- liveness ----------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        """Probe ``control.load()`` when the owner says so (about once a second while busy)."""
        proxy: Any = None
        while not self._stopped:
            wait = self._owner.probe_wait(self, time.monotonic())
            if wait is None:
                break
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            if proxy is None:
                try:
                    proxy = make_proxy(self.uris[CONTROL], self._settings, timeout_s=self._probe_timeout_s)
                except Exception as exc:  # no proxy, no probe: as good as silent
                    self._owner.probe_failed(self, f"cannot be probed ({type(exc).__name__}: {exc})")
                    continue
            try:
                load = proxy.load()
            except Pyro5.errors.PyroError as exc:
                proxy = self._release(proxy)
                self._owner.probe_failed(self, f"stopped answering its liveness probe ({type(exc).__name__})")
            except Exception:  # it answered, with an error: alive, load unknown
                self._owner.probe_answered(self, None)
            else:
                self._owner.probe_answered(self, load)
        self._release(proxy)

    def wake(self) -> None:
        """Make the prober ask its owner again now."""
        self._wake.set()

    def stop(self) -> None:
        """End the prober and idle senders."""
        self._stopped = True
        self.drop_unsent()
        with self._lock:
            counts = dict(self._senders)
        for service, box in self._outboxes.items():
            for _ in range(counts[service]):
                box.put(None)
        self.wake()
