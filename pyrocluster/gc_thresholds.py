"""Fewer passes of Python's cycle collector while batches of calls flow (a higher young-generation
threshold): in a coordinator while a job or a ``map`` runs, in a worker and its slot processes
while they serve.

Why: a job allocates several objects per task (its call, the reply's values, the record) and keeps
thousands of them alive while they are in flight, so with the default thresholds the collector
runs every few hundred allocations and, as the heap grows, rescans all of it: about a fifth of
the coordinator's time on a job of tiny tasks, which is what this buys back (W1 submit of 20,000
``add``, ``bench.phases`` with py-spy; part of the coordinator CPU per task going from 44.5 to
20 us, BENCHMARKS.md). A ``map`` of 20,000 ``add`` spent about 100 ms of its coordinator's
time in 170 collections (a fifth to a quarter of its wall time on 2 busy cores; ``gc.callbacks``
timing); a worker decodes thousands of calls and outcomes per batch, and a slot process makes
a few containers per call, so both collected every few hundred calls too. Those objects form no
cycles and reference counting frees them at once, so collecting less often only lets the rare
cyclic garbage (an exception and its traceback) wait a little longer.

Reading a results file to resume (``paused_collections``) builds one dict per line, none of
them cyclic either: with the collector off meanwhile, a million-line resume takes half the time.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 200_000
"""Allocations between two collections of the youngest generation meanwhile (default 700)."""

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] = (0, 0, 0)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the youngest generation's threshold for the duration (nested and concurrent uses share it)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            if _saved[0]:  # 0: collection is off, leave it so
                gc.set_threshold(max(_saved[0], YOUNG_THRESHOLD), _saved[1], _saved[2])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)


@contextmanager
def paused_collections() -> Iterator[None]:
    """No cycle collection for the duration (a bulk read of acyclic records); back on after if it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
