"""msgpack encoding of plain task values: each call's arguments and each outcome's value on its own.

It accepts exactly what a task may send (None, bool, int of any size, float, str, bytes,
list/tuple, dict with any of those keys, set) and names the type of anything else, so one value
that cannot cross the wire fails its own call and never the batch it travels in
(docs/protocol.md, "Values").
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterable
from typing import Any

import msgpack

_BIGINT = 0x31  # the ext code Pyro5's own msgpack serializer uses for ints beyond 64 bits


class NotSendable(TypeError):
    """A value of a type that cannot cross the wire."""


class DecodeError(ValueError):
    """Bytes that are not a value :func:`pack` made (truncated, corrupt or not msgpack)."""


def _default(obj: Any) -> Any:
    if isinstance(obj, int):
        return msgpack.ExtType(_BIGINT, str(obj).encode("ascii"))
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise NotSendable(f"a value of type {type(obj).__name__} cannot be sent (plain values only)")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _BIGINT:
        try:
            return int(data)
        except ValueError:
            raise DecodeError("a big int that is not a number") from None
    raise DecodeError(f"unknown msgpack extension {code}")


_packers = threading.local()  # a Packer is ten times cheaper to reuse than packb, but not thread-safe


def _packer() -> msgpack.Packer:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, default=_default)
    return packer


def pack(obj: Any) -> bytes:
    """Encode a plain value; NotSendable names the first type that is not one."""
    packer = getattr(_packers, "packer", None)  # looked up inline: this runs once per result
    if packer is None:
        packer = _packer()
    try:
        return packer.pack(obj)
    except NotSendable:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise NotSendable(str(exc)) from None


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _pairs_to_dict(pairs: Any) -> dict[Any, Any]:
    try:
        return {_hashable(k): v for k, v in pairs}
    except TypeError:
        raise DecodeError("a dict key that cannot be a key (a dict)") from None


def unpack(data: bytes) -> Any:
    """Decode what :func:`pack` encoded; DecodeError for anything else, never another exception."""
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except DecodeError:
        raise
    except TypeError:
        # A dict key that was a tuple (serpent delivers those) comes back as a list, which cannot
        # be a key: decode again with such keys turned back into tuples (slower, and rare).
        try:
            return msgpack.unpackb(
                data, raw=False, ext_hook=_ext_hook, strict_map_key=False, object_pairs_hook=_pairs_to_dict
            )
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError ...
        raise DecodeError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def as_bytes(field: Any) -> bytes:
    """An encoded field as it arrives over Pyro5: bytes, or serpent's ``{"data", "encoding"}`` form.

    Serpent has no bytes type and sends them as base64 in a dict; msgpack sends real bytes.
    DecodeError when ``field`` is neither.
    """
    if isinstance(field, bytes):
        return field
    if isinstance(field, (bytearray, memoryview)):
        return bytes(field)
    if isinstance(field, dict) and field.get("encoding") == "base64" and isinstance(field.get("data"), str):
        try:
            return base64.b64decode(field["data"], validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError("base64 data that is not base64") from None
    raise DecodeError(f"expected encoded bytes, got {type(field).__name__}")


def _where_unsendable(value: Any, path: str) -> str | None:
    """``path[...]: type`` of the first part of ``value`` that :func:`pack` refuses, or None."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            found = _where_unsendable(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not (key is None or isinstance(key, (bool, int, float, str, bytes, tuple))):
                return f"{path} key {key!r}: {type(key).__name__}"
            found = _where_unsendable(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return f"{path}: {type(value).__name__}"


def pack_call(args: Any, kwargs: Any) -> bytes:
    """``pack([args, kwargs])`` of one call; NotSendable names where the bad value sits.

    For example ``args[0]['when']: datetime``, so a submission can say which argument is wrong.
    """
    try:
        return pack([list(args), dict(kwargs)])
    except NotSendable as exc:
        where = _where_unsendable(list(args), "args") or _where_unsendable(dict(kwargs), "kwargs")
        raise NotSendable(f"{where} cannot be sent (plain values only)" if where else str(exc)) from None


def pack_calls(calls: Iterable[tuple[Any, Any]]) -> list[bytes | NotSendable]:
    """:func:`pack_call` of each ``(args, kwargs)``: its bytes, or the NotSendable it raised.

    One packer and one loop for a whole submission (a job hands the dispatcher hundreds of calls
    at once); a list and a dict are packed as they are, anything else goes through ``pack_call``.
    """
    pack = _packer().pack
    out: list[bytes | NotSendable] = []
    for args, kwargs in calls:
        if type(args) is list and type(kwargs) is dict:
            try:
                out.append(pack([args, kwargs]))
                continue
            except Exception:  # noqa: S110 - pack_call below names what cannot be sent
                pass
        try:
            out.append(pack_call(args, kwargs))
        except NotSendable as exc:
            out.append(exc)
    return out
