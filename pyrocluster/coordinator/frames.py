"""Pyro5 messages written and read a piece at a time on a non-blocking socket (plain or TLS).

The coordinator's reply loop serves every connection on one thread, so it never waits for a
peer: a request goes out as the socket takes it and a reply is read as its bytes arrive, its
40-byte header first (checked by Pyro5's own ``ReceivingMessage``: tag, version, magic, the
message cap) and then exactly the payload it announces. A peer that stops or drips bytes holds
only its own buffer. Memory grows with the bytes received, not with the size a header claims,
except for an attachment (``attachments.py``) before the reply, whose buffer is made at its
announced size (capped, with the reply, by the message cap) so that it is the value's only copy.
"""

from __future__ import annotations

import collections
import ssl
from collections.abc import Sequence
from typing import Any

import Pyro5.errors
from Pyro5 import protocol

from pyrocluster import attachments

HEADER_BYTES: int = protocol._header_size
"""Size of a Pyro5 message header."""
READ_CHUNK = 1 << 20
"""Most bytes taken from the socket in one receive."""
GROW_BYTES = 64 << 20
"""The payload buffer grows by at most this much at a time, as its bytes arrive: a peer that
announces a big reply and sends little holds little."""
WRITE_CHUNK = 256 * 1024
"""Most bytes handed to the socket in one send (a TLS send retried after WantWrite must repeat
the same bytes: a fixed chunk keeps the retry identical)."""
EAGER_BYTES = 4096
"""What the first receive of a message asks for: its header and, for an ordinary reply (tens to
hundreds of bytes), all of its payload, in one system call rather than two. Bytes taken past the
header are read before the socket's next ones (``_Ahead``)."""
JOIN_BYTES = 64 * 1024
"""A request of pieces no larger than this in all is joined and sent at once: one TCP segment,
so the worker's daemon reads the whole request on one wake-up (a header sent apart goes as a
40-byte segment of its own under TCP_NODELAY, and the worker wakes for it and again for the
payload). Copying that much costs well under a microsecond a KiB."""

Buffer = bytes | bytearray | memoryview
"""Anything a request piece may be."""

_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
"""Nothing can move now: try again when the socket is ready."""


class RequestWriter:
    """One encoded request, in one or more pieces (a header, then its payload), written as the
    socket takes it: the pieces of a big request are never joined, so it is not copied once more;
    those of a small one are (``JOIN_BYTES``)."""

    __slots__ = ("_views", "_sent")

    def __init__(self, data: Buffer | Sequence[Buffer]) -> None:
        if type(data) is bytes:  # a small request, joined already
            self._views = collections.deque((memoryview(data),))
            self._sent = 0
            return
        pieces = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
        if len(pieces) > 1 and sum(map(len, pieces)) <= JOIN_BYTES:
            pieces = [b"".join(pieces)]
        self._views = collections.deque([memoryview(p).cast("B") for p in pieces if len(p)])
        self._sent = 0

    def write(self, sock: Any) -> bool:
        """Send what the socket takes now: True once every byte is out.

        ConnectionClosedError when the connection broke.
        """
        views = self._views
        while views:
            view = views[0]
            try:
                self._sent += sock.send(view[self._sent : self._sent + WRITE_CHUNK])
            except _AGAIN:
                return False
            except OSError as exc:
                raise Pyro5.errors.ConnectionClosedError(f"sending: {exc}") from None
            if self._sent == len(view):
                views.popleft()
                self._sent = 0
        return True


class _Ahead:
    """A socket read through the bytes a receive took from it past what was asked for."""

    __slots__ = ("data", "sock")

    def __init__(self) -> None:
        self.data = memoryview(b"")
        self.sock: Any = None

    def recv(self, n: int) -> bytes:
        data = self.data
        if not data:
            return bytes(self.sock.recv(n))
        self.data = data[n:]
        return bytes(data[:n])

    def recv_into(self, view: memoryview) -> int:
        data = self.data
        if not data:
            return int(self.sock.recv_into(view))
        n = min(len(view), len(data))
        view[:n] = data[:n]
        self.data = data[n:]
        return n


class ReplyReader:
    """One Pyro5 reply message, read as its bytes arrive, with the attachments sent before it
    (``message.attachments``: their bodies, in order)."""

    __slots__ = (
        "_header", "_message", "_payload", "_got", "_size", "_attachment", "_attachments", "_room", "_source",
    )  # fmt: skip

    def __init__(self) -> None:
        self._header = bytearray()
        self._message: protocol.ReceivingMessage | None = None
        self._payload = bytearray()
        self._got = 0
        self._size = 0
        self._attachment: attachments.AttachmentReader | None = None
        self._attachments: list[bytes | bytearray] = []
        self._room = 0
        """Bytes the attachments of this reply may still take (set by the first one's header)."""
        self._source = _Ahead()
        """The socket, behind the bytes a message's first receive took past its header."""

    def read(self, sock: Any) -> protocol.ReceivingMessage | None:
        """Take what the socket holds now: the message once complete, else None (more is due).

        Reads until the socket has nothing more (a TLS socket's own buffer included, which a
        selector cannot see). ConnectionClosedError at end of stream or a broken connection,
        ProtocolError for a header that is not a Pyro5 reply or an attachment, or that announces
        more than the cap.
        """
        source = self._source
        source.sock = sock
        while True:
            if self._attachment is not None:
                try:
                    self._attachment.read(source)
                except _AGAIN:
                    return None
                except OSError as exc:
                    raise Pyro5.errors.ConnectionClosedError(f"receiving: {exc}") from None
                self._attachments.append(self._attachment.body)
                self._attachment = None
                continue
            if self._message is None:
                want = HEADER_BYTES - len(self._header)
            else:
                want = self._size - self._got
                if want == 0:
                    return self._complete()
            try:
                if self._message is None:
                    if self._header or source.data:
                        chunk = source.recv(want)
                    else:  # a message starts: whatever of it has come, in one receive
                        chunk = sock.recv(EAGER_BYTES)
                        if chunk:  # most replies come whole
                            whole = self._at_once(chunk)
                            if whole is not None:
                                return whole
                            continue  # the rest is read from what came
                    got = len(chunk)
                else:  # straight into the payload's place: no chunk to copy, no buffer regrown
                    if len(self._payload) == self._got:
                        self._payload.extend(bytes(min(want, GROW_BYTES)))
                    room = memoryview(self._payload)[self._got : self._got + min(want, READ_CHUNK)]
                    with room:
                        got = source.recv_into(room)
            except _AGAIN:
                return None
            except OSError as exc:
                raise Pyro5.errors.ConnectionClosedError(f"receiving: {exc}") from None
            if not got:
                raise Pyro5.errors.ConnectionClosedError("receiving: not enough data")
            if self._message is None:
                self._header += chunk
                if len(self._header) == HEADER_BYTES:
                    header, self._header = bytes(self._header), bytearray()
                    if header.startswith(attachments.MAGIC):
                        self._attach(header)
                    else:
                        self._start(header)
            else:
                self._got += got

    def _at_once(self, chunk: bytes) -> protocol.ReceivingMessage | None:
        """A message's first receive: the reply when all of it came (the common small reply,
        taken without the piecewise steps of :meth:`read`); else None, and what came is read
        before the socket's next bytes (``_Ahead``)."""
        if len(chunk) < HEADER_BYTES or chunk.startswith(attachments.MAGIC):
            self._source.data = memoryview(chunk)
            return None
        self._start(chunk[:HEADER_BYTES])
        end = HEADER_BYTES + self._size
        self._source.data = memoryview(chunk)[end if len(chunk) >= end else HEADER_BYTES :]
        if len(chunk) < end:
            return None
        self._payload = bytearray(chunk[HEADER_BYTES:end])  # writable: values decoded from it may be views
        self._got = self._size
        return self._complete()

    def _attach(self, header: bytes) -> None:
        """An attachment comes before the reply: read its body into one buffer of its size."""
        if not self._attachments and self._attachment is None:
            self._room = protocol.config.MAX_MESSAGE_SIZE
        try:
            size = attachments.parse_header(header, self._room)
        except attachments.AttachmentError as exc:
            raise Pyro5.errors.ProtocolError(f"{exc} (what a reply may carry)") from None
        self._room -= size
        self._attachment = attachments.AttachmentReader(size)

    def _start(self, header: bytes) -> None:
        message = protocol.ReceivingMessage(header)  # ProtocolError: not Pyro5, or over the cap
        if message.type != protocol.MSG_RESULT:
            raise Pyro5.errors.ProtocolError(f"invalid msg type {message.type} received (expected a result)")
        self._message = message
        self._size = message.data_size + message.annotations_size

    def _complete(self) -> protocol.ReceivingMessage:
        message = self._message
        assert message is not None
        # The bytearray itself, not a bytes copy of it: the decoder reads any buffer, and a big
        # value decoded from it (an array) is a view of it (one copy of the value in memory).
        message.add_payload(self._payload)  # our guard refuses compressed payloads here
        message.attachments = self._attachments  # type: ignore[attr-defined]
        self._message, self._header, self._payload, self._got, self._size = (
            None,
            bytearray(),
            bytearray(),
            0,
            0,
        )
        self._attachments = []
        return message
