"""Big byte strings sent beside a Pyro5 message on its own connection, in chunks.

A value of hundreds of MiB inside a Pyro5 message is read whole by the receiving daemon and then
copied by every layer that handles the message (the serializer's bytes, the bin inside them).
An *attachment* travels instead as a 40-byte header (the size of a Pyro5 header, so one reader
tells the two apart by their first four bytes) and then its raw bytes, written and read in
chunks, received straight into one buffer allocated at the size the header announces. The
connection is the message's own, so its authentication and TLS cover the attachment too; no
new port exists. The wire layout is in docs/protocol.md ("Attachments").

This module knows only the frames: which values become attachments, and where they go back, is
the business of the messages that carry them (``coordinator/bigmessages.py``,
``services/compute.py``). Both blocking sockets (a Pyro5 daemon's thread) and the coordinator's
non-blocking loop (:class:`AttachmentReader`) use it.
"""

from __future__ import annotations

import select
import ssl
import struct
from typing import Any

from pyrocluster import bigbuffers

ATTACH_BYTES = 1 << 20
"""A value at least this big travels as an attachment rather than inside its message."""
MAGIC = b"PCAT"
HEADER = struct.Struct(">4sQ28x")
"""An attachment's header: ``PCAT``, the body's size (unsigned 64-bit, big-endian), 28 zero bytes."""
HEADER_BYTES = HEADER.size
CHUNK_BYTES = 1 << 20
"""Most bytes moved in one send or receive (the interpreter lock is free during each)."""
STALL_S = 30.0
"""A blocking reader or writer whose peer moves no byte for this long gives up (AttachmentError)."""

_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class AttachmentError(ConnectionError):
    """An attachment stream that broke, stalled, or does not follow the layout."""


def header(size: int) -> bytes:
    """The header announcing a body of ``size`` bytes."""
    return HEADER.pack(MAGIC, size)


def parse_header(data: bytes | bytearray, cap: int) -> int:
    """The body size a header announces; AttachmentError when it is not one or is over ``cap``."""
    magic, size = HEADER.unpack(bytes(data))
    if magic != MAGIC:
        raise AttachmentError(f"expected an attachment header, got {bytes(data[:4])!r}")
    if size > cap:
        raise AttachmentError(f"an attachment of {size} bytes is over the cap of {cap} bytes")
    return size


def pieces(body: Any) -> list[Any]:
    """The buffers that send ``body`` as an attachment (header and body, never joined)."""
    return [header(memoryview(body).nbytes), body]


def _wait(sock: Any, reading: bool, stall_s: float) -> None:
    if reading and isinstance(sock, ssl.SSLSocket) and sock.pending():
        return  # bytes decrypted already: a selector cannot see them
    ready = select.select([sock] if reading else [], [] if reading else [sock], [], stall_s)
    if not ready[0] and not ready[1]:
        raise AttachmentError(f"the peer moved no byte for {stall_s:g} s")


def send(sock: Any, body: Any, stall_s: float = STALL_S) -> None:
    """Write ``body`` as one attachment on a blocking socket, in chunks."""
    for piece in pieces(body):
        view = memoryview(piece).cast("B")
        sent = 0
        while sent < len(view):
            _wait(sock, False, stall_s)
            try:
                sent += sock.send(view[sent : sent + CHUNK_BYTES])
            except _AGAIN:
                continue
            except OSError as exc:
                raise AttachmentError(f"sending an attachment: {exc}") from None


def _recv_into(sock: Any, view: memoryview, stall_s: float) -> int:
    while True:
        _wait(sock, True, stall_s)
        try:
            got = sock.recv_into(view)
        except _AGAIN:
            continue
        except OSError as exc:
            raise AttachmentError(f"receiving an attachment: {exc}") from None
        return int(got)


def _fill(sock: Any, view: memoryview, stall_s: float, what: str) -> None:
    got = 0
    while got < len(view):
        n = _recv_into(sock, view[got : got + CHUNK_BYTES], stall_s)
        if not n:
            raise AttachmentError(f"the stream ended after {got} of the {len(view)} bytes of {what}")
        got += n


def receive(sock: Any, cap: int, stall_s: float = STALL_S) -> bytes | bytearray | int:
    """Read one attachment from a blocking socket: its body, in one buffer of its announced size.

    A body over ``cap`` is read and dropped a chunk at a time (the stream stays in step); its size
    is returned instead. AttachmentError when the stream ends early, stalls, or is not an attachment.
    """
    head = bytearray(HEADER_BYTES)
    _fill(sock, memoryview(head), stall_s, "an attachment header")
    size = parse_header(head, 2**64)
    if size > cap:
        scratch = memoryview(bytearray(min(size, CHUNK_BYTES)))
        left = size
        while left:
            n = _recv_into(sock, scratch[: min(left, CHUNK_BYTES)], stall_s)
            if not n:
                raise AttachmentError(f"the stream ended {left} bytes before the end of an attachment")
            left -= n
        return size
    body, view = bigbuffers.allocate(size)  # written once, by the receives: the only copy
    with view:
        _fill(sock, view, stall_s, "an attachment")
    return body


class AttachmentReader:
    """One attachment's body read a piece at a time from a non-blocking socket (after its header)."""

    __slots__ = ("body", "_view", "_got")

    def __init__(self, size: int) -> None:
        self.body, self._view = bigbuffers.allocate(size)
        self._got = 0

    def read(self, sock: Any) -> bool:
        """Take what the socket holds now: True once the body is whole (BlockingIOError and
        friends pass through; AttachmentError at end of stream)."""
        view = self._view
        while self._got < len(view):
            n = sock.recv_into(view[self._got : self._got + CHUNK_BYTES])
            if not n:
                raise AttachmentError(
                    f"the stream ended after {self._got} of the {len(view)} bytes of an attachment"
                )
            self._got += n
        view.release()
        return True
