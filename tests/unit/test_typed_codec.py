"""Typed values in the codec (no sockets): layouts round-trip, and any bytes decode or fail cleanly."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrocluster import codec, typed
from tests.helpers.datatasks import same, samples


def test_every_sample_round_trips_with_its_type():
    for name, value in samples().items():
        assert same(value, codec.unpack(codec.pack(value))), name


def test_an_array_arrives_over_the_received_bytes_read_only():
    back = codec.unpack(codec.pack(np.arange(1000, dtype=np.float32)))
    assert back.dtype == np.float32 and not back.flags.writeable  # no copy: as Ray's object store


def framed(header: list, body: bytes) -> bytes:
    packed = msgpack.packb(header)
    return len(packed).to_bytes(4, "little") + packed + body


@pytest.mark.parametrize(
    ("code", "data", "words"),
    [
        (typed.NDARRAY, framed(["|O", [1], False], b"x" * 8), "Python objects"),
        (typed.NDARRAY, framed(["<f8", [9], False], b"x" * 8), "an array of 8 bytes for shape"),
        (typed.DECIMAL, b"__import__('os')", "not a decimal"),
        (typed.DECIMAL, b"1" * 5000, "not a decimal"),
        (typed.DATETIME, msgpack.packb([2026, 13, 1, 0, 0, 0, 0, 0, None]), "not a datetime"),
        (
            typed.DATETIME,
            msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, ["zone", "../../etc/passwd"]]),
            "time zone",
        ),
        (typed.UUID, b"short", "UUID"),
        (typed.NPSCALAR, msgpack.packb(["<i8", b"123"]), "wrong size"),
        (typed.DATAFRAME, b"not arrow", "Arrow"),
    ],
)
def test_a_forged_extension_is_a_decode_error_naming_it(code: int, data: bytes, words: str):
    with pytest.raises(codec.DecodeError, match=words):
        codec.unpack(msgpack.packb(msgpack.ExtType(code, data)))


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from(sorted(typed.DECODERS)), data=st.binary(max_size=200))
def test_any_bytes_in_a_typed_extension_decode_or_raise_decode_error(code: int, data: bytes):
    with contextlib.suppress(codec.DecodeError):
        codec.unpack(msgpack.packb(msgpack.ExtType(code, data)))


def test_subclasses_of_plain_types_go_as_their_plain_value():
    import collections
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    point = collections.namedtuple("point", "x y")
    value = [Level.HIGH, collections.OrderedDict(a=1), point(1, 2), bytearray(b"z"), (1, (2,))]
    assert codec.unpack(codec.pack(value)) == [3, {"a": 1}, [1, 2], b"z", [1, [2]]]
    assert type(codec.unpack(codec.pack(dt.date(2026, 1, 1)))) is dt.date
    assert codec.unpack(codec.pack(decimal.Decimal("NaN"))).is_nan()


@pytest.mark.parametrize("text", ["-NaN123", "sNaN7", "-sNaN", "-Infinity", "1E+999999", "-0.00"])
def test_every_decimal_spelling_round_trips(text):
    value = decimal.Decimal(text)
    assert str(codec.unpack(codec.pack(value))) == text


def test_a_decimal_too_long_for_the_receiver_is_refused_when_sent():
    """Refused on the sender's side, naming the place, not by the worker after the trip."""
    with decimal.localcontext() as ctx:
        ctx.prec = 1100
        long = decimal.Decimal(1) / 3
    with pytest.raises(codec.NotSendable, match=r"args\[0\]\[1\]: a Decimal of 1102 characters"):
        codec.pack_call([[1, long]], {})
    longest = decimal.Decimal("-0." + "3" * 997)  # 1,000 characters: sent
    assert codec.unpack(codec.pack(longest)) == longest
