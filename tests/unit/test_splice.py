"""A big array spliced into its packed value is the same msgpack as packing its joined body."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pyrocluster import codec, splice, typed


@pytest.mark.parametrize(
    "array",
    [
        np.arange(300_000.0),
        np.asfortranarray(np.arange(400_000.0).reshape(800, 500)),
        np.arange(300_000).astype("datetime64[s]"),
        np.arange(300_000.0).astype(">f8"),
        np.arange(600_000.0)[::2],
    ],
    ids=["c", "fortran", "datetime64", "big-endian", "strided"],
)
def test_spliced_bytes_are_plain_msgpack_and_decode_equal(array):
    assert array.nbytes >= splice.SPLICE_BYTES
    value = [[array, {"again": array}, "after"], {}]
    packed = codec.pack(value)
    body = msgpack.ExtType(typed.NDARRAY, b"".join(typed.array_pieces(array)))
    plain = msgpack.packb([[body, {"again": body}, "after"], {}], use_bin_type=True)
    assert bytes(packed) == plain
    args, _ = codec.unpack(packed)
    assert all(np.array_equal(a, array) and a.dtype == array.dtype for a in (args[0], args[1]["again"]))
    assert codec.pack_calls([([array], {})])[0] == codec.pack([[array], {}])


def test_a_failed_pack_leaves_nothing_behind():
    with pytest.raises(codec.NotSendable):
        codec.pack([np.arange(300_000.0), object()])
    assert codec.pack([1]) == b"\x91\x01"
    assert np.array_equal(codec.unpack(codec.pack([np.arange(300_000.0)]))[0], np.arange(300_000.0))


def test_a_big_array_decodes_as_a_view_of_the_buffer_it_was_received_into():
    array = np.arange(300_000.0)
    received = bytearray(codec.pack([[array, {"k": array * 2}, "after"], {}]))
    (first, second, after), kwargs = codec.unpack(received)
    assert np.array_equal(first, array) and np.array_equal(second["k"], array * 2)
    assert (after, kwargs) == ("after", {})
    whole = np.frombuffer(received, np.uint8)
    assert np.shares_memory(first, whole) and np.shares_memory(second["k"], whole)


def test_a_big_array_body_that_lies_about_its_shape_is_still_refused():
    body = bytearray(b"".join(typed.array_pieces(np.arange(300_000.0))))
    body[-1:] = b""  # a byte short of its shape
    packed = msgpack.packb([msgpack.ExtType(typed.NDARRAY, bytes(body))], use_bin_type=True)
    with pytest.raises(codec.DecodeError, match="ndarray extension"):
        codec.unpack(packed)


def test_a_value_of_many_items_is_decoded_as_usual_and_equal():
    value = [list(range(20_000)), np.arange(300_000.0)]
    back = codec.unpack(codec.pack(value))
    assert back[0] == value[0] and np.array_equal(back[1], value[1])
