"""A ``concurrent.futures.Future`` that makes its ``threading.Condition`` only when something
needs one.

``Future.__init__`` makes a Condition (an RLock and a Python-level object), and ``set_result``
and ``result`` each take it through Python-level ``__enter__``/``__exit__``, ``set_result``
notifying it through Python-level ``notify_all``. For a lone ``submit().result()`` whose reply
is read by the very thread that waits for it (``readhere.py``) there is nobody to wake: no one
can wait on a Condition that does not exist. So the Condition is made on first use (``wait``,
``as_completed``, a done callback, ``result()`` before the outcome, ``done()``, ``cancel()``),
under one module lock; an outcome set while none exists is stored under that lock alone, and a
result already there is returned without taking any lock (a finished future never changes).

Why it is safe: the Condition is made, and an outcome stored without it, only under
``_making``. A thread that made the Condition and waits on it saw the future pending under the
Condition, so an outcome set after that sees the Condition and takes the ordinary path, which
notifies; an outcome set before it was stored before the waiter looked.

The figure it buys: making a future, setting its result and reading it takes 1.55 us instead of
3.07 in a hot loop; with the other lone-call trims, 9% fewer opcodes and 7% less coordinator CPU
per lone call (BENCHMARKS.md, "The lone call's future and request, trimmed").
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import FINISHED, PENDING, RUNNING
from typing import Any

_making = threading.Lock()
"""Held while a future's Condition is made, or an outcome is stored without one."""


class LazyConditionFuture(Future):  # type: ignore[type-arg]
    """``Future`` with its Condition made on first use (see the module)."""

    def __init__(self) -> None:  # Future.__init__ but the Condition (made by __getattr__)
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        """Only for ``_condition`` the first time it is asked for: made now."""
        if name != "_condition":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with _making:
            condition = self.__dict__.get("_condition")
            if condition is None:
                condition = self.__dict__["_condition"] = threading.Condition()
        return condition

    def _store(self, result: Any, exception: BaseException | None) -> bool:
        """Store the outcome when no Condition exists (nobody waits, no callback): True if it did."""
        with _making:
            if "_condition" in self.__dict__:
                return False
            state = self._state
            if state in (PENDING, RUNNING):
                self._result, self._exception = result, exception
                self._state = FINISHED
                return True
        raise InvalidStateError(f"{state}: {self!r}")  # repr takes the Condition: not under _making

    def set_result(self, result: Any) -> None:
        """``Future.set_result``; without a Condition when none was made."""
        if "_condition" in self.__dict__ or not self._store(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        """``Future.set_exception``; without a Condition when none was made."""
        if "_condition" in self.__dict__ or not self._store(None, exception):
            super().set_exception(exception)

    def result(self, timeout: float | None = None) -> Any:
        """``Future.result``; a result already stored is returned without a lock."""
        if self._state == FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)
