"""Where in a value the part sits that msgpack refuses to send, for a ``NotSendable`` that names it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from pyrocluster import typed

NESTING_SHOWN = 1000
"""Containers nested this deep are reported as too deep (msgpack refuses about 1,024 levels);
the search for what cannot be sent keeps its own stack, so no depth raises RecursionError."""


def where_unsendable(value: Any, path: str) -> str | None:
    """``path[...]: what`` of the first part of ``value`` that :func:`pack` refuses, or None."""
    pending: list[Iterator[tuple[str, Any]]] = []
    while True:
        reason, children = _look(value, path)
        if reason:
            return reason
        if children is not None:
            if len(pending) == NESTING_SHOWN:
                return f"{path[:60]}...: nested more than {NESTING_SHOWN} levels deep"
            pending.append(children)
        while pending:
            step = next(pending[-1], None)
            if step is not None:
                path, value = step
                break
            pending.pop()
        else:
            return None


def _look(value: Any, path: str) -> tuple[str | None, Iterator[tuple[str, Any]] | None]:
    """What is wrong with ``value`` itself, or the parts of a container to look at next."""
    if typed.known(value):
        reason = typed.unsendable(value)
        return (f"{path}: {reason}" if reason else None), None
    if value is None or isinstance(value, (bool, float, bytes)):
        return None, None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{path}: a string with a lone surrogate at {exc.start} (not UTF-8)", None
        return None, None
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:
            return f"{path}: an int of more than {sys.get_int_max_str_digits()} digits", None
        return None, None
    if isinstance(value, (list, tuple, set, frozenset)):
        return None, ((f"{path}[{i}]", item) for i, item in enumerate(value))
    if isinstance(value, dict):
        for key in value:
            if not (key is None or isinstance(key, (bool, int, float, str, bytes, tuple))):
                return f"{path} key {key!r}: {type(key).__name__}", None
        return None, ((f"{path}[{key!r}]", item) for key, item in value.items())
    return f"{path}: {type(value).__name__}", None
