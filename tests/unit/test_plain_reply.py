"""A lone call's whole reply read in one step (coordinator/wire/plainreply.py) gives what the
ordinary steps give, and leaves every other shape of bytes to them."""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import pytest
from Pyro5 import protocol, serializers

from pyrocluster import attachments, config
from pyrocluster.config import Settings
from pyrocluster.coordinator.channel import Channel
from pyrocluster.coordinator.frames import ReplyReader
from pyrocluster.coordinator.wire.plainreply import NOT_PLAIN, plain_value

MSGPACK = serializers.serializers["msgpack"]
SERPENT = serializers.serializers["serpent"]
HEADER = struct.Struct(protocol._header_format)


def message(
    value: Any, seq: int = 7, flags: int = 0, serializer: Any = MSGPACK, annotations: Any = None
) -> bytes:
    """A reply as a worker's daemon sends it."""
    data = serializer.dumps(value)
    return bytes(
        protocol.SendingMessage(
            protocol.MSG_RESULT, flags, seq, serializer.serializer_id, data, annotations
        ).data
    )


def ordinary(chunk: bytes, seq: int = 7) -> Any:
    """What the ordinary steps make of a first receive of ``chunk``: the value, or what they raise."""
    config.apply(Settings())
    channel = Channel("PYRO:x@127.0.0.1:1", Settings())
    channel.seq = seq
    msg = ReplyReader().take_first(chunk)
    assert msg is not None
    return channel.result_of(msg)


VALUES = [
    {"outcomes": [[0, b"\x93\x01\x02\x03", 0.012]]},
    {"outcomes": [[1, "ValueError: no", 1.5]], "load": {"direct": [40001], "busy": 0}},
    {"outcomes": [[0, b"", 0.0]], "busy": False},
    {"a": "nested", "b": [None, True, 1.25, "ünïcode", b"\x00\xff"]},
    {"busy": True},
    [[1, [2, [3, {"deep": []}]]]],
    "a plain string",
    12345678901234567890,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_a_whole_plain_reply_gives_what_the_ordinary_steps_give(value: Any) -> None:
    chunk = message(value)
    got = plain_value(chunk, 7)
    assert got is not NOT_PLAIN
    assert got == ordinary(chunk) == value


def test_a_correlation_id_is_a_plain_reply() -> None:
    chunk = bytearray(message({"outcomes": []}))
    tag, ver, kind, ser, flags, seq, size, notes, _, pad, magic = HEADER.unpack_from(chunk)
    HEADER.pack_into(
        chunk, 0, tag, ver, kind, ser, flags | protocol.FLAGS_CORR_ID, seq, size, notes, b"c" * 16, pad, magic
    )
    assert plain_value(bytes(chunk), 7) == {"outcomes": []}


def _header_changed(chunk: bytes, **fields: Any) -> bytes:
    names = ["tag", "ver", "kind", "ser", "flags", "seq", "size", "notes", "corr", "pad", "magic"]
    values = dict(zip(names, HEADER.unpack_from(chunk), strict=True))
    values.update(fields)
    return HEADER.pack(*(values[n] for n in names)) + chunk[HEADER.size :]


WHOLE = message({"outcomes": [[0, b"\x03", 0.01]]})


@pytest.mark.parametrize(
    "chunk, why",
    [
        (WHOLE[:30], "part of a header"),
        (WHOLE[: HEADER.size], "a header alone"),
        (WHOLE[:-1], "part of the payload"),
        (WHOLE + b"P", "more than one message"),
        (WHOLE + WHOLE, "two messages"),
        (message({"outcomes": []}, seq=8), "another call's reply"),
        (_header_changed(WHOLE, tag=b"PYRX"), "not Pyro5"),
        (_header_changed(WHOLE, ver=protocol.PROTOCOL_VERSION + 1), "another protocol version"),
        (_header_changed(WHOLE, magic=0x1234), "a wrong magic number"),
        (_header_changed(WHOLE, kind=protocol.MSG_INVOKE), "a request, not a result"),
        (message(ValueError("raised"), flags=protocol.FLAGS_EXCEPTION), "an exception reply"),
        (message({"outcomes": []}, serializer=SERPENT), "another serializer"),
        (message({"outcomes": []}, annotations={"XYZW": b"note"}), "annotations"),
        (_header_changed(WHOLE, flags=protocol.FLAGS_COMPRESSED), "compressed"),
        (_header_changed(WHOLE[: HEADER.size] + b"\xc1\xc1", size=2), "bytes msgpack refuses"),
        (message({"outcomes": [[0, None, 0.1]], "attached": [0]}), "a reply naming attachments"),
        (message({1: "int keys"}), "a map the decoder refuses (no reply has int keys)"),
        (attachments.MAGIC + WHOLE[4:], "an attachment's header"),
    ],
)
def test_any_other_bytes_are_left_to_the_ordinary_steps(chunk: bytes, why: str) -> None:
    assert plain_value(chunk, 7) is NOT_PLAIN, why


def test_a_reply_over_the_message_cap_is_left_to_the_ordinary_steps_which_refuse_it() -> None:
    saved = protocol.config.MAX_MESSAGE_SIZE
    protocol.config.MAX_MESSAGE_SIZE = 10
    try:
        assert plain_value(WHOLE, 7) is NOT_PLAIN
    finally:
        protocol.config.MAX_MESSAGE_SIZE = saved


def test_values_pyro5s_msgpack_hooks_make_come_out_as_through_the_ordinary_steps() -> None:
    value = {"when": datetime.datetime(2026, 12, 7, 4, 0), "amount": decimal.Decimal("1.25"), "z": 1 + 2j}
    chunk = message(value)
    assert plain_value(chunk, 7) == ordinary(chunk)
