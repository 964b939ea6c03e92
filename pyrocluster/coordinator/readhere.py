"""A lone call's reply read by the thread that waits for it; the wire's loop watches the call's
socket only when something may wait for it another way.

Watching a socket with the loop's selector costs two ``epoll_ctl`` system calls and the
selector's Python bookkeeping per call: about 20 us of the ~250 us of coordinator CPU a lone
``submit().result()`` took, for a reply the waiting caller then reads itself anyway. So the
request of a lone call is written unwatched (``Wire.push`` with ``unread``), and the future asks
the loop to watch it (``Wire.watch``) as soon as anything may wait on it without reading it: a
done callback, ``concurrent.futures.wait`` or ``as_completed`` (which add a waiter to the
future's private ``_waiters`` list: the one hook they offer), or ``done()``. A future nobody
looks at is watched from the loop's first pass ``wire.ADOPT_S`` after its request went out (at
most ``wire.LOOP_TICK_S`` later), so its reply is read, and its worker's slot counted free,
whether or not anyone asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import PENDING, RUNNING
from typing import Any

from pyrocluster.coordinator.lazycondition import LazyConditionFuture

INLINE_WAIT_S = 0.05
"""How long a thread waiting for a lone call's outcome reads the reply itself."""

UNDONE = (PENDING, RUNNING)


class ReadHere(LazyConditionFuture):
    """A future whose reply the thread that waits for it may read itself (``reader``), whose call
    the wire's loop watches once anyone else may wait for it (``watcher``); its Condition is
    made only when something needs one (``lazycondition.py``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reader: Callable[[float], bool] | None = None
        """Set when the call went out alone: reads its reply on the calling thread (see result)."""
        self.watcher: Callable[[], None] | None = None
        """Set when the loop does not watch that reply yet: asks it to."""

    def sent(self, reader: Callable[[float], bool], watcher: Callable[[], None] | None) -> None:
        """The call went out alone: its reply may be read with ``reader``; ``watcher``, when
        given, has the loop watch it."""
        self.reader, self.watcher = reader, watcher

    def ended(self) -> None:
        """The call has its outcome: nothing is left to read or watch."""
        self.reader = self.watcher = None

    def _pending(self) -> bool:
        return self._state in UNDONE

    def _read_here(self, timeout: float | None) -> float | None:
        """Read the reply on this thread (retries sent from here included) for up to
        ``INLINE_WAIT_S``, after which the loop thread reads; what is left of ``timeout``."""
        if self.reader is None:
            self._blocked()
            if self.reader is None:
                return timeout
        start = time.monotonic()
        window = INLINE_WAIT_S if timeout is None else min(timeout, INLINE_WAIT_S)
        while self._pending():
            reader, self.reader = self.reader, None  # a retry sent from here sets a new one
            if reader is None:  # none, or the wire thread settled the call meanwhile
                break
            left = window - (time.monotonic() - start)
            if left <= 0 or not reader(left):
                break
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - start))
        return timeout

    def _blocked(self) -> None:
        """The caller is about to block on a call that is not its own to read (yet): nothing here
        (a task's future may have it sent now)."""

    def _watch(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher()

    def result(self, timeout: float | None = None) -> Any:
        """``Future.result``, the reply read on this thread when the call went out alone."""
        return super().result(self._read_here(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """``Future.exception``, the reply read on this thread when the call went out alone."""
        return super().exception(self._read_here(timeout))

    def done(self) -> bool:
        """``Future.done``; someone polls it: the loop reads the reply from now on."""
        if self.watcher is not None:
            self._watch()
        return super().done()

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        """``Future.add_done_callback``; the loop reads the reply from now on, to call ``fn``."""
        if self.watcher is not None:
            self._watch()
        super().add_done_callback(fn)

    @property  # type: ignore[override]
    def _waiters(self) -> list[Any]:
        """Where ``concurrent.futures.wait``/``as_completed`` add their waiter: the loop reads
        the reply from now on, to wake them."""
        if self.watcher is not None:
            self._watch()
        return self._waiter_list

    @_waiters.setter
    def _waiters(self, waiters: list[Any]) -> None:
        self._waiter_list = waiters
