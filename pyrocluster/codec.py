"""msgpack encoding of plain task values, for the pipes between a worker and its processes.

It accepts exactly what a task may send (None, bool, int of any size, float, str, bytes,
list/tuple, dict, set) and names the type of anything else, so a result that could not cross
the wire fails its task with a clear message instead of breaking the whole reply.
"""

from __future__ import annotations

from typing import Any

import msgpack

_BIGINT = 0x31  # the ext code Pyro5's own msgpack serializer uses for ints beyond 64 bits


class NotSendable(TypeError):
    """A value of a type that cannot cross the wire."""


def _default(obj: Any) -> Any:
    if isinstance(obj, int):
        return msgpack.ExtType(_BIGINT, str(obj).encode("ascii"))
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise NotSendable(f"a value of type {type(obj).__name__} cannot be sent (plain values only)")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _BIGINT:
        return int(data)
    raise NotSendable(f"unknown msgpack extension {code}")


def pack(obj: Any) -> bytes:
    """Encode a plain value; NotSendable names the first type that is not one."""
    try:
        return msgpack.packb(obj, use_bin_type=True, default=_default)
    except NotSendable:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise NotSendable(str(exc)) from None


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _pairs_to_dict(pairs: Any) -> dict[Any, Any]:
    return {_hashable(k): v for k, v in pairs}


def unpack(data: bytes) -> Any:
    """Decode what :func:`pack` encoded."""
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except NotSendable:
        raise
    except TypeError:
        # A dict key that was a tuple (serpent delivers those) comes back as a list, which cannot
        # be a key: decode again with such keys turned back into tuples (slower, and rare).
        return msgpack.unpackb(
            data, raw=False, ext_hook=_ext_hook, strict_map_key=False, object_pairs_hook=_pairs_to_dict
        )


def sendable_outcomes(outcomes: list[list[Any]]) -> bytes:
    """Pack ``[kind, value, ms]`` outcomes, failing (ERROR) each one whose value cannot be sent."""
    try:
        return pack(outcomes)
    except NotSendable:
        pass
    fixed = []
    for outcome in outcomes:
        try:
            pack(outcome[1])
            fixed.append(outcome)
        except NotSendable as exc:
            error = {"type": "NotSendable", "message": f"result cannot be sent: {exc}", "traceback": ""}
            fixed.append([1, error, outcome[2]])
    return pack(fixed)
