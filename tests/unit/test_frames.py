"""Pyro5 messages read and written a piece at a time (coordinator/frames.py) on real socket pairs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import Pyro5.errors
import pytest
from Pyro5 import protocol, serializers

from pyrocluster import attachments, config
from pyrocluster.config import Settings
from pyrocluster.coordinator.channel import Channel, Undecodable
from pyrocluster.coordinator.frames import EAGER_BYTES, JOIN_BYTES, ReplyReader, RequestWriter
from pyrocluster.coordinator.links import happened_of
from pyrocluster.coordinator.policy import Happened

MSGPACK = serializers.serializers["msgpack"]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    config.apply(Settings())
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def reply(value: object, seq: int = 1) -> bytes:
    data = MSGPACK.dumps(value)
    return bytes(protocol.SendingMessage(protocol.MSG_RESULT, 0, seq, MSGPACK.serializer_id, data).data)


def test_a_reply_arriving_a_byte_at_a_time_is_read_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    reader, wire_bytes = ReplyReader(), reply({"outcomes": [[0, b"x" * 100, 1.0]]})
    for i, byte in enumerate(wire_bytes):
        assert reader.read(ours) is None, f"complete after {i} of {len(wire_bytes)} bytes"
        theirs.send(bytes([byte]))
    message = reader.read(ours)
    assert message is not None and MSGPACK.loads(message.data) == {"outcomes": [[0, b"x" * 100, 1.0]]}
    theirs.send(reply(7, seq=2))  # the reader starts afresh for the next reply
    message = reader.read(ours)
    assert message is not None and message.seq == 2


def test_a_header_that_is_not_pyro5_or_announces_too_much_is_refused_before_its_payload(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.send(b"HTTP/1.1 400 Bad Request\r\n\r\n".ljust(protocol._header_size))
    with pytest.raises(Pyro5.errors.ProtocolError):
        ReplyReader().read(ours)
    header = bytearray(reply(1)[: protocol._header_size])
    header[12:16] = (Pyro5.config.MAX_MESSAGE_SIZE + 1).to_bytes(4, "big")  # the data length field
    theirs.send(bytes(header))
    with pytest.raises(Pyro5.errors.ProtocolError, match="too large"):
        ReplyReader().read(ours)


def test_a_peer_that_hangs_up_mid_reply_is_a_closed_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    reader = ReplyReader()
    theirs.send(reply("x" * 1000)[:60])
    assert reader.read(ours) is None
    theirs.close()
    with pytest.raises(Pyro5.errors.ConnectionClosedError):
        reader.read(ours)


def test_a_request_larger_than_the_socket_buffer_goes_out_in_pieces(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 8192  # 2 MiB
    writer, got = RequestWriter(data), bytearray()
    rounds = 0
    while not writer.write(ours):
        rounds += 1
        while len(got) < len(data):
            try:
                got += theirs.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
    while len(got) < len(data):
        got += theirs.recv(1 << 20)
    assert rounds > 1 and bytes(got) == data


def test_a_whole_reply_whose_payload_cannot_be_decoded_fails_its_batch_as_decode_failed() -> None:
    config.apply(Settings())
    channel = Channel("PYRO:x@127.0.0.1:1", Settings())
    channel.seq = 1
    garbage = bytes(
        protocol.SendingMessage(protocol.MSG_RESULT, 0, 1, MSGPACK.serializer_id, b"\xc1\xc1").data
    )
    message = protocol.ReceivingMessage(garbage[: protocol._header_size], garbage[protocol._header_size :])
    with pytest.raises(Undecodable) as failed:
        channel.result_of(message)
    assert happened_of(failed.value) is Happened.DECODE_FAILED


class _Sends:
    """A real socket that counts its sends (what goes out in one send is one segment)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends: list[int] = []

    def send(self, data: memoryview) -> int:
        sent = self.sock.send(data)
        self.sends.append(sent)
        return sent


def test_a_small_request_in_pieces_goes_out_in_one_send(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    header, payload = b"H" * 40, b"p" * 200
    counted = _Sends(ours)
    assert RequestWriter([header, payload]).write(counted)
    assert counted.sends == [240]
    assert theirs.recv(1024) == header + payload


def test_a_big_request_in_pieces_is_not_joined(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    header, payload = b"H" * 40, bytes(JOIN_BYTES)
    counted = _Sends(ours)
    writer, got = RequestWriter([header, payload]), bytearray()
    while not writer.write(counted):
        got += theirs.recv(1 << 20)
    while len(got) < 40 + JOIN_BYTES:
        got += theirs.recv(1 << 20)
    assert counted.sends[0] == 40 and bytes(got) == header + payload


def test_replies_and_attachments_that_arrive_in_one_piece_are_each_read_whole(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A message's first receive takes more than its header (EAGER_BYTES): what it took past
    the header is read before the socket, whatever message it belongs to."""
    ours, theirs = pair
    body = b"b" * 300
    first = reply({"outcomes": [[0, None, 1.0]], "attached": [0]}, seq=1)
    theirs.sendall(b"".join([attachments.header(len(body)), body, first, reply(7, seq=2)]))
    reader = ReplyReader()
    message = reader.read(ours)
    assert message is not None and message.seq == 1
    assert [bytes(b) for b in message.attachments] == [body]  # type: ignore[attr-defined]
    second = reader.read(ours)  # all of it was taken from the socket with the first
    assert second is not None and second.seq == 2 and MSGPACK.loads(second.data) == 7
    assert reader.read(ours) is None


def test_a_reply_longer_than_the_first_receive_is_read_whole(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    value = {"outcomes": [[0, b"v" * (3 * EAGER_BYTES), 1.0]]}
    wire_bytes = reply(value)
    theirs.sendall(wire_bytes[: EAGER_BYTES + 10])
    reader = ReplyReader()
    assert reader.read(ours) is None
    theirs.sendall(wire_bytes[EAGER_BYTES + 10 :])
    message = reader.read(ours)
    assert message is not None and MSGPACK.loads(message.data) == value
