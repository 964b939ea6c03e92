"""A job's calls made a chunk of items at a time, a field per C-level pass, not a loop per call.

A map of 20,000 ``add`` calls spent about 51 ms of the job's main thread building a coordinator
``Call`` per item in a Python loop (an attribute of the item at a time, a dictionary look-up for
its tags, a method call to mark what it keeps), on the thread that also encodes and sends. Here a
chunk's calls are one ``map(Call, ...)`` over the columns of its items (``zip(*items)``): the same
calls for less of the main thread's time per call (figures in BENCHMARKS.md, "W1 submit").
"""

from __future__ import annotations

from itertools import repeat

from pyrocluster.coordinator.calls import Call, Waiter
from pyrocluster.jobs.items import TaskItem


def calls_of(items: list[TaskItem], waiter: Waiter) -> list[Call]:
    """The compute calls of ``items``, each tagged with its item, told ``waiter`` when they end."""
    if not items:
        return []
    _, names, args, kwargs, tags, timeouts, retries, on_error, priorities, _, asks = zip(*items, strict=True)
    tagsets = {t: frozenset(t) for t in set(tags)}
    return list(
        map(Call, repeat("compute"), names, args, kwargs, map(tagsets.__getitem__, tags), timeouts,
            retries, on_error, repeat(waiter), items, priorities, asks)
    )  # fmt: skip
