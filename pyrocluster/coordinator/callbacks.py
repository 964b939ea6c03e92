"""The done-callbacks of users' futures, run on a thread of their own.

A call's outcome is set on the coordinator's loop thread (or on the thread that reads a lone
call's reply). A callback run there that blocks, one that submits a call and waits for its result
or only sleeps, held up every reply and liveness probe of the coordinator: its workers were set
aside as silent, and the call submitted from the callback never came back. So callbacks run, in
the order they were added, on one daemon thread started at first use, much as
``ThreadPoolExecutor`` runs them on its worker thread rather than on the thread that waits.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("concurrent.futures")
"""Where ``Future`` logs a callback that raised."""

Callback = Callable[[Any], object]

_queue: queue.SimpleQueue[tuple[Any, list[Callback]]] = queue.SimpleQueue()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def run_later(future: Any, callbacks: Iterable[Callback]) -> None:
    """Call each of ``callbacks`` with ``future`` on the callback thread."""
    global _thread
    _queue.put((future, list(callbacks)))
    if _thread is None:
        with _lock:
            if _thread is None:
                _thread = threading.Thread(target=_serve, name="future-callbacks", daemon=True)
                _thread.start()


def call(callback: Callback, future: Any) -> None:
    """``callback(future)``; an exception it raises is logged, as ``Future`` does."""
    try:
        callback(future)
    except Exception:
        log.exception("exception calling callback for %r", future)


def _serve() -> None:
    while True:
        future, callbacks = _queue.get()
        for callback in callbacks:
            call(callback, future)


def _forget_thread() -> None:
    """In a forked child the thread is gone: start another at the next callback."""
    global _thread, _queue, _lock
    _thread, _queue, _lock = None, queue.SimpleQueue(), threading.Lock()


os.register_at_fork(after_in_child=_forget_thread)
