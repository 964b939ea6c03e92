"""A job's calls made a chunk of items at a time, a field per C-level pass, not a loop per call.

The runner built a coordinator ``Call`` per item in a Python loop (an attribute of the item at a
time, a dictionary look-up for its tags, a method call to mark what it keeps), on the main
thread, which also encodes and submits. Here a chunk's calls are one ``map(Call, ...)`` over the
columns of its items (``zip(*items)``), the items themselves made a column at a time
(``items.map_items``): the same calls, and the main thread's CPU per call of a 20,000-``add``
job from 2.65-3.36 us to 2.06-3.05 us (making, encoding and submitting; BENCHMARKS.md, "W1
submit, by thread").
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
