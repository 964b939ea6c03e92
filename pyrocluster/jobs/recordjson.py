"""A results record as one JSON line, spelled the same whichever path writes it.

orjson writes almost every record at once (about 15x faster than the standard library). What
it refuses (a dict key that is not a string, an int beyond 64 bits, a lone surrogate, nesting
past 254 levels) goes through :func:`_careful`, which rebuilds the value from what orjson writes
itself and pre-spelled ``orjson.Fragment`` pieces, so both paths give the same bytes for what
both can write (tests/unit/test_record_json.py checks it on generated records). The spelling
(README, "Job files"):

- NaN and infinities are ``null``; a set is a list sorted by ``repr``; bytes are
  ``{"$base64": ...}``; a datetime, date or time its ISO 8601 string, a timedelta its seconds,
  a Decimal or UUID its string, a numpy array its nested lists, a data frame ``{column: [values]}``
  and a series its list; anything else its ``repr``.
- A dict key that is not a string is the JSON of the key in quotes: ``"1"``, ``"null"``,
  ``"true"``, ``"1.5"``, and ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` for the floats JSON lacks;
  a date key its ISO string. Two keys of one dict with the same spelling (``1`` and ``"1"``) make
  the record unwritable (``NotRecordable``) rather than a line a reader would read differently.
- A lone surrogate is a ``\\udXXX`` escape.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import re
import uuid
from itertools import repeat
from typing import Any

import orjson

from pyrocluster.valueref import ValueRef

OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME
"""The one line's options: datetimes go through :func:`default`, so every path spells them alike."""
_PIECE = orjson.OPT_PASSTHROUGH_DATETIME
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
"""The ints orjson writes; others are written by :func:`_careful`."""
_FRAGMENT_DEPTH = 200
"""Every this many levels :func:`_careful` writes the rest as a fragment (orjson stops at 254)."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_NONFINITE_KEYS = {math.inf: "Infinity", -math.inf: "-Infinity"}


def default(value: Any) -> Any:
    """What JSON lacks, in the spelling above (orjson's ``default``, and :func:`_careful`'s)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if type(value) is ValueRef:  # a big value kept on a worker: where it was written
        return value.json()
    module = type(value).__module__.partition(".")[0]
    if module == "numpy" and hasattr(value, "tolist"):  # an array or a numpy scalar
        return value.tolist()
    if module == "pandas" and hasattr(value, "to_dict"):  # a frame: {column: [values]}; a series: a list
        return value.to_dict(orient="list") if hasattr(value, "columns") else value.tolist()
    return repr(value)


def encode_record(record: dict[str, Any]) -> bytes:
    """One compact JSON line (with its newline) as UTF-8; TypeError or ValueError when it cannot be."""
    try:
        return orjson.dumps(record, default=default, option=OPTIONS)
    except TypeError:
        return careful(record)


def careful(record: dict[str, Any]) -> bytes:
    """The line orjson would write if it could write anything: the path for what it refuses."""
    return orjson.dumps(_careful(record, 0), default=default, option=OPTIONS)


def _careful(value: Any, depth: int) -> Any:
    """``value`` rebuilt from what orjson writes as this module spells it, and fragments."""
    if value is None or value is True or value is False or isinstance(value, float):
        return value
    if isinstance(value, str):
        return (
            value if value.isascii() or _SURROGATE.search(value) is None else orjson.Fragment(_string(value))
        )
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else orjson.Fragment(str(value).encode("ascii"))
    if depth and depth % _FRAGMENT_DEPTH == 0 and isinstance(value, (dict, list, tuple)):
        return orjson.Fragment(orjson.dumps(_careful(value, depth + 1), default=default, option=_PIECE))
    if isinstance(value, dict):
        kinds = set(map(type, value))
        if kinds <= {str} and not any(map(_SURROGATE.search, value)):
            return dict(zip(value, map(_careful, value.values(), repeat(depth + 1)), strict=True))
        if kinds == {int} and min(value) >= _INT64_MIN and max(value) <= _UINT64_MAX:
            # Int keys alone cannot collide and orjson spells them as _key does (100,000 keys:
            # 57 ms, 130 ms through _object).
            items = dict(zip(value, map(_careful, value.values(), repeat(depth + 1)), strict=True))
            return orjson.Fragment(
                orjson.dumps(items, default=default, option=_PIECE | orjson.OPT_NON_STR_KEYS)
            )
        return orjson.Fragment(_object(value, depth + 1))
    if isinstance(value, (list, tuple)):
        return list(map(_careful, value, repeat(depth + 1)))  # a frame a level, not two
    return _careful(default(value), depth)


def _object(value: dict[Any, Any], depth: int) -> bytes:
    """A dict with keys that are not all strings, its keys spelled by :func:`_key`."""
    spelled: dict[bytes, Any] = {}
    parts = []
    for key, item in value.items():
        name = _key(key)
        if name in spelled:
            raise ValueError(
                f"the keys {spelled[name]!r} and {key!r} of one dict are both written {name.decode()}"
            )
        spelled[name] = key
        parts.append(name + b":" + orjson.dumps(_careful(item, depth), default=default, option=_PIECE))
    return b"{" + b",".join(parts) + b"}"


def _key(key: Any) -> bytes:
    """A dict key as a JSON string: a string as itself, anything else the JSON of its value."""
    if isinstance(key, str):
        return _string(key)
    if key is None:
        return b'"null"'
    if key is True or key is False:
        return b'"true"' if key else b'"false"'
    if isinstance(key, int):
        return b'"%d"' % key
    if isinstance(key, float):
        if math.isnan(key):
            return b'"NaN"'
        name = _NONFINITE_KEYS.get(key)
        return b'"' + (name.encode("ascii") if name else orjson.dumps(key)) + b'"'
    spelled = None if isinstance(key, tuple) else default(key)
    if isinstance(spelled, (str, int, float)):
        return _key(spelled)
    raise TypeError(f"a dict key of type {type(key).__name__} cannot be written as JSON")


def _string(text: str) -> bytes:
    """``text`` as orjson spells a string, with each lone surrogate as a ``\\udXXX`` escape."""
    if _SURROGATE.search(text) is None:
        return orjson.dumps(text)
    parts = [b'"']
    pos = 0
    for match in _SURROGATE.finditer(text):
        parts += [orjson.dumps(text[pos : match.start()])[1:-1], b"\\u%04x" % ord(match.group())]
        pos = match.end()
    parts += [orjson.dumps(text[pos:])[1:-1], b'"']
    return b"".join(parts)
