"""msgpack encoding of plain task values: each call's arguments and each outcome's value on its own.

It accepts exactly what a task may send (None, bool, int of any size, float, str, bytes,
list/tuple, dict with any of those keys, set) and names the type of anything else, so one value
that cannot cross the wire fails its own call and never the batch it travels in
(docs/protocol.md, "Values"). :func:`unpack` decodes any bytes in bounded time and memory, or
raises DecodeError (docs/protocol.md, "Decode bounds").
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import mmap
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack

from pyrocluster import bigbuffers, splice, typed
from pyrocluster.unsendable import where_unsendable

_BIGINT = 0x31  # the ext code Pyro5's own msgpack serializer uses for ints beyond 64 bits


class NotSendable(TypeError):
    """A value of a type that cannot cross the wire."""


class DecodeError(ValueError):
    """Bytes that are not a value :func:`pack` made (truncated, corrupt or not msgpack)."""


def _default(obj: Any) -> Any:
    """What msgpack cannot pack itself. The packer checks exact types (``strict_types``), so that
    a numpy float (a float subclass) keeps its type; other subclasses of plain types and tuples
    come here and go as their plain form."""
    kind = type(obj)
    if kind is tuple or kind is list:
        return list(obj)
    if kind is int:
        return msgpack.ExtType(_BIGINT, str(obj).encode("ascii"))
    if getattr(obj, "nbytes", 0) >= splice.SPLICE_BYTES and typed.is_array(obj):
        try:
            return msgpack.ExtType(typed.NDARRAY, splice.defer(typed.array_pieces(obj)))
        except TypeError as exc:
            raise NotSendable(
                f"a value of {exc} cannot be sent (Python objects never travel: no pickle)"
            ) from None
    try:
        ext = typed.encode(obj)
    except TypeError as exc:
        raise NotSendable(
            f"a value of {exc} cannot be sent (Python objects never travel: no pickle)"
        ) from None
    if ext is not None:
        return ext
    for plain in _PLAIN:
        if isinstance(obj, plain):
            convert: Callable[[Any], Any] = list if plain in (tuple, set, frozenset) else plain
            return convert(obj)
    raise NotSendable(f"a value of type {type(obj).__name__} cannot be sent (plain values or SPEC 9 types)")


_PLAIN: tuple[type, ...] = (
    bool,
    int,
    float,
    str,
    bytes,
    bytearray,
    memoryview,
    dict,
    list,
    tuple,
    set,
    frozenset,
)
"""Plain types whose subclasses (an IntEnum, an OrderedDict, a named tuple) go as the plain value."""


_packers = threading.local()  # a Packer is ten times cheaper to reuse than packb, but not thread-safe


def _packer() -> msgpack.Packer:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, default=_default, strict_types=True)
    return packer


def pack(obj: Any, place: bigbuffers.Place | None = None) -> bytes:
    """Encode a plain value; NotSendable names the first type that is not one.

    A value holding a big array may be written into the view ``place`` offers for its size
    (``bigbuffers.join``): it is then returned as that view."""
    packer = getattr(_packers, "packer", None)  # looked up inline: this runs once per result
    if packer is None:
        packer = _packer()
    try:
        return splice.finish(packer.pack(obj), place)  # type: ignore[return-value]  # bytes-like
    except NotSendable:
        splice.discard()
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        splice.discard()
        raise NotSendable(str(exc)) from None


BYTES_PER_CONTAINER = 2
"""A decoded value holds at most one list or dict per this many bytes received (beyond
``CONTAINER_ALLOWANCE``).

An empty list costs 1 byte on the wire and about 72 bytes decoded: this caps what any input can
cost at about 40 bytes of memory per byte received (docs/protocol.md, "Decode bounds")."""
CONTAINER_ALLOWANCE = 65_536
MAX_SHARED_HASH = 64
"""Keys of one dict that may share one hash value: more is a hash-flooding attempt (a dict
insert is linear in the keys sharing its hash, so a flood costs quadratic time)."""
_SMALL_MAP = MAX_SHARED_HASH
"""A dict with at most this many keys cannot be expensive: its hashes are not counted."""


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
"""The ints msgpack writes itself; :func:`_default` writes the others as the big int extension."""


def _decode_bigint(data: bytes) -> int:
    """An int beyond 64 bits as :func:`_default` writes it: canonical ASCII decimal, nothing else."""
    digits = data[1:] if data[:1] == b"-" else data
    if not digits.isdigit() or digits[:1] == b"0":  # bytes.isdigit: ASCII digits only
        raise DecodeError(f"big int extension holds {data[:40]!r}, not a canonical decimal")
    try:
        value = int(data)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
        raise DecodeError(f"big int extension of {len(digits)} digits is over the limit") from None
    if _INT64_MIN <= value <= _UINT64_MAX:
        raise DecodeError("big int extension holds a 64-bit int (pack writes those as msgpack ints)")
    return value


def _checked(name: str, decode: Callable[[bytes], Any]) -> tuple[str, Callable[[bytes], Any]]:
    """A typed value's decoder whose refusals are DecodeErrors naming the extension."""

    def run(data: bytes) -> Any:
        try:
            return decode(data)
        except typed.BadValue as exc:
            raise DecodeError(f"{name} extension: {exc}") from None

    return name, run


EXTENSIONS: dict[int, tuple[str, Callable[[bytes], Any]]] = {
    _BIGINT: ("big int", _decode_bigint),
    **{code: _checked(name, decode) for code, (name, decode) in typed.DECODERS.items()},
}
"""Code -> (name, decoder) of each msgpack extension :func:`pack` writes; any other is a DecodeError."""
_FOREIGN_EXTENSIONS = {-1: "msgpack timestamp"}
"""Names of extensions msgpack itself defines, for the error that refuses them."""


def _ext_hook(code: int, data: bytes) -> Any:
    extension = EXTENSIONS.get(code)
    if extension is None:
        raise _refused_extension(code)
    return extension[1](data)


def _refused_extension(code: int) -> DecodeError:
    name = _FOREIGN_EXTENSIONS.get(code)
    return DecodeError(
        f"msgpack extension {code} ({name}) is not a value pack makes"
        if name
        else f"unknown msgpack extension {code}"
    )


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


_TIMESTAMP_HEADS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")
"""How msgpack writes a timestamp (fixext 4, fixext 8, ext 8 of 12 bytes; type -1)."""
_NOT_A_CONTAINER_HEAD = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))
"""Every byte but those a msgpack array or map starts with (fixmap, fixarray, array/map 16/32)."""


def _may_hold_timestamp(data: bytes) -> bool:
    """Whether a timestamp's header appears anywhere in ``data``."""
    # ``0xFF in data`` is a memchr; ``bytes in data`` costs a caught TypeError first (about 1 us).
    return 0xFF in data and any(head in data for head in _TIMESTAMP_HEADS)


def _container_budget(data: bytes) -> int:
    return len(data) // BYTES_PER_CONTAINER + CONTAINER_ALLOWANCE


_UNCOUNTED_BYTES = 2 * CONTAINER_ALLOWANCE
"""A value this short cannot hold more containers than allowed (each costs a byte): not counted."""


def _may_overflow(data: bytes) -> bool:
    """Whether ``data`` may hold more containers than allowed: not when it has fewer bytes that
    could start one (a C-speed count, so that an ordinary value is decoded without counting hooks)."""
    return len(data.translate(None, _NOT_A_CONTAINER_HEAD)) > _container_budget(data)


class _Guard:
    """Hooks that bound what one decode builds: containers per byte, keys per hash, no timestamp.

    msgpack decodes its timestamp extension (-1) itself, past ``ext_hook``: when the bytes may
    hold one (its header appears anywhere), every container is searched for a Timestamp.
    """

    __slots__ = ("left", "search")

    def __init__(self, data: bytes, search: bool) -> None:
        self.left = _container_budget(data)
        self.search = search

    def _check(self, items: Iterable[Any]) -> None:
        if self.left < 0:
            raise DecodeError(
                f"more than one list or dict per {BYTES_PER_CONTAINER} bytes received (a decompression bomb)"
            )
        if self.search and msgpack.Timestamp in map(type, items):
            raise _refused_extension(-1)

    def on_list(self, items: list[Any]) -> list[Any]:
        self.left -= 1
        if self.left < 0 or self.search:
            self._check(items)
        return items

    def on_dict(self, value: dict[Any, Any]) -> dict[Any, Any]:
        """A dict with string or bytes keys (their hashes are randomized: nothing to count)."""
        self.left -= 1
        if self.left < 0 or self.search:
            self._check(value.values())
        return value

    def on_pairs(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        """A dict with keys of any type: a tuple for a list key, at most ``MAX_SHARED_HASH`` per hash."""
        self.left -= 1
        keys = [k for k, _ in pairs]
        if list in map(type, keys):
            keys = [_hashable(k) for k in keys]
        values = [v for _, v in pairs]
        if self.left < 0 or self.search:
            self._check(keys)
            self._check(values)
        try:
            if len(keys) > _SMALL_MAP and len(hashes := list(map(hash, keys))) != len(set(hashes)):
                shared = max(Counter(hashes).values())
                if shared > MAX_SHARED_HASH:
                    raise DecodeError(f"a dict with {shared} keys of one hash (a hash-flooding attempt)")
            return dict(zip(keys, values, strict=True))
        except TypeError:
            raise DecodeError("a dict key that cannot be a key (a dict)") from None


def unpack(data: bytes | bytearray | mmap.mmap) -> Any:
    """Decode what :func:`pack` encoded; DecodeError for anything else, never another exception.

    Bounded (docs/protocol.md, "Decode bounds"): at most one list or dict per
    ``BYTES_PER_CONTAINER`` bytes, at most ``MAX_SHARED_HASH`` keys of one dict with one hash, and
    only the extensions in ``EXTENSIONS``.
    """
    if len(data) >= splice.SPLICE_BYTES:
        found = splice.split(data, _VIEW_EXTENSIONS)
        if found is not None:
            return _unpack(found[0], _view_hook(*found))
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)  # a mapping (a slot's handed-off payload): the checks below scan bytes
    return _unpack(data, _ext_hook)


_VIEW_EXTENSIONS = frozenset({typed.NDARRAY})
"""Extensions decoded as a view of the received buffer when big (an array over its body)."""


def _view_hook(rest: Any, token: bytes, bodies: list[memoryview]) -> Callable[[int, bytes], Any]:
    """The extension hook of a value whose big bodies ``splice.split`` took out."""

    def hook(code: int, data: bytes) -> Any:
        if len(data) == splice.MARKER_BYTES and data[:16] == token:
            return EXTENSIONS[code][1](bodies[int.from_bytes(data[16:], "big")])  # type: ignore[arg-type]
        return _ext_hook(code, data)

    return hook


def _unpack(data: Any, ext_hook: Callable[[int, bytes], Any]) -> Any:
    search = _may_hold_timestamp(data)
    hooked = search or (len(data) > _UNCOUNTED_BYTES and _may_overflow(data))
    try:
        # Keys must be str or bytes here (randomized hashes, dicts built in C); a dict with any
        # other key is a ValueError, and the value is decoded again with ``on_pairs``.
        if not hooked:
            return msgpack.unpackb(data, raw=False, ext_hook=ext_hook)
        guard = _Guard(data, search)
        value = msgpack.unpackb(
            data, raw=False, ext_hook=ext_hook, list_hook=guard.on_list, object_hook=guard.on_dict
        )
    except DecodeError:
        raise
    except ValueError:
        guard = _Guard(data, search)
        try:
            value = msgpack.unpackb(
                data,
                raw=False,
                ext_hook=ext_hook,
                strict_map_key=False,
                list_hook=guard.on_list if hooked else None,
                object_pairs_hook=guard.on_pairs,
            )
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # msgpack raises ExtraData, FormatError, StackError ...
        raise DecodeError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    if type(value) is msgpack.Timestamp:
        raise _refused_extension(-1)
    return value


def _unpack_stream(joined: bytes, datas: list[bytes]) -> list[Any] | None:
    """The values of ``datas`` (``joined`` is their concatenation) decoded by one streaming
    unpacker, when each value ends exactly where its bytes do; None otherwise (a value spanning
    two of them, one holding two values or none, or anything the decoder refuses).

    ``joined`` is at most ``_UNCOUNTED_BYTES`` long, so even a value spanning several of them
    is one that :func:`unpack` would decode without counting its containers; the unpacker's
    limits are ``unpackb``'s for ``joined``. The figure it buys (:func:`unpack_each`, in
    process): 2,048 ``[args, kwargs]`` of ``add`` (a slot process's batch) 0.33 us a value
    against 0.47 through ``unpackb`` each with its keyword arguments, 2,048 small results (a
    reply) 0.17 against 0.31.
    """
    unpacker = msgpack.Unpacker(raw=False, ext_hook=_ext_hook, max_buffer_size=max(1, len(joined)))
    values: list[Any] = []
    ends: list[int] = []
    try:
        unpacker.feed(joined)
        for value in unpacker:
            values.append(value)
            ends.append(unpacker.tell())
    except Exception:  # decoded one by one instead, each failure its own
        return None
    return values if ends == list(itertools.accumulate(map(len, datas))) else None


def _unpack_map(datas: list[bytes]) -> list[Any] | None:
    """The values of ``datas``, one ``unpackb`` each in a C-level ``map`` (about 0.15 us a value
    less than through :func:`unpack`), when each is short enough to need no container count; None
    when one is longer or any fails."""
    if max(map(len, datas)) > _UNCOUNTED_BYTES:
        return None
    try:
        return list(map(_plain_unpackb, datas))
    except Exception:  # decoded one by one instead, each failure its own
        return None


_plain_unpackb = functools.partial(msgpack.unpackb, raw=False, ext_hook=_ext_hook)
"""``unpackb`` of a value :func:`unpack` needs no hooks for (short, no 0xFF byte: no timestamp)."""


def unpack_each(datas: list[bytes]) -> list[Any]:
    """:func:`unpack` of each of ``datas``: its value, or the :class:`DecodeError` it raised.

    A list of short values with no timestamp header among them (an ordinary batch of small
    arguments or results) is decoded with no Python frame per value: as one stream when they
    are short together (:func:`_unpack_stream`), else one ``unpackb`` each in a C-level ``map``;
    anything else, or a pass that fails, goes value by value, so one bad value is one
    DecodeError and never its neighbours'.
    """
    if datas and set(map(type, datas)) == {bytes}:
        joined = b"".join(datas)
        if not _may_hold_timestamp(joined):
            short = len(joined) <= _UNCOUNTED_BYTES
            values = _unpack_stream(joined, datas) if short else _unpack_map(datas)
            if values is not None:
                return values
    out: list[Any] = []
    for data in datas:
        try:
            out.append(unpack(data))
        except DecodeError as exc:
            out.append(exc)
    return out


def as_buffer(field: Any) -> bytes | bytearray:
    """:func:`as_bytes`, but a bytearray (an attachment's body) as it is: a big value is not copied."""
    return field if type(field) is bytearray else as_bytes(field)


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


def pack_call(args: Any, kwargs: Any) -> bytes:
    """``pack([args, kwargs])`` of one call; NotSendable names where the bad value sits.

    For example ``args[0]['when']: datetime``, so a submission can say which argument is wrong.
    """
    try:
        return pack([list(args), dict(kwargs)])
    except NotSendable as exc:
        where = where_unsendable(list(args), "args") or where_unsendable(dict(kwargs), "kwargs")
        raise NotSendable(f"{where} cannot be sent (plain values only)" if where else str(exc)) from None


def pack_calls(calls: Iterable[tuple[Any, Any]]) -> list[bytes | NotSendable]:
    """:func:`pack_call` of each ``(args, kwargs)``: its bytes, or the NotSendable it raised.

    One packer and one loop for a whole submission (a job hands the dispatcher hundreds of calls
    at once); a list and a dict are packed as they are, anything else goes through ``pack_call``.
    Calls that are all a list and a dict of plain values are packed in one C-level pass (no Python
    frame per call); any failure there, or a value spliced in, packs them one by one instead.
    """
    calls = calls if isinstance(calls, list) else list(calls)
    if len(calls) > 1:  # one call costs less through pack_one
        args, kwargs = zip(*calls, strict=True)
        if set(map(type, args)) == {list} and set(map(type, kwargs)) == {dict}:
            packed = _in_one_pass(map(list, calls))
            if packed is not None:
                return packed  # type: ignore[return-value]  # bytes only
    return [pack_one(args, kwargs) for args, kwargs in calls]


def pack_positional(args: list[list[Any]]) -> list[bytes] | None:
    """``pack([a, {}])`` of each argument list (a map's chunk: lists it made, no keywords) in one
    C-level pass; None when one cannot be sent or holds a big array to splice in, for
    :func:`pack_calls` to say which and where (120 ns a call less than it: no checks of types;
    a map's chunk of 1,024 made, encoded and queued in 613-623 ns a call against 782-796)."""
    return _in_one_pass(map(list, zip(args, itertools.repeat(_NO_KWARGS))))


_NO_KWARGS: dict[str, Any] = {}


def _in_one_pass(items: Iterator[list[Any]]) -> list[bytes] | None:
    """Each item packed, with no Python frame per item; None when one fails or a big array's
    marker was left to splice in (its body then waits for no one)."""
    try:
        packed = list(map(_packer().pack, items))
    except Exception:  # the caller packs them one by one, each failure its own
        splice.discard()
        return None
    if splice.deferred():
        splice.discard()
        return None
    return packed


def pack_one(args: Any, kwargs: Any) -> bytes | NotSendable:
    """:func:`pack_call` of one ``(args, kwargs)``: its bytes (bytes-like when a big array was
    spliced in), or the NotSendable it raised."""
    if type(args) is list and type(kwargs) is dict:
        try:
            return splice.finish(_packer().pack([args, kwargs]))  # type: ignore[return-value]  # bytes-like
        except Exception:  # noqa: S110 - pack_call below names what cannot be sent
            splice.discard()
    try:
        return pack_call(args, kwargs)
    except NotSendable as exc:
        return exc
