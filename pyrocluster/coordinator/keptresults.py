"""Big results of ``Cluster.submit`` calls, kept on their workers until something needs them.

A call made with ``submit`` asks its worker to keep a result over 1 MiB, and its future holds a
:class:`~pyrocluster.valueref.ValueRef`. ``result()`` reads the value from its holder in chunks and
decodes it (once: the future keeps it); a future passed as another call's argument passes the
reference, and that call's worker fetches the value itself. A lost value (its holder died) is made
again: ``result()`` runs the call again, and a call whose argument was lost is sent again once its
upstream call ran again. The values are freed when the Cluster closes (a worker also drops what
nobody used for hours).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pyrocluster import codec, valuefetch
from pyrocluster.coordinator.calls import Call, copy_call
from pyrocluster.errors import TaskFailed, WorkerUnavailable
from pyrocluster.valueref import ValueRef, refs_in, swapped

if TYPE_CHECKING:
    from pyrocluster.coordinator.calls import TaskFuture
    from pyrocluster.coordinator.cluster import Cluster

MAX_REMAKES = 3
"""Times a call is sent again because one of its arguments was lost."""
GONE = "ValueGone"


class KeptResults:
    """The kept results of one Cluster's calls (thread-safe)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._lock = threading.Lock()
        self._holders: set[str] = set()

    def taken(self, ref: ValueRef) -> None:
        """A call's result is kept at ``ref``'s holder."""
        with self._lock:
            self._holders.add(ref.uri)

    def value(self, call: Call, ref: ValueRef) -> Any:
        """The value of ``call``'s kept result: read from its holder, or (lost) made again."""
        data = bytearray(ref.size)
        try:
            valuefetch.fetch_into(ref, self._cluster.settings, memoryview(data))
        except valuefetch.ValueGone:
            if self._cluster.closed:  # freed by close(), and nothing can run it again
                raise WorkerUnavailable(
                    f"{call.name!r} result of {ref.size} bytes was kept on its worker and freed when "
                    "the cluster closed: read a big result before close()"
                ) from None
            again = copy_call(call, call.args, call.kwargs, None)  # its value comes in the reply
            self._cluster.submit_calls([again])
            return again.future.result()
        return codec.unpack(data)  # type: ignore[arg-type]  # a bytes-like buffer

    def lost(self, future: TaskFuture, call: Call) -> bool:
        """``call`` failed because an argument's holder was gone: run the upstream calls that made
        the lost values again, then send it again. False when that cannot be done."""
        message = call.error.message if isinstance(call.error, TaskFailed) else ""
        lost = [r for r in call.refs if r.id in message] or list(call.refs)
        upstreams = [future.sources.get(r.id) for r in lost]
        if future.remakes >= MAX_REMAKES or any(u is None for u in upstreams):
            return False
        future.remakes += 1
        again = _Again(self, future, call, {r.id for r in lost})
        producers = []
        for ref, upstream in zip(lost, upstreams, strict=True):
            assert upstream is not None
            up = upstream.call
            producer = copy_call(up, up.args, up.kwargs, _Made(again, ref.id))
            producer.keep, producer.refs = True, up.refs
            producers.append(producer)
        self._cluster.submit_calls(producers)
        return True

    def submit(self, calls: list[Call]) -> None:
        self._cluster.submit_calls(calls)

    def free(self) -> None:
        """Tell every worker that kept a result for us to drop them all."""
        with self._lock:
            holders, self._holders = sorted(self._holders), set()
        for uri in holders:
            valuefetch.free(uri, self._cluster.sender_id, None, self._cluster.settings)


class _Again:
    """A call waiting for its lost arguments to be made again."""

    def __init__(self, kept: KeptResults, future: TaskFuture, call: Call, pending: set[str]) -> None:
        self.kept = kept
        self.future = future
        self.call = call
        self.pending = pending
        self.new: dict[str, Any] = {}
        self.lock = threading.Lock()

    def made(self, lost_id: str, producer: Call) -> None:
        """The upstream of ``lost_id`` ran again."""
        if producer.error is not None:
            why = f"{self.call.error}; running {producer.name!r} again failed: {producer.error}"
            self.future.set_exception(TaskFailed(GONE, why))
            return
        value = producer.value
        if type(value) is ValueRef:
            self.kept.taken(value)
        with self.lock:
            self.new[lost_id] = value
            self.pending.discard(lost_id)
            if self.pending:
                return
        old, future = self.call, self.future
        call = copy_call(old, swapped(old.args, self.new), swapped(old.kwargs, self.new), future)
        call.keep, call.refs = old.keep, tuple(refs_in(call.args) + refs_in(call.kwargs))
        for lost, made in self.new.items():
            if type(made) is ValueRef and lost in future.sources:
                future.sources[made.id] = future.sources[lost]
        future.call = call
        self.kept.submit([call])


class _Made:
    """The waiter of an upstream call run again."""

    def __init__(self, again: _Again, lost_id: str) -> None:
        self._again = again
        self._lost_id = lost_id

    def settled(self, calls: list[Call]) -> None:
        for call in calls:
            self._again.made(self._lost_id, call)
