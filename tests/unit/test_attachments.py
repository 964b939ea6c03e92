"""Big values beside their Pyro5 message (attachments.py, bigmessages.py, frames.py) on real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import Pyro5.errors
import pytest
from Pyro5 import protocol, serializers

from pyrocluster import attachments, config
from pyrocluster.config import Settings
from pyrocluster.coordinator import bigmessages
from pyrocluster.coordinator.channel import Undecodable
from pyrocluster.coordinator.frames import ReplyReader, RequestWriter

MSGPACK = serializers.serializers["msgpack"]
BODY = bytes(range(256)) * 12_000  # about 3 MiB, not a multiple of a chunk


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    config.apply(Settings())
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def sent_in_thread(sock: socket.socket, data: bytes, close: bool = False) -> threading.Thread:
    def send() -> None:
        sock.sendall(data)
        if close:
            sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_an_attachment_arrives_whole_in_one_buffer_and_the_next_follows_in_step(pair):
    ours, theirs = pair
    thread = threading.Thread(target=lambda: [attachments.send(theirs, b) for b in (BODY, b"next")])
    thread.start()
    first = attachments.receive(ours, cap=len(BODY))
    assert type(first) is bytes and first == BODY
    assert attachments.receive(ours, cap=100) == b"next"
    thread.join(timeout=10)


def test_an_attachment_over_the_cap_is_read_and_dropped_and_the_stream_stays_in_step(pair):
    ours, theirs = pair
    thread = threading.Thread(target=lambda: [attachments.send(theirs, b) for b in (BODY, b"next")])
    thread.start()
    assert attachments.receive(ours, cap=1000) == len(BODY)
    assert attachments.receive(ours, cap=100) == b"next"
    thread.join(timeout=10)


def test_a_stream_cut_half_way_is_a_clear_error_not_a_hang(pair):
    ours, theirs = pair
    sent_in_thread(theirs, attachments.header(len(BODY)) + BODY[: len(BODY) // 2], close=True)
    started = time.monotonic()
    with pytest.raises(attachments.AttachmentError, match=f"ended after {len(BODY) // 2} of the {len(BODY)}"):
        attachments.receive(ours, cap=len(BODY))
    assert time.monotonic() - started < 5


def test_a_stream_that_stalls_half_way_is_given_up_after_the_stall_bound(pair):
    ours, theirs = pair
    sent_in_thread(theirs, attachments.header(len(BODY)) + BODY[:1000])  # and then nothing, still open
    with pytest.raises(attachments.AttachmentError, match="moved no byte for 0.3 s"):
        attachments.receive(ours, cap=len(BODY), stall_s=0.3)


def test_bytes_that_are_not_an_attachment_header_are_refused(pair):
    ours, theirs = pair
    theirs.sendall(b"PYRO" + bytes(36))
    with pytest.raises(attachments.AttachmentError, match="expected an attachment header"):
        attachments.receive(ours, cap=100)


def reply(value: object, seq: int = 1) -> bytes:
    data = MSGPACK.dumps(value)
    return bytes(protocol.SendingMessage(protocol.MSG_RESULT, 0, seq, MSGPACK.serializer_id, data).data)


def read_whole(reader: ReplyReader, sock: socket.socket, limit_s: float = 10) -> protocol.ReceivingMessage:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        message = reader.read(sock)
        if message is not None:
            return message
        time.sleep(0.001)
    raise AssertionError("no whole reply")


def test_a_reply_after_its_attachment_puts_the_body_back_in_its_outcome(pair):
    ours, theirs = pair
    ours.setblocking(False)
    wire = b"".join(bytes(p) for p in attachments.pieces(BODY))
    thread = sent_in_thread(
        theirs, wire + reply({"outcomes": [[0, b"small", 1.0], [0, None, 2.0]], "attached": [1]})
    )
    message = read_whole(ReplyReader(), ours)
    thread.join(timeout=10)
    value = bigmessages.reattach(bigmessages.loads(MSGPACK, message.data), message.attachments)
    assert value["outcomes"][0] == [0, b"small", 1.0]
    assert value["outcomes"][1][1] == BODY and type(value["outcomes"][1][1]) is bytes


def test_a_reply_attachment_cut_half_way_breaks_the_connection_with_a_clear_error(pair):
    ours, theirs = pair
    ours.setblocking(False)
    sent_in_thread(theirs, attachments.header(len(BODY)) + BODY[:5000], close=True)
    with pytest.raises(Pyro5.errors.ConnectionClosedError, match=f"ended after 5000 of the {len(BODY)}"):
        read_whole(ReplyReader(), ours)


def test_a_reply_attachment_over_the_message_cap_is_refused_before_its_body(pair):
    ours, theirs = pair
    ours.setblocking(False)
    theirs.sendall(attachments.header(Pyro5.config.MAX_MESSAGE_SIZE + 1))
    with pytest.raises(Pyro5.errors.ProtocolError, match="over the cap"):
        read_whole(ReplyReader(), ours)


@pytest.mark.parametrize(
    "reply_value",
    [
        {"outcomes": [[0, None, 1.0]]},  # an attachment the reply does not name
        {"outcomes": [[0, b"x", 1.0]], "attached": [0]},  # named for an outcome holding a value
        {"outcomes": [[0, None, 1.0]], "attached": [3]},  # named for no outcome
    ],
)
def test_attachments_out_of_place_are_undecodable(reply_value):
    with pytest.raises(ValueError):
        bigmessages.reattach(reply_value, [bytearray(b"body")])
    assert issubclass(Undecodable, Exception)


def test_a_request_sends_its_big_payloads_after_the_message_and_asks_for_big_results_so():
    config.apply(Settings())
    small, big = b"\x01" * 100, b"\x02" * attachments.ATTACH_BYTES
    calls = [["a", "echo", small, 5.0, 0], ["b", "echo", big, 5.0, 0]]
    pieces = bigmessages.invoke_pieces(MSGPACK, 7, "obj", "run_batch", ({"from": "c", "calls": calls},))
    header, payload, att_header, body = pieces
    assert body is big and bytes(att_header) == attachments.header(len(big))
    message = protocol.ReceivingMessage(bytes(header))
    message.add_payload(bytes(payload))
    _obj, method, (request,), _kwargs = MSGPACK.loadsCall(message.data)
    assert method == "run_batch" and request["attached"] == [1] and request["attach"] == 1
    assert request["calls"] == [["a", "echo", small, 5.0, 0], ["b", "echo", None, 5.0, 0]]
    assert calls[1][2] is big  # the caller's request is left as it was (a retry sends it again)
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        writer, received = RequestWriter(pieces), bytearray()
        total = sum(len(p) for p in pieces)
        while not writer.write(left) or len(received) < total:
            received += right.recv(1 << 20)
    assert received.endswith(attachments.header(len(big)) + big)
