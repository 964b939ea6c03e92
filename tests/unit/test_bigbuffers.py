"""Big bytes made and filled without the interpreter lock hold what was written, nothing else."""

from __future__ import annotations

import numpy as np

from pyrocluster import bigbuffers


def test_an_allocated_buffer_is_bytes_holding_what_its_view_was_given():
    size = 3 * 1024 * 1024 + 5
    buffer, view = bigbuffers.allocate(size)
    with view:
        view[:4] = b"head"
        view[-4:] = b"tail"
    assert type(buffer) is bytes and len(buffer) == size
    assert buffer[:4] == b"head" and buffer[-4:] == b"tail" and buffer[4:-4] == bytes(size - 8)


def test_a_small_buffer_is_an_ordinary_bytearray():
    buffer, view = bigbuffers.allocate(10)
    view[:] = b"0123456789"
    assert buffer == bytearray(b"0123456789")


def test_joined_pieces_are_the_same_bytes_as_a_plain_join():
    array = np.arange(300_000.0)
    pieces = [b"head", memoryview(array).cast("B"), bytearray(b"mid"), array[:7].tobytes(), b""]
    joined = bigbuffers.join(pieces)
    assert type(joined) is bytes and joined == b"".join(bytes(memoryview(p).cast("B")) for p in pieces)
    assert bigbuffers.join([b"a", b"b"]) == b"ab"
