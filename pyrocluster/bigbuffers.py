"""Big ``bytes`` made and filled without holding the interpreter lock.

``bytearray(n)`` zeroes its memory while holding the lock: for 300 MiB on a loaded 2-core machine
that is over a second in which no other thread of the process runs (a worker's probes, the
coordinator's wire loop). ``bytes(n)`` takes memory the system zeroes lazily, page by page as it
is first written; here it is written through a view of its data before anyone else sees it, by
system calls (``recv_into``, ``preadv``) or ``ctypes.memmove``, which let the lock go. The
slowest answer of another thread while 300 MiB was received and copied fell from 1.15 s to under
0.01 s (load 9, 2 cores). The result is an ordinary ``bytes``: every reader takes it as it is.

Writing into a ``bytes`` is only sound while no one else holds it (its hash is not computed yet):
:func:`allocate` and :func:`join` hand it out only once it is whole. CPython only; elsewhere a
``bytearray`` stands in.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

Place = Callable[[int], "memoryview | None"]
"""Where a big joined value may be written instead of a new ``bytes``: a writable view of that
many bytes, or None (a new ``bytes`` then). A slot process offers its shared log
(``slots/share.py``), so a big result is written once, where the worker reads it."""

_DATA_OFFSET = bytes.__basicsize__ - 1
"""Where a CPython ``bytes`` object's data starts, from its address (after its header)."""
_SOUND = sys.implementation.name == "cpython"
SMALL_BYTES = 1 << 16
"""Smaller buffers are made the ordinary way (zeroing them costs nothing worth avoiding)."""


def _new(size: int) -> tuple[bytes, int]:
    """A new ``bytes`` of ``size`` (calloc: the system zeroes each page as it is first touched)
    and the address of its data."""
    buffer = bytes(size)
    return buffer, id(buffer) + _DATA_OFFSET


def allocate(size: int) -> tuple[bytes | bytearray, memoryview]:
    """A new buffer of ``size`` bytes and a writable view of it: fill the view, then use the buffer."""
    if size < SMALL_BYTES or not _SOUND:
        buffer = bytearray(size)
        return buffer, memoryview(buffer)
    import ctypes  # only for big buffers: a process that never makes one does not load it

    made, address = _new(size)
    return made, memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def join(pieces: Sequence[Any], place: Place | None = None) -> bytes | bytearray | memoryview:
    """The pieces (buffers) one after another in one new buffer (or in the view ``place`` gives
    for their size); with numpy, big pieces are copied without the lock (numpy finds the address
    of any buffer, read-only ones included)."""
    views = [memoryview(p).cast("B") for p in pieces]
    total = sum(len(v) for v in views)
    np = _numpy()
    if np is None or total < SMALL_BYTES or not _SOUND:
        return b"".join(views)
    import ctypes

    target = None if place is None else place(total)
    made: bytes | memoryview
    if target is None:
        made, address = _new(total)
    else:
        made, address = target, np.frombuffer(target, np.uint8).ctypes.data
    for view in views:
        n = len(view)
        if n:
            ctypes.memmove(address, np.frombuffer(view, np.uint8).ctypes.data, n)
        address += n
    return made


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy
