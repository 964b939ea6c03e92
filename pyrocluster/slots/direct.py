"""The direct path, in the slot process: a coordinator's calls straight to the slot.

A lone call through the worker costs two extra hops (the worker's request thread, then a pipe
each way): about 245 us of the call's wall time and 290 us of the worker's CPU (BENCHMARKS.md,
"W1 latency"). So each process slot also serves its own endpoint: a multiplexed Pyro5 daemon of
the worker's own class (:class:`~pyrocluster.auth.SecureDaemon`: the same handshake, TLS and
per-call role check, with the worker's revocations copied into the slot's share), selected on by
the slot's main thread next to its pipe, which runs the call under the same timer as a batch's.
Its plain connections are read and answered by ``direct_requests.py`` (Pyro5's handshake, the
same bytes on the wire, about half the slot's CPU per call of Pyro5's request handling).

The request and the reply are ``run_batch``'s (docs/protocol.md), so a coordinator's channels
speak to it unchanged; a batch may also come as columns (the task and the timeout once, the ids
and payloads as two lists) and is then answered in columns (docs/protocol.md, "A batch as
columns"): a ``map``'s batches, with no list a call to build, pack, read or take apart.

Only a plain batch runs here (calls of one task with one timeout, no resources, no big or
fetched arguments: a lone call, or a batch of a ``map``), and only while
the worker lends the slot (:meth:`SlotShare.claim`, atomic with the worker's
:meth:`SlotShare.hold`); anything else is answered ``{"busy": True}`` at once, without running
anything, and the coordinator sends it by ``run_batch``. Each call's outcome is logged in the
share as it ends, as a batch's from the pipe is, so if the process dies the worker gives the
calls the outcomes ``run_batch`` would have (``lending.py``): the finished keep theirs.

A batch here saves the worker the request's decoding, the pipe each way and the reply's encoding:
a ``map`` of 20,000 ``add`` on two local workers used 6-20% less CPU a call and ran 4-21% faster,
alternating with the code before (BENCHMARKS.md, "The runs of 2026-12-07, 07:24, 07:34 and 07:52
UTC").
"""

from __future__ import annotations

import contextlib
import operator
import os
import select
import selectors
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import msgpack
import Pyro5.api
import Pyro5.callcontext

from pyrocluster import config, roles, tasks
from pyrocluster.config import Settings
from pyrocluster.roles import requires
from pyrocluster.slots.batch import Budget, Call, Outcome
from pyrocluster.slots.direct_spec import DirectSpec
from pyrocluster.slots.share import PORT, SlotShare
from pyrocluster.tokens import Role

STARTED = b"s"
"""What a slot process says on its pipe when a direct call starts while the worker is not
watching direct calls' deadlines (it then watches them until none runs)."""
ENDED = b"D"
"""What it says when a direct call ended in a slot the worker wants back, or when the records of
ended direct calls (``[sender, task, kind, ms]`` each, in the share) pass ``ENDED_TELL_BYTES``: the
worker reads them (it also does before each batch, when asked for its counters, and whenever it
wakes), so it is not woken for every call."""
BUSY: dict[str, Any] = {"busy": True}
"""The answer to a call that does not run here (``run_batch`` takes it)."""
DIRECT_SUFFIX = ".direct"
"""A slot's object id is its worker's compute object id and this (coordinators build its URI)."""
REQUEST_KEYS = frozenset({"from", "calls", "keep", "attach"})
"""A request with anything more (fetched arguments, attached arguments) is not a plain batch.
A call's result that would be kept on the worker (``keep``) comes back in the reply instead, as an
attachment when big and the request allows (``attach``, as ``run_batch`` sends it)."""
COLUMN_KEYS = frozenset({"from", "task", "ids", "payloads", "timeout", "priority", "attach"})
"""A plain batch sent as columns (docs/protocol.md), answered in columns unless a value is big
enough to go as an attachment: that reply is ``run_batch``'s rows."""


Plain = tuple[str, "tuple[str, ...] | list[str]", str, "tuple[bytes, ...] | list[bytes]", float, bool, bool]
"""A plain batch's ``(sender, call_ids, task, payloads, timeout_s, attach, columns)``: one task,
one timeout; ``columns`` when it came as columns (its reply goes back so)."""
_KIND, _ELAPSED = operator.itemgetter(0), operator.itemgetter(2)
RunCall = Callable[[Call, int, float], Outcome]
"""``run_call(call, value_cap, started_at)``: run a claimed direct call; its outcome (logged)."""
RunBatch = Callable[[list[Call], Budget], list[Outcome]]
"""``run_batch(calls, budget)``: run the claimed calls of a direct batch; their outcomes (logged)."""


@Pyro5.api.expose
class DirectService:
    """``run_batch`` of a plain batch, in the slot process; the slot's only object."""

    def __init__(
        self,
        share: SlotShare,
        settings: Settings,
        run: tuple[RunCall, RunBatch],
        tell: Callable[[bytes], None],
    ) -> None:
        from pyrocluster.services.batchcolumns import columns_reply, plain_columns
        from pyrocluster.services.compute import (
            MAX_BATCH,
            MAX_ID_CHARS,
            plain_batch,
            reply_budget,
            send_attached,
        )

        self._plain = plain_batch
        self._plain_columns = plain_columns
        self._columns_reply = columns_reply
        self._send_attached = send_attached
        self._budget = reply_budget
        self._max_id = MAX_ID_CHARS
        self._max_calls = MAX_BATCH
        self._share = share
        self._settings = settings
        self._run_call, self._run_batch = run
        self._tell = tell
        self._record = msgpack.Packer().pack  # packb would make a packer per call

    @requires(Role.SUBMITTER, "run tasks")
    def run_batch(self, request: Any) -> dict[str, Any]:
        """Run a plain batch here if the slot is lent: ``{"outcomes"}``, else ``{"busy"}``
        (through Pyro5's request handling: ``direct_requests.py`` answers the usual request).

        Only on the slot's main thread, where its timer acts: a oneway call, which Pyro5 runs on a
        thread of its own, runs nothing (and gets no answer)."""
        if threading.current_thread() is not threading.main_thread():
            return BUSY
        context = Pyro5.callcontext.current_context
        return self.answer(request, getattr(context.client, "sock", None), context.serializer_id)

    def answer(self, request: Any, sock: Any, serializer_id: int | None = None) -> dict[str, Any]:
        """:meth:`run_batch` of a peer that may run tasks, on the connection of ``sock``."""
        plain = self.plain(request)
        return BUSY if plain is None else self.run(plain, sock, serializer_id)

    def plain(self, request: Any) -> Plain | None:
        """The plain batch ``request`` asks for (every call of one task with one timeout, as
        ``plain_batch`` checks them for ``run_batch``, or as columns, as ``plain_columns`` checks
        them), None for any other request.

        Every field's type is checked (``keep`` a list of strings, ``attach`` an int), so a plain
        request holds no value that Pyro5's msgpack hooks would turn into an object: one decoded
        without them is the same (``direct_requests.py``)."""
        if type(request) is not dict:
            return None
        columns = "ids" in request
        if not request.keys() <= (COLUMN_KEYS if columns else REQUEST_KEYS):
            return None
        sender, attach = request.get("from"), request.get("attach", 0)
        if type(sender) is not str or not 0 < len(sender) <= self._max_id or type(attach) is not int:
            return None
        known, cap = tasks.REGISTRY.keys(), self._settings.max_value_bytes
        if columns:
            taken = self._plain_columns(request, known, cap)
            return None if taken is None else (sender, *taken[:4], attach == 1, True)
        calls, keep = request.get("calls"), request.get("keep")
        if type(calls) is not list or not 0 < len(calls) <= self._max_calls:
            return None
        if keep is not None and (type(keep) is not list or not all(type(key) is str for key in keep)):
            return None
        checked = self._plain(calls, known, cap)
        if checked is None:
            return None
        ids, names, payloads, timeouts, _ = checked
        if len(calls) > 1 and not (names.count(names[0]) == len(names) and len(set(timeouts)) == 1):
            return None  # the worker's deadline watch takes one timeout for all
        return sender, ids, names[0], payloads, float(timeouts[0]), attach == 1, False

    def run(self, plain: Plain, sock: Any, serializer_id: int | None = None) -> dict[str, Any]:
        """Run a plain batch here if the slot is lent: the reply (big values sent ahead on
        ``sock`` when the request asked; columns for a request of columns), else BUSY."""
        sender, ids, name, payloads, timeout_s, attach, columns = plain
        share, now = self._share, time.monotonic()
        who = [sender, ids[0], name] if len(ids) == 1 else [sender, ids[0], name, list(ids)]
        if not share.claim(who, timeout_s, now):
            return BUSY
        if not share.watched():
            share.told()
            self._tell(STARTED)
        if len(ids) == 1 and not columns:
            # a lone call's reply holds its one value whatever its size up to the value cap, in
            # any serializer (the reply budget of run_batch decides only between several values)
            outcome = self._run_call([name, payloads[0], timeout_s], self._settings.max_value_bytes, now)
            self._ended([sender, name, outcome[0], outcome[2]], 1)
            outcomes = [outcome]
        else:
            calls = [[name, payload, timeout_s] for payload in payloads]
            outcomes = self._run_batch(calls, self._budget(self._settings, serializer_id))
            columned = self._columns_reply(outcomes) if columns else None
            if columned is not None:
                self._ended([sender, name, columned["kinds"], columned["elapsed"]], len(ids))
                return columned
            self._ended([sender, name, bytes(map(_KIND, outcomes)), list(map(_ELAPSED, outcomes))], len(ids))
        reply = {"outcomes": outcomes}
        if attach:
            self._send_attached(sock, reply)  # the big values, if any
        return reply

    def _ended(self, record: list[Any], calls: int) -> None:
        """The claimed calls are over: their ``record`` (``[sender, task, kind, ms]``, or ``[sender,
        task, kinds, ms]`` of a batch: its calls' kinds as bytes, their ms as a list) kept for the
        worker and the slot lent again (or the worker's), before the reply goes out, so that a
        caller that reads the worker's counters once it has its reply finds these calls there."""
        self._share.unclaim(self._record(record), self._tell_ended, calls)

    def _tell_ended(self) -> None:
        self._tell(ENDED)


def _exit_with_worker(pipe: int) -> None:
    """End this process as soon as the worker's end of the pipe closes (the worker died), even
    mid-task: a coordinator's connection to it then breaks at once, as its connection to the
    worker does, rather than when the slot next sees its parent gone (up to a second later)."""

    def watch() -> None:
        poller = select.poll()
        poller.register(pipe, 0)  # only a hang-up or an error: reads are the main thread's
        while True:
            for _fd, _event in poller.poll():
                os._exit(0)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


class DirectServer:
    """The slot process's endpoint: its daemon, selected on next to the worker's pipe."""

    def __init__(
        self, spec: DirectSpec, share: SlotShare, conn: Connection, run_call: RunCall, run_batch: RunBatch
    ) -> None:
        from pyrocluster.auth import HANDSHAKE_TIMEOUT_S, SecureDaemon
        from pyrocluster.slots.direct_requests import DirectRequests

        config.apply(spec.settings)
        # One thread: the calls run on it (the call timer needs the main thread). A message must
        # arrive whole within this bound (the worker's handshake timeout): ``direct_requests.py``
        # for plain connections, the socket timeout for TLS ones.
        Pyro5.config.SERVERTYPE = "multiplex"
        Pyro5.config.COMMTIMEOUT = HANDSHAKE_TIMEOUT_S
        self._daemon = SecureDaemon(spec.settings, spec.host, 0, spec.advertise)
        self._conn = conn
        self._share = share
        self._service = DirectService(share, spec.settings, (run_call, run_batch), self._tell)
        self._daemon.register(self._service, objectId=spec.object_id)
        role = int(DirectService.run_batch.pyrocluster_role)  # type: ignore[attr-defined]
        self._requests = DirectRequests(
            self._daemon, spec.object_id, role, self._service, HANDSHAKE_TIMEOUT_S
        )
        share.progress[PORT] = float(self._daemon.transportServer.sock.getsockname()[1])
        self._revoked_at = 0.0
        # The pipe waits in the daemon's own selector (an epoll, kept up to date by the daemon as
        # clients come and go), with no data: one epoll_wait a request instead of a list of the
        # daemon's sockets rebuilt and handed to select() (about 3 us a request).
        self._select = self._daemon.transportServer.selector.select
        self._daemon.transportServer.selector.register(conn.fileno(), selectors.EVENT_READ)
        _exit_with_worker(conn.fileno())

    def _tell(self, message: bytes) -> None:
        """Tell the worker (a closed pipe: the worker is stopping this process anyway)."""
        with contextlib.suppress(OSError):
            self._conn.send_bytes(message)

    def serve(self) -> None:
        """Serve direct calls until the pipe has something to read (a batch, or its close)."""
        pipe = self._conn.fileno()
        daemon, share, wait, requests = self._daemon, self._share, self._select, self._requests
        while True:
            events = wait(requests.timeout())
            ready = [key.fileobj for key, _mask in events if key.fd != pipe]
            batch = len(ready) < len(events)
            # Requests that came with a batch are answered first: the worker took the slot
            # before sending it, so they are told "busy" now, not after the batch.
            if batch and not ready:
                requests.expire()
                return
            self._revoked_at, revoked = share.revocations(self._revoked_at)
            if revoked:
                roles.REVOKED.update(revoked)
            others = [conn for conn in ready if not requests.serve(conn)]
            if others:  # a connect, or a TLS connection's request: Pyro5's
                daemon.events(others)
            requests.expire()  # after reading: a message whose end came during a batch is whole
            if batch:
                return

    def close(self) -> None:
        """Stop listening."""
        self._daemon.close()
