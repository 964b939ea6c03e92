"""Big array bodies spliced into a packed value with one copy, instead of three.

msgpack packs an extension from ``bytes``: an array's body would be joined into those bytes
(one copy), copied into the packer's buffer (two) and copied out of it (three), all three alive
at once. Here the packer writes a 20-byte marker in the body's place and the result is built
once: the bytes before the marker, the extension's real header, the array's own buffer, the
bytes after. For a 256 MiB array that is 256 MiB copied instead of 768 MiB, and a peak of one
extra copy instead of three (``bench/big_values.py``). The output is the same msgpack (an ext 32).
"""

from __future__ import annotations

import os
import threading
from typing import Any

SPLICE_BYTES = 1 << 20
"""An extension body at least this big is spliced; a smaller one is packed as usual."""

MARKER_BYTES = 20
"""A random token of 16 bytes and the body's number."""
_EXT8, _EXT32 = 0xC7, 0xC9
_state = threading.local()


def _pending() -> list[tuple[bytes, list[Any]]]:
    pending = getattr(_state, "pending", None)
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
    return bool(getattr(_state, "pending", None))


def discard() -> None:
    """Forget the bodies deferred by a pack that failed."""
    _pending().clear()


def finish(packed: bytes) -> bytes | bytearray:
    """``packed`` with every deferred body spliced in place of its marker (``packed`` itself when
    nothing was deferred)."""
    pending = getattr(_state, "pending", None)  # looked up inline: this runs once per value
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
    extra = sum(size + 6 - 3 - MARKER_BYTES for _, _, size, _ in spans)
    out = bytearray(len(packed) + extra)
    view = memoryview(out)
    src = 0
    dst = 0
    for start, ext_type, size, pieces in spans:
        head = start - 3
        view[dst : dst + head - src] = packed[src:head]
        dst += head - src
        view[dst : dst + 6] = bytes([_EXT32]) + size.to_bytes(4, "big") + bytes([ext_type])
        dst += 6
        for piece in pieces:
            body = memoryview(piece).cast("B")
            view[dst : dst + len(body)] = body
            dst += len(body)
        src = start + MARKER_BYTES
    view[dst:] = packed[src:]
    return out
