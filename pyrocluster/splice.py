"""Big array bodies spliced into a packed value with one copy, instead of three.

msgpack packs an extension from ``bytes``: an array's body would be joined into those bytes
(one copy), copied into the packer's buffer (two) and copied out of it (three), all three alive
at once. Here the packer writes a 20-byte marker in the body's place and the result is built
once: the bytes before the marker, the extension's real header, the array's own buffer, the
bytes after. For a 256 MiB array that is 256 MiB copied instead of 768 MiB, and a peak of one
extra copy instead of three (``bench/big_values.py``). The output is the same msgpack (an ext 32).

Decoding goes the other way (:func:`split`): msgpack hands an extension's body to its hook as a
new ``bytes`` (a copy of the whole array, made holding the interpreter lock); here the big bodies
are found first and the rest is decoded from a small copy with a marker in each body's place, so
an array is decoded as a view of the buffer it was received into. The value is joined by
``bigbuffers.join``, which copies the big bodies without holding the interpreter lock.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from pyrocluster import bigbuffers

SPLICE_BYTES = 1 << 20
"""An extension body at least this big is spliced; a smaller one is packed as usual."""

MARKER_BYTES = 20
"""A random token of 16 bytes and the body's number."""
_EXT8, _EXT32 = 0xC7, 0xC9


class _State(threading.local):
    """One thread's bodies deferred by the pack in progress, and the token of their markers.

    The defaults are class attributes: a thread that never deferred a body reads None at once,
    where ``getattr(local, name, None)`` of a name never set raises and catches an
    AttributeError (about 1 us, paid by every ``codec.pack`` of a slot process's results)."""

    pending: list[tuple[bytes, list[Any]]] | None = None
    token = b""


_state = _State()


def _pending() -> list[tuple[bytes, list[Any]]]:
    pending = _state.pending
    if pending is None:
        pending = _state.pending = []
        _state.token = os.urandom(16)  # markers no value can predict
    return pending


def defer(pieces: list[Any]) -> bytes:
    """A marker to pack in place of an extension body made of ``pieces`` (buffers, in order)."""
    pending = _pending()
    marker = _state.token + len(pending).to_bytes(4, "big")
    pending.append((marker, pieces))
    return marker


def deferred() -> bool:
    """Whether a body waits to be spliced in (the last pack deferred one)."""
    return bool(_state.pending)


def discard() -> None:
    """Forget the bodies deferred by a pack that failed."""
    _pending().clear()


def finish(packed: bytes, place: bigbuffers.Place | None = None) -> bytes | bytearray | memoryview:
    """``packed`` with every deferred body spliced in place of its marker (``packed`` itself when
    nothing was deferred), written where ``place`` offers (``bigbuffers.join``)."""
    pending = _state.pending  # looked up inline: this runs once per value
    if not pending:
        return packed
    spans: list[tuple[int, int, int, list[Any]]] = []  # (marker start, ext type, body size, pieces)
    at = 0
    for marker, pieces in pending:
        start = packed.index(marker, at)
        if packed[start - 3] != _EXT8 or packed[start - 2] != MARKER_BYTES:
            raise ValueError("a spliced extension's marker is not where its header says")
        spans.append((start, packed[start - 1], sum(memoryview(p).nbytes for p in pieces), pieces))
        at = start + len(marker)
    pending.clear()
    whole = memoryview(packed)
    out: list[Any] = []
    src = 0
    for start, ext_type, size, body in spans:
        out += [whole[src : start - 3], bytes([_EXT32]) + size.to_bytes(4, "big") + bytes([ext_type]), *body]
        src = start + MARKER_BYTES
    out.append(whole[src:])
    return bigbuffers.join(out, place)


SCAN_ITEMS = 10_000
"""Most msgpack items :func:`split` walks before it gives up (a value of many small items has no
big body worth finding, and is decoded as usual)."""
_FIXED_SIZE = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}
_FIXED_SIZE |= {0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), _EXT32: (4, 1)}
_SIZED |= {0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}
"""Type byte: (bytes of its length field, bytes between that and the body)."""
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
"""Type byte: (bytes of its count, items per count)."""


def _big_bodies(data: Any, codes: frozenset[int]) -> list[tuple[int, int, int]] | None:
    """(start, header size, body size) of each ext 32 of one of ``codes`` with a body of at least
    ``SPLICE_BYTES``, or None when ``data`` is not one msgpack value of at most ``SCAN_ITEMS`` items."""
    spans = []
    pos, left, items, end = 0, 1, 0, len(data)
    while left:
        if pos >= end or items >= SCAN_ITEMS:
            return None
        b = data[pos]
        items += 1
        left -= 1
        if b <= 0x7F or b >= 0xE0:
            pos += 1
        elif b <= 0x8F:
            left += 2 * (b & 0x0F)
            pos += 1
        elif b <= 0x9F:
            left += b & 0x0F
            pos += 1
        elif b <= 0xBF:
            pos += 1 + (b & 0x1F)
        elif b in _FIXED_SIZE:
            pos += _FIXED_SIZE[b]
        elif b in _SIZED:
            width, extra = _SIZED[b]
            size = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            head = 1 + width + extra
            if b == _EXT32 and size >= SPLICE_BYTES and pos + head <= end and data[pos + 5] in codes:
                spans.append((pos, head, size))
            pos += head + size
        elif b in _CONTAINERS:
            width, per = _CONTAINERS[b]
            left += per * int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            pos += 1 + width
        else:  # 0xC1 is never used
            return None
    return spans if pos == end else None


def split(data: Any, codes: frozenset[int]) -> tuple[bytearray, bytes, list[memoryview]] | None:
    """``data`` with each big body of an extension in ``codes`` taken out: the rest (each body
    replaced by an ext 8 of the same code holding a marker: a random token and the body's number),
    the token, and the bodies as views of ``data``. None when there is no big body to take out."""
    spans = _big_bodies(data, codes)
    if not spans:
        return None
    token = os.urandom(16)
    whole = memoryview(data).cast("B")
    rest, bodies, src = bytearray(), [], 0
    for number, (start, head, size) in enumerate(spans):
        rest += whole[src:start]
        rest += bytes([_EXT8, MARKER_BYTES, data[start + 5]]) + token + number.to_bytes(4, "big")
        bodies.append(whole[start + head : start + head + size])
        src = start + head + size
    rest += whole[src:]
    return rest, token, bodies
