"""The Python API's crawl options checked for type before a crawl starts, as a job file's are by
its schema: a wrong one is a ``TypeError`` naming the option, not an arithmetic error later."""

from __future__ import annotations

import os
from collections.abc import Mapping
from numbers import Real
from typing import Any

_INT = ("max_pages", "max_depth", "max_bytes", "retries")
_NUMBER = ("per_host_rate", "timeout")
_BOOL = ("robots", "sitemaps")
_TEXT = ("user_agent", "revisit")
_TEXTS = ("allow", "tags")
_MAPPINGS = ("extract", "headers", "cookies")


def check_types(options: Mapping[str, Any]) -> None:
    """TypeError naming the first option of ``options`` whose value has the wrong type (None is
    the default of every option)."""
    for name, value in options.items():
        if value is None:
            continue
        if name in _INT and (type(value) is bool or not isinstance(value, int)):
            _refuse(name, "an int", value)
        elif name in _NUMBER and (type(value) is bool or not isinstance(value, Real)):
            _refuse(name, "a number of seconds", value)
        elif name in _BOOL and not isinstance(value, bool):
            _refuse(name, "True or False", value)
        elif name in _TEXT and not isinstance(value, str):
            _refuse(name, "a string", value)
        elif name == "state" and not isinstance(value, (str, os.PathLike)):
            _refuse(name, "a file name", value)
        elif name in _TEXTS and (isinstance(value, (str, bytes)) or not _all_text(value)):
            _refuse(name, "a list of strings", value)
        elif name in _MAPPINGS and not (
            isinstance(value, Mapping) and _all_text(value) and _all_text(value.values())
        ):
            _refuse(name, "a dict of strings", value)


def _all_text(values: Any) -> bool:
    try:
        return all(isinstance(v, str) for v in values)
    except TypeError:  # not iterable
        return False


def _refuse(name: str, wanted: str, value: Any) -> None:
    raise TypeError(f"crawl option {name} must be {wanted}, got {type(value).__name__} {value!r:.60}")
