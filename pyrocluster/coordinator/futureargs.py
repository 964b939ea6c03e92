"""Futures passed as call arguments (as in Dask and Ray): the call waits for them and receives their results.

A waiting call costs a small object and a done-callback on each upstream future, never a thread:
it is handed to the dispatcher by whichever thread completes its last upstream.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, InvalidStateError
from typing import Any

from pyrocluster.coordinator.calls import Call, TaskFuture
from pyrocluster.errors import UpstreamFailed
from pyrocluster.valueref import ValueRef, refs_in

_cascade = threading.local()


def _soon(step: Callable[[], None]) -> None:
    """Run ``step`` now, or after the step already running in this thread (no recursion).

    Failing a future runs its done-callbacks at once, which fail the next futures: a chain of
    10,000 failed calls would otherwise recurse 10,000 deep.
    """
    queue: deque[Callable[[], None]] | None = getattr(_cascade, "queue", None)
    if queue is not None:
        queue.append(step)
        return
    _cascade.queue = queue = deque([step])
    try:
        while queue:
            queue.popleft()()
    finally:
        _cascade.queue = None


def upstream_futures(args: list[Any], kwargs: dict[str, Any]) -> list[TaskFuture]:
    """The distinct futures at the top level of ``args`` and ``kwargs`` values."""
    found: dict[int, TaskFuture] = {}
    for value in (*args, *kwargs.values()):
        if isinstance(value, TaskFuture):
            found.setdefault(id(value), value)
    return list(found.values())


def _result_of(value: Any) -> Any:
    """An argument's value: an upstream future's result, a kept one as its reference (the
    call's worker fetches it from the holder)."""
    return value.raw() if isinstance(value, TaskFuture) else value


class _Pending:
    """A call waiting for its upstream futures."""

    __slots__ = ("call", "left", "lock", "submit")

    def __init__(self, call: Call, left: int, submit: Callable[[list[Call]], None]) -> None:
        self.call = call
        self.left = left
        self.lock = threading.Lock()
        self.submit = submit

    def upstream_done(self, upstream: Any) -> None:
        """Done-callback of one upstream future."""
        failed = upstream.cancelled() or upstream.exception() is not None
        with self.lock:
            if self.left == 0:  # an earlier upstream failed: already settled
                return
            self.left = 0 if failed else self.left - 1
            if self.left:
                return
        _soon(lambda: self._fail(upstream) if failed else self._run())

    def _fail(self, upstream: TaskFuture) -> None:
        cause = CancelledError() if upstream.cancelled() else upstream.exception()
        assert cause is not None
        with contextlib.suppress(InvalidStateError):  # cancelled by the user meanwhile
            self.call.future.set_exception(UpstreamFailed(upstream.call.name, cause))

    def _run(self) -> None:
        call = self.call
        if call.future.cancelled():
            return
        sources = {id(v): v for v in (*call.args, *call.kwargs.values()) if isinstance(v, TaskFuture)}
        call.args = [_result_of(value) for value in call.args]
        call.kwargs = {key: _result_of(value) for key, value in call.kwargs.items()}
        refs = refs_in(call.args) + refs_in(call.kwargs)
        if refs:
            call.refs = tuple(refs)
            call.future.sources = {f.raw().id: f for f in sources.values() if isinstance(f.raw(), ValueRef)}
        try:
            self.submit([call])
        except Exception as exc:  # the cluster closed meanwhile: the call fails, never hangs
            with contextlib.suppress(InvalidStateError):
                call.future.set_exception(exc)


def submit_after(call: Call, upstreams: list[TaskFuture], submit: Callable[[list[Call]], None]) -> None:
    """Hand ``call`` to ``submit`` once every upstream succeeded, their results in their places.

    If one fails or is cancelled, the call never runs and its future raises
    :class:`~pyrocluster.errors.UpstreamFailed` naming that upstream.
    """
    pending = _Pending(call, len(upstreams), submit)
    for upstream in upstreams:
        upstream.follow(pending.upstream_done)
