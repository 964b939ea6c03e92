"""One call's state as the coordinator tracks it, and who is told when it ends (its waiter)."""

from __future__ import annotations

import functools
import itertools
import operator
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any, Protocol

from pyrocluster import codec
from pyrocluster.coordinator import callbacks
from pyrocluster.coordinator.balancer import cost_key
from pyrocluster.coordinator.batchrequest import batch_request
from pyrocluster.coordinator.policy import EndsAs
from pyrocluster.coordinator.readhere import UNDONE, ReadHere
from pyrocluster.coordinator.replies import text
from pyrocluster.errors import CredentialLapsed, TaskFailed, TaskTimeout, WorkerUnavailable, remote_error
from pyrocluster.resources import thawed
from pyrocluster.valueref import ValueRef

if TYPE_CHECKING:
    from pyrocluster.coordinator.channel import Channel
    from pyrocluster.coordinator.keptresults import KeptResults
    from pyrocluster.coordinator.wire import Wire
    from pyrocluster.coordinator.wire.replyspin import ReplySpin

_batch_ids = itertools.count(1)
_call_ids = itertools.count(1)

Ask = tuple[tuple[str, float], ...]
"""A call's resource ask, sorted ``(name, amount)`` pairs; () asks the default (``cpu: 1``)."""
Requirement = tuple[str, frozenset[str], str, int, Ask]
"""The queue a call waits in: service, tags a worker must carry, task name, priority, resources."""


def asked(req: Requirement) -> dict[str, float] | None:
    """The full resource ask of a requirement's calls, or None for the default (``cpu: 1``)."""
    return thawed(req[4]) if req[4] else None


class Waiter(Protocol):
    """Told once per call, outside the dispatcher's lock, when calls have their outcome."""

    def settled(self, calls: list[Call]) -> None: ...


class Call:
    """A task on its way through the coordinator: what to run, where it went, how it ended.

    ``value``/``error`` hold the outcome once ``done``; ``tag`` is the waiter's own payload.
    """

    __slots__ = (
        "service", "name", "args", "kwargs", "tags", "timeout_s", "retries", "retry_on_error",
        "waiter", "tag", "attempts", "done", "worker", "elapsed_ms", "batch_id", "queued_at",
        "last_error", "value", "error", "priority", "id", "payload", "resources", "keep", "refs",
        "requirement",
    )  # fmt: skip

    def __init__(
        self,
        service: str,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        tags: frozenset[str],
        timeout_s: float,
        retries: int,
        retry_on_error: bool,
        waiter: Waiter | None = None,
        tag: Any = None,
        priority: int = 0,
        resources: Ask = (),
        payload: bytes = b"",
    ) -> None:
        self.service = service
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.tags = tags
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_on_error = retry_on_error
        self.waiter: Waiter = waiter if waiter is not None else TaskFuture(self)
        self.tag = tag
        self.attempts = 0
        self.done = False
        self.worker: str | None = None
        self.elapsed_ms = 0.0
        self.batch_id = 0
        self.queued_at = 0.0
        self.last_error = ""
        self.value: Any = None
        self.error: BaseException | None = None
        self.priority = priority
        self.id = next(_call_ids)
        self.payload = payload
        """``codec.pack([args, kwargs])``: set by the dispatcher at submission, unless given."""
        self.resources = resources
        self.keep = False
        """Its result, when big, stays on its worker (the reply carries a ``ValueRef``)."""
        self.refs: tuple[ValueRef, ...] = ()
        """The references its arguments hold: its worker fetches their values before it runs."""
        self.requirement: Requirement = (service, tags, name, priority, resources)
        """The queue it waits in: service, tags, task name, priority and resources (built once:
        queueing a batch reads it per call, in a C-level pass)."""

    @property
    def near(self) -> str | None:
        """The worker that holds its biggest argument, where it would best run."""
        if not self.refs:
            return None
        return max(self.refs, key=lambda ref: ref.size).holder

    @property
    def future(self) -> TaskFuture:
        """The future of a call made without a waiter of its own."""
        assert isinstance(self.waiter, TaskFuture)
        return self.waiter


class TaskFuture(ReadHere):
    """A ``concurrent.futures.Future`` that also tells which worker ran the call and its attempts."""

    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call
        self.canceller: Callable[[list[Call], bool], list[Call]] | None = None
        """Set by the dispatcher that holds the call: cancels it (see ``Dispatcher.cancel``)."""
        self.expediter: Callable[[Call], None] | None = None
        """Set by the dispatcher while the call, submitted alone, waits in its queue: sends it alone
        now that its caller blocks on it, if a worker has room (``LoneLane.expedite``)."""
        self.kept: KeptResults | None = None
        """Set for a call whose big result stays on its worker: reads it when asked, makes it again."""
        self.sources: dict[str, TaskFuture] = {}
        """Reference id -> the future whose result it is, for the references among the arguments."""
        self.remakes = 0

    def result(self, timeout: float | None = None) -> Any:
        """The call's result, as ``Future.result``.

        A call sent alone has its reply read by the thread that waits for it (one thread hand-off
        less per call, ``readhere.py``), retries sent from here included, for up to
        ``INLINE_WAIT_S``; after that the loop thread reads.
        """
        value = super().result(timeout)
        if type(value) is ValueRef and self.kept is not None:
            value = self._read(value)
        return value

    def _blocked(self) -> None:
        """The caller blocks on the call: a call submitted alone that still waits is sent now."""
        expedite, self.expediter = self.expediter, None
        if expedite is not None and self._state in UNDONE:
            expedite(self.call)

    def raw(self) -> Any:
        """The result as the reply carried it (a kept one as its reference); for a done future."""
        return super().result(0)

    def _read(self, ref: ValueRef) -> Any:
        """A kept result read from its holder, once (the future keeps the value)."""
        assert self.kept is not None
        value = self.kept.value(self.call, ref)
        with self._condition:
            if self._result is ref:
                self._result = value
            return self._result

    def cancel(self) -> bool:
        """The ``concurrent.futures`` meaning: True for a call that has not started (it never will).

        A call already sent to a worker is not stopped (False); ``Cluster.cancel`` stops those.
        """
        if self._state not in UNDONE:
            return self.cancelled()
        if self.canceller is None:
            return super().cancel()
        return bool(self.canceller([self.call], False))

    def follow(self, fn: Callable[[TaskFuture], object]) -> None:
        """``add_done_callback`` for a call that waits for this one: ``fn`` runs where the outcome
        is set (it only hands that call on), not on the callback thread behind users' callbacks."""
        if self.watcher is not None:
            self._watch()
        with self._condition:
            if self._state in UNDONE:
                self.__dict__.setdefault("_followers", []).append(fn)
                return
        fn(self)

    def _invoke_callbacks(self) -> None:
        """Followers here; the user's done-callbacks on the callback thread (``callbacks.py``)."""
        for fn in self.__dict__.pop("_followers", ()):
            callbacks.call(fn, self)
        if self._done_callbacks:
            callbacks.run_later(self, self._done_callbacks)

    def running(self) -> bool:
        """True while the call is on a worker (sent and not ended): ``cancel()`` is then False."""
        return self._state in UNDONE and self.call.batch_id != 0

    def settled(self, calls: list[Call]) -> None:
        """Complete the future with its call's outcome."""
        call = calls[0]
        self.reader = self.watcher = None  # ended(): nothing is left to read or watch
        if self._state not in UNDONE:
            return
        if call.error is None:
            if type(call.value) is ValueRef and self.kept is not None:
                self.kept.taken(call.value)
            self.set_result(call.value)
        elif isinstance(call.error, CancelledError):
            super().cancel()
        elif not (_lost(call) and self.kept is not None and self.kept.lost(self, call)):
            self.set_exception(call.error)

    @property
    def worker(self) -> str | None:
        """Name of the worker whose outcome was recorded."""
        return self.call.worker

    @property
    def attempts(self) -> int:
        """Attempts made."""
        return self.call.attempts

    @property
    def elapsed_ms(self) -> float:
        """Run time of the recorded attempt on the worker, in milliseconds."""
        return self.call.elapsed_ms


def _lost(call: Call) -> bool:
    """A call that could not run because the holder of one of its arguments was gone."""
    return bool(call.refs) and isinstance(call.error, TaskFailed) and call.error.type == "ValueGone"


def copy_call(call: Call, args: list[Any], kwargs: dict[str, Any], waiter: Waiter | None) -> Call:
    """A new call like ``call`` with these arguments and waiter (none: a future of its own)."""
    return Call(call.service, call.name, args, kwargs, call.tags, call.timeout_s, call.retries,
                call.retry_on_error, waiter, call.tag, call.priority, call.resources)  # fmt: skip


class CallGroup:
    """A waiter for many calls at once (no future per call): ``wait()`` until all have ended."""

    __slots__ = ("_remaining", "_lock", "_event")

    def __init__(self, n: int) -> None:
        self._remaining = n
        self._lock = threading.Lock()
        self._event = threading.Event()
        if n == 0:
            self._event.set()

    def settled(self, calls: list[Call]) -> None:
        """More calls of the group have ended."""
        with self._lock:
            self._remaining -= len(calls)
            if self._remaining == 0:
                self._event.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every call of the group has ended."""
        return self._event.wait(timeout_s)


class Batch:
    """Calls sent to one worker in one request."""

    __slots__ = (
        "id", "requirement", "service", "cost_key", "calls", "timeouts", "sent_at", "deadline", "moved",
        "by_sender", "push", "awake", "full",
    )  # fmt: skip

    def __init__(self, requirement: Requirement, calls: list[Call]) -> None:
        self.id = next(_batch_ids)
        self.requirement = requirement
        self.service = requirement[0]
        """The service the batch goes to."""
        self.cost_key = cost_key(requirement)
        """Its calls' ``(service, task)``: what they cost is learnt under it (``balancer.py``)."""
        self.calls = calls
        self.timeouts: list[float] = list(map(_TIMEOUT, calls))
        """Each call's timeout, in seconds (read to send it and to watch its deadline)."""
        self.sent_at = 0.0
        self.deadline = 0.0
        """When the dispatcher counts it overdue, on its own clock (``overdue.py``)."""
        self.moved = 0
        """How many times that deadline moved on (the worker held others' work)."""
        self.by_sender = False
        """True when the thread that sends it writes its request itself, once it holds no lock."""
        self.push: Callable[[], None] | None = None
        """Set by the link for such a batch: writes its request now (see ``Dispatcher.submit``)."""
        self.awake: ReplySpin | None = None
        """Set for a lone call sent while nothing else was in flight: how its thread awaits the
        reply (``wire/replyspin.py``)."""
        self.full = True
        """False for a batch of a cheap task too small to count against the cap of its batches
        out (``balancer.counts_full``), set when it is sent."""

    def started_on(self, wire: Wire, channel: Channel) -> None:
        """Its ``run_batch`` call was just started on ``channel``: a lone call's future may read
        the reply (``readhere.py``); a batch its sender writes gets its ``push``."""
        call_no = channel.call_no  # the number wire.call gave this call
        reader = functools.partial(wire.receive_here, channel, call_no)
        if not self.by_sender:
            self.sent_on(reader)
            return
        unread = self.sent_on(reader, functools.partial(wire.watch, channel, call_no))
        self.push = functools.partial(wire.push, channel, call_no, unread)

    def sent_on(self, reader: Callable[[float], bool], watcher: Callable[[], None] | None = None) -> bool:
        """The batch is on the wire: a lone call's future may read the reply with ``reader`` (and
        have the loop watch it with ``watcher``, when the loop does not yet). True when it may."""
        if len(self.calls) == 1 and type(self.calls[0].waiter) is TaskFuture:
            self.calls[0].waiter.sent(reader, watcher)
            return True
        return False

    def request(self, sender: str) -> dict[str, Any]:
        """Its ``run_batch`` request (``batchrequest.py``: rows, or columns for several calls)."""
        return batch_request(self.calls, self.requirement, self.timeouts, sender)


_PAYLOAD, _TIMEOUT = operator.attrgetter("payload"), operator.attrgetter("timeout_s")
_ARGS, _KWARGS = operator.attrgetter("args"), operator.attrgetter("kwargs")
_CALL, _WAITER = operator.itemgetter(0), operator.attrgetter("waiter")
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)

Resolution = tuple[Call, Any, "BaseException | None"]
"""A call and its outcome, decided under the dispatcher's lock and settled after it."""


def settle(resolutions: list[Resolution]) -> None:
    """Store outcomes and tell each waiter once about its calls, outside the dispatcher's lock."""
    if len(resolutions) == 1:  # a lone call's outcome
        call, value, error = resolutions[0]
        call.value, call.error = value, error
        call.waiter.settled([call])
        return
    for call, value, error in resolutions:
        call.value = value
        call.error = error
    tell_waiters(list(map(_CALL, resolutions)))


def tell_waiters(calls: list[Call]) -> None:
    """Tell each waiter once about its calls, whose outcomes are stored (outside the lock)."""
    if not calls:
        return
    waiters = list(map(_WAITER, calls))
    if waiters.count(waiters[0]) == len(waiters):  # one waiter (a job's, a map chunk's)
        waiters[0].settled(calls)
        return
    if 8 * len(set(map(id, waiters))) <= len(calls):  # a few waiters, each with a run of calls
        groups = itertools.groupby(zip(waiters, calls, strict=True), _FIRST)  # a batch of map chunks
        runs = [(waiter, list(map(_SECOND, run))) for waiter, run in groups]
    else:  # a future a call
        runs = [(waiter, [call]) for waiter, call in zip(waiters, calls, strict=True)]
    by_waiter: dict[int, tuple[Waiter, list[Call]]] = {}
    for waiter, run in runs:
        entry = by_waiter.get(id(waiter))
        if entry is None:
            by_waiter[id(waiter)] = (waiter, run)
        else:
            entry[1].extend(run)
    for waiter, group in by_waiter.values():
        waiter.settled(group)


def task_failed(value: Any) -> TaskFailed:
    """TaskFailed from a worker's error dict (also of the remote class when that is known here;
    its fields as text, whatever they hold)."""
    if not isinstance(value, dict):
        return TaskFailed("Error", text(value))
    return remote_error(
        text(value.get("type", "Error")), text(value.get("message", "")), text(value.get("traceback", ""))
    )


def gave_up(call: Call, reason: str) -> WorkerUnavailable:
    """WorkerUnavailable for a call that ran out of attempts."""
    return WorkerUnavailable(
        f"{call.service} call {call.name!r} gave up after {call.attempts} attempt(s): {reason}"
    )


def encode(calls: Iterable[Call], max_bytes: int) -> tuple[list[Call], list[Resolution]]:
    """Encode each call's ``[args, kwargs]`` (``call.payload``) unless every call holds its
    payload already; the ones that cannot be sent, or are over ``max_bytes``, end at once
    (``NotSendable`` naming the place, ``ArgumentsTooLarge``)."""
    ready: list[Call] = []
    refused: list[Resolution] = []
    calls = calls if isinstance(calls, list) else list(calls)
    if all(map(_PAYLOAD, calls)) and max(map(len, map(_PAYLOAD, calls)), default=0) <= max_bytes:
        return calls, refused  # encoded already, together (``Calls.starmap``), and none too big
    payloads = codec.pack_calls(list(zip(map(_ARGS, calls), map(_KWARGS, calls), strict=True)))
    if payloads and set(map(type, payloads)) == {bytes} and max(map(len, payloads)) <= max_bytes:  # type: ignore[arg-type]
        for call, payload in zip(calls, payloads, strict=True):  # the common submission: all sendable
            call.payload = payload  # type: ignore[assignment]
        return calls, refused
    for call, payload in zip(calls, payloads, strict=True):
        refusal = _refusal(call, payload, max_bytes)
        if refusal is None:
            ready.append(call)
        else:
            refused.append(refusal)
    return ready, refused


def encode_one(call: Call, max_bytes: int) -> Resolution | None:
    """:func:`encode` of a call submitted alone: None when its payload is set and it may be sent,
    else its refusal (the call ended). No lists to build and pass over: 1.0 us against the
    2.0 us of ``encode([call])`` in a hot loop."""
    payload = codec.pack_one(call.args, call.kwargs)
    if type(payload) is bytes and len(payload) <= max_bytes:
        call.payload = payload
        return None
    return _refusal(call, payload, max_bytes)


def _refusal(call: Call, payload: Any, max_bytes: int) -> Resolution | None:
    """Why a call's encoded arguments cannot be sent (the call then ended); None when they can
    (``call.payload`` set)."""
    if isinstance(payload, codec.NotSendable):
        call.done = True
        return (call, None, TaskFailed("NotSendable", str(payload)))
    call.payload = payload
    if len(payload) > max_bytes:
        call.done = True
        why = f"arguments of {len(call.payload)} bytes are over max_value_bytes ({max_bytes} bytes)"
        return (call, None, TaskFailed(EndsAs.TOO_LARGE.value, why))
    return None


def ending(call: Call, ends_as: EndsAs, reason: str, value: Any) -> BaseException:
    """The error a call ends with, as the failover table says (``value``: the worker's error dict)."""
    if ends_as is EndsAs.FAILED:
        return task_failed(value)
    if ends_as is EndsAs.TIMEOUT:
        return TaskTimeout(f"{call.name!r} overran its timeout of {call.timeout_s:g} s ({reason})")
    if ends_as is EndsAs.CANCELLED:
        return CancelledError()
    if ends_as is EndsAs.UNAVAILABLE:
        error = gave_up(call, reason)
        if isinstance(value, dict) and isinstance(value.get("type"), str):  # the attempt's own error
            error.cause = {"type": value["type"], "message": text(value.get("message", ""))}
        return error
    if ends_as is EndsAs.CREDENTIAL:
        return CredentialLapsed(reason)
    return TaskFailed(ends_as.value, reason)
