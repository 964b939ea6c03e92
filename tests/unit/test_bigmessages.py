"""The coordinator's copy-free msgpack messages are byte for byte what Pyro5 would send and read."""

from __future__ import annotations

import socket

import Pyro5.errors
import pytest
from Pyro5 import protocol, serializers

from pyrocluster import config
from pyrocluster.config import Settings
from pyrocluster.coordinator import bigmessages
from pyrocluster.coordinator.frames import RequestWriter


def test_a_request_in_pieces_is_pyro5s_message_and_is_written_whole():
    config.apply(Settings())
    serializer = serializers.serializers["msgpack"]
    args = ({"from": "c", "calls": [["id", "echo", b"\x01" * 900_000, 5.0, 0]]},)
    header, payload = bigmessages.invoke_pieces(serializer, 7, "obj", "submit", args)
    pyro5 = protocol.SendingMessage(
        protocol.MSG_INVOKE,
        0,
        7,
        serializer.serializer_id,
        serializer.dumpsCall("obj", "submit", args, {}),
    )
    assert bytes(header) + bytes(payload) == pyro5.data
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        writer, received = RequestWriter([header, payload]), bytearray()
        while not writer.write(left):
            received += right.recv(1 << 20)
        while len(received) < len(pyro5.data):
            received += right.recv(1 << 20)
    assert received == pyro5.data


def test_a_reply_decodes_from_its_receive_buffer_as_pyro5_would():
    serializer = serializers.serializers["msgpack"]
    data = serializer.dumps({"outcomes": [[0, b"x" * 100, 1.5]], "load": 0})
    assert bigmessages.loads(serializer, bytearray(data)) == serializer.loads(data)


def test_a_small_request_is_pyro5s_message_in_one_piece():
    config.apply(Settings())
    serializer = serializers.serializers["msgpack"]
    request = {"from": "c", "calls": [["7", "add", b"\x92\x92\x01\x02\x80", 60.0, 0]], "keep": ["7"]}
    data = bigmessages.invoke_pieces(serializer, 9, "obj.direct", "run_batch", (request,))
    sent = {**request, "attach": 1}  # a run_batch request asks for big results as attachments
    pyro5 = protocol.SendingMessage(
        protocol.MSG_INVOKE,
        0,
        9,
        serializer.serializer_id,
        serializer.dumpsCall("obj.direct", "run_batch", (sent,), {}),
    )
    assert type(data) is bytes and data == pyro5.data
    small = bigmessages.invoke_small(serializer, 9, "obj.direct", "run_batch", (request,))
    assert small == pyro5.data  # a lone direct call's request, by the kept packer: the same bytes
    unscanned = bigmessages.invoke_pieces(serializer, 9, "obj.direct", "run_batch", (request,), scan=False)
    assert unscanned == pyro5.data  # a plain batch's, whose caller knows nothing is big: the same


def test_a_batch_request_not_scanned_is_the_scanned_ones_message():
    config.apply(Settings())
    serializer = serializers.serializers["msgpack"]
    calls = [[str(i), "add", bytes([0x92, 0x92, i % 100, i % 100, 0x80]), 60.0, 0] for i in range(3000)]
    request = {"from": "c", "calls": calls}
    scanned = bigmessages.invoke_pieces(serializer, 3, "obj.direct", "run_batch", (request,))
    unscanned = bigmessages.invoke_pieces(serializer, 3, "obj.direct", "run_batch", (request,), scan=False)
    assert type(scanned) is list and len(scanned) == 2  # header and payload, not joined
    assert type(unscanned) is list and [bytes(p) for p in unscanned] == [bytes(p) for p in scanned]


def test_a_small_request_that_cannot_be_packed_leaves_the_kept_packer_clean():
    config.apply(Settings())
    serializer = serializers.serializers["msgpack"]
    with pytest.raises(Pyro5.errors.SerializeError):  # what Channel.encode's callers expect
        bigmessages.invoke_small(serializer, 1, "obj", "echo", ({"no": object()},))
    data = bigmessages.invoke_small(serializer, 2, "obj", "echo", ("plain",))
    assert data == bytes(
        protocol.SendingMessage(
            protocol.MSG_INVOKE,
            0,
            2,
            serializer.serializer_id,
            serializer.dumpsCall("obj", "echo", ("plain",), {}),
        ).data
    )
