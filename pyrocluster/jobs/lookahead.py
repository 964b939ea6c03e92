"""Work started on a thread of its own before its answer is needed, its error kept for the reader.

``submit`` looks the live workers up (a name-server connection, the listing, a ping to each
worker: mostly waiting on other processes) while its main thread loads and checks the job file
(CPU). Side by side they cost the longer of the two instead of their sum: about 10 ms less per
job of 20,000 calls on two local workers (``python -m bench.phases``, BENCHMARKS.md).

The answer, or the error the work raised, is read only where the job reaches that step, so
what is reported first does not change: a job-file error still wins over an unreachable cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def ahead(work: Callable[[], T], name: str) -> Future[T]:
    """Run ``work()`` on a daemon thread (a process that gives up on it does not wait for it);
    the future's ``result()`` re-raises what it raised."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # kept for ``result()``, raised on the reader's thread
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
