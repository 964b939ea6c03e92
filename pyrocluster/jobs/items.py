"""The calls a job makes: its tasks as ``TaskItem``s, maps expanded, defaults and callbacks applied."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from itertools import repeat
from typing import Any, NamedTuple

from pyrocluster.jobs.graph import RESULT_KEY, resolve
from pyrocluster.jobs.spec import CallbackSpec, Defaults, JobSpec, TaskSpec
from pyrocluster.resources import frozen


class TaskItem(NamedTuple):
    """One compute call of a job, defaults applied; ``tags`` sorted; ``kwargs`` shared by a map's items.

    A named tuple: a million-item ``map`` makes a million of these, and tuples are the cheapest.
    """

    id: str
    call: str
    args: list[Any]
    kwargs: dict[str, Any]
    tags: tuple[str, ...]
    timeout_s: float
    retries: int
    retry_on_error: bool
    priority: int = 0
    """Higher runs first among waiting work (SPEC 5.6); the task's own or the ``defaults`` one."""
    kind: str = "compute"
    """The record's ``kind``: ``compute``, or ``callback`` for ``on_success``/``on_failure`` calls."""
    resources: tuple[tuple[str, float], ...] = ()
    """What the call asks of its worker, sorted pairs; () for the default (``cpu: 1``)."""


def _resolved(task: TaskSpec, defaults: Defaults) -> tuple[tuple[str, ...], float, int, bool, int]:
    tags = task.tags if task.tags is not None else defaults.tags
    return (
        tuple(sorted(set(tags))),
        task.timeout if task.timeout is not None else defaults.timeout,
        task.retries if task.retries is not None else defaults.retries,
        task.retry_on_error if task.retry_on_error is not None else defaults.retry_on_error,
        task.priority if task.priority is not None else defaults.priority,
    )


def asked(task: TaskSpec, defaults: Defaults) -> tuple[tuple[str, float], ...]:
    """The task's resource ask (its own, else the ``defaults`` one) in its frozen form."""
    return frozen(task.resources if task.resources is not None else defaults.resources)


CHUNK = 512
"""Items of a map made (and handed out) together."""


def item_chunks(
    task: TaskSpec, defaults: Defaults, values: dict[str, Any] | None = None
) -> Iterator[list[TaskItem]]:
    """The calls of one task lazily, in lists of at most ``CHUNK``, maps expanded to ``<id>-<k>``;
    ``{$result: ID}`` taken from ``values``.

    A dynamic map's items are ``values`` of its source (see ``Flow.values_for``).
    """
    tags, timeout_s, retries, on_error, priority = _resolved(task, defaults)
    ask = asked(task, defaults)
    kwargs = resolve(task.kwargs, values) if values else task.kwargs
    if task.map is None:
        args = resolve(task.args, values) if values else task.args
        yield [
            TaskItem(
                task.id, task.call, args, kwargs, tags, timeout_s, retries, on_error, priority, "compute", ask
            )
        ]
        return
    entries = values[task.map[RESULT_KEY]] if values and task.dynamic else task.map
    entries = entries if isinstance(entries, list) else list(entries)
    fixed = (task.call, kwargs, tags, timeout_s, retries, on_error, priority, "compute", ask)
    for start in range(0, len(entries), CHUNK):
        yield map_items(task.id, entries[start : start + CHUNK], start, fixed)


def map_items(base: str, entries: list[Any], start: int, fixed: tuple[Any, ...]) -> list[TaskItem]:
    """The items ``<base>-<k>`` of a map's ``entries`` (the k-th is ``start + k``): each entry
    its arguments (a list as it is, anything else as the only one); ``fixed`` the fields after
    ``args`` (call, kwargs, tags, timeout, retries, retry_on_error, priority, kind, resources)."""
    ids = [f"{base}-{k}" for k in range(start, start + len(entries))]
    if set(map(type, entries)) != {list}:
        entries = [entry if isinstance(entry, list) else [entry] for entry in entries]
    call, *rest = fixed
    rows = zip(ids, repeat(call), entries, *map(repeat, rest))
    # tuple.__new__ skips the named tuple's Python-level __new__: half the cost per item.
    return list(map(tuple.__new__, repeat(TaskItem), rows))


def items_of(task: TaskSpec, defaults: Defaults, values: dict[str, Any] | None = None) -> Iterator[TaskItem]:
    """The calls of one task lazily, one at a time (see :func:`item_chunks`)."""
    return itertools.chain.from_iterable(item_chunks(task, defaults, values))


def iter_task_items(spec: JobSpec) -> Iterator[TaskItem]:
    """Every compute call of the static tasks lazily (dynamic maps and ``$result`` values aside)."""
    for task in spec.tasks:
        if not task.dynamic:
            yield from items_of(task, spec.defaults)


def callbacks_of(task: TaskSpec, defaults: Defaults) -> tuple[CallbackSpec | None, CallbackSpec | None]:
    """A task's ``(on_success, on_failure)``: its own if given (``null``: none), else the defaults'."""
    given = task.model_fields_set
    return (
        task.on_success if "on_success" in given else defaults.on_success,
        task.on_failure if "on_failure" in given else defaults.on_failure,
    )


def count_task_items(spec: JobSpec) -> int:
    """Number of compute calls known before running: static tasks (dynamic maps grow it as they expand)."""
    return sum(1 if task.map is None else (0 if task.dynamic else len(task.map)) for task in spec.tasks)


def called_tasks(spec: JobSpec) -> Iterator[tuple[str, str]]:
    """``(key path, task name)`` of every compute call the job may make, callbacks included."""
    for where, owner in (("defaults", spec.defaults), ("", spec)):
        for key in ("on_success", "on_failure"):
            callback = getattr(owner, key)
            if callback is not None:
                yield f"{where}.{key}.call" if where else f"{key}.call", callback.call
    for index, task in enumerate(spec.tasks):
        if task.map is None or task.map:
            yield f"tasks[{index}].call", task.call
        for key, callback in zip(
            ("on_success", "on_failure"), (task.on_success, task.on_failure), strict=True
        ):
            if callback is not None:
                yield f"tasks[{index}].{key}.call", callback.call


def task_names(spec: JobSpec) -> set[str]:
    """Compute task names the job calls (to check against the workers' registries)."""
    return {name for _, name in called_tasks(spec)}


def required_tags(spec: JobSpec) -> set[tuple[str, ...]]:
    """Distinct non-empty tag sets (sorted tuples) that some worker must carry in full."""
    tag_sets = (_resolved(task, spec.defaults)[0] for task in spec.tasks if task.map is None or task.map)
    return {tags for tags in tag_sets if tags}
