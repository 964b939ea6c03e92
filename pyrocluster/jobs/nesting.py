"""How deeply a job file's values may nest: the check ``spec.load_job`` runs on args, kwargs and
map items, so a value every later stage can handle is the only kind that reaches a worker.

The limit is far below where the stages give up: a results record is written by recursive Python
(``recordjson._careful`` takes one or two frames a level, so about 450 levels under the stack a
runner already holds; ``graph.resolve`` and ``keptfiles.replaced`` two a level), msgpack refuses
1,024 levels and ``unsendable.NESTING_SHOWN`` 1,000. Past it, a task would run and then fail as
``NotRecordable`` (SPEC: bad input is refused before anything runs, exit 2).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pyrocluster.errors import JobFileError

MAX_VALUE_DEPTH = 200
"""Most lists and mappings an argument of a call (an ``args`` item, a ``kwargs`` value, an
argument of a ``map`` item) may hold inside one another: ``[[1]]`` is 2 levels."""
TOO_DEEP = f"nested deeper than {MAX_VALUE_DEPTH} levels (lists and mappings inside one another)"

Loc = tuple[Any, ...]
Place = tuple[Loc, list[Any] | dict[str, Any], bool]
"""A key path, the args list, kwargs mapping or map list there, and whether it is a map (a list
item is a call's arguments, anything else its only one)."""


def depth(limit: int, *values: Any) -> int:
    """How many levels of lists and mappings the deepest of ``values`` holds around an item, or
    ``limit + 1`` when more (an empty list or mapping is not a level).

    One level of all the values at a time, each in one C call: ``gc.get_referents`` gives what
    lists, dicts, tuples and sets hold (a dict's keys too: strings and numbers, which hold nothing)
    and nothing for a string or a number, so no Python runs per value. A level holding a shared
    (aliased) value many times is bounded by ``read_document``'s ``MAX_EXPANDED_VALUES``.
    """
    return _depth(limit, values)


def _depth(limit: int, level: Sequence[Any]) -> int:
    for levels in range(limit + 1):
        level = gc.get_referents(*level)
        if not level:
            return levels
    return limit + 1


def deeper_than(limit: int, *values: Any) -> bool:
    """True when one of ``values`` holds lists and mappings more than ``limit`` levels deep."""
    return depth(limit, *values) > limit


def check_nesting(places: Iterable[Place], fail: Callable[..., Exception]) -> None:
    """Raise ``fail(loc, message)`` at the first argument in ``places`` nested deeper than
    ``MAX_VALUE_DEPTH`` (at the map item holding it, for a map)."""
    places = list(places)
    # The usual case: one look at every level of every place at once (a 20,000-item map of
    # ``[1, 2]``: about 0.5 ms), enough unless a value is about as deep as allowed.
    values: list[Any] = []
    for _, container, _ in places:
        values.extend(container.values() if type(container) is dict else container)
    if _depth(MAX_VALUE_DEPTH + 1, values) <= MAX_VALUE_DEPTH:
        return
    for loc, container, is_map in places:
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            spread = is_map and type(value) is list
            if deeper_than(MAX_VALUE_DEPTH + spread, value):
                raise fail((*loc, key), TOO_DEEP)


def too_deep_to_read(path: str, text: str) -> JobFileError:
    """The error for a file whose reading gave up on a value nested too deeply (a RecursionError),
    at the first line holding more than ``MAX_VALUE_DEPTH`` brackets that open."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.count("[") + line.count("{") > MAX_VALUE_DEPTH:
            return JobFileError(path, f"line {number}", TOO_DEEP)
    return JobFileError(path, "", TOO_DEEP)
