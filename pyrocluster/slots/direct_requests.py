"""A slot's plain direct connections read and answered here, without Pyro5's per-request
machinery; Pyro5's handling for everything unusual.

A connection's connect message is read here and handed whole to Pyro5's handshake (secret, token,
role: ``auth.py``); nothing else is read before it passes. After it, a request is read with one
non-blocking ``recv_into`` (Pyro5 reads a message in three ``recv`` calls, each after a ``poll``
because of the socket timeout), its Pyro5 header checked, its msgpack body decoded, the peer
checked as ``roles.requires`` does, and the reply written with one ``send`` in Pyro5's own framing
(the request's sequence number, its correlation id or a fresh one in the uuid4 format Pyro5 makes,
without a ``getrandom`` per request); no ``getpeername``, call context or housekeeping per
request. The bytes on the wire are those Pyro5 sends.

Anything else is handed to Pyro5's own request handling with the bytes read so far replayed to
it, so it behaves exactly as before: another message type (a ping), flags (oneway, batch,
compression), annotations, another serializer, another object or method, a request that is not
one plain call (decoded again by Pyro5, with its msgpack hooks), a peer whose role or token does
not pass (Pyro5 then sends the refusal), a message bigger than ``LEAN_MAX_BYTES``. A frame that is
not a Pyro5 message closes the connection with a log line. TLS connections keep Pyro5's handling
throughout (their bytes may wait decrypted in the TLS layer, where the slot's epoll cannot see
them).

A silent or half-dead client holds nothing: its partial message waits in its buffer while the
slot serves the others and its pipe, and the connection is closed once the message is not whole
``bound_s`` after its first byte came (after the connect, for the connect message); the slot's
epoll wakes for that deadline.

The figure it buys: slot-process CPU per lone direct call 203-260 -> 117-160 us under load 18-22,
the raw Pyro5 daemon's 70-110 in the same runs (``python -m bench.trace``, BENCHMARKS.md "W1
latency: the direct path").
"""

from __future__ import annotations

import contextlib
import logging
import random
import selectors
import socket
import struct
import time
from typing import Any, Protocol

import msgpack
import Pyro5
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers
from Pyro5 import socketutil

from pyrocluster import roles
from pyrocluster.auth import MAX_HANDSHAKE_BYTES, peer_address

log = logging.getLogger(__name__)

HEADER = struct.Struct(Pyro5.protocol._header_format)
"""Pyro5's fixed message header (40 bytes)."""
LEAN_MAX_BYTES = 2 * 1024 * 1024
"""The biggest message read here (a direct call's payload is under ``attachments.ATTACH_BYTES``);
a bigger one is read by Pyro5, bounded by its socket timeout."""
BUFFER_BYTES = 64 * 1024
"""A connection's buffer to begin with (grown up to ``LEAN_MAX_BYTES`` for a bigger message)."""
_MSGPACK = Pyro5.serializers.MsgpackSerializer()
_PYRO, _VERSION, _MAGIC = b"PYRO", Pyro5.protocol.PROTOCOL_VERSION, Pyro5.protocol._magic_number
_INVOKE, _RESULT = Pyro5.protocol.MSG_INVOKE, Pyro5.protocol.MSG_RESULT
_CORR_ID = Pyro5.protocol.FLAGS_CORR_ID
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)

_PACK = msgpack.Packer(use_bin_type=True, default=_MSGPACK.default).pack
"""Pyro5's msgpack encoding (``MsgpackSerializer.dumps``), one packer kept (``packb`` makes one
per call: 1.4 us of 2 for a reply)."""


class Service(Protocol):
    """What answers the lone calls here (``direct.DirectService``)."""

    def plain(self, request: Any) -> Any:
        """The lone plain call ``request`` asks for, None for any other request."""

    def run(self, plain: Any, sock: socket.socket) -> dict[str, Any]:
        """The reply to the plain call of a peer that may run tasks."""


def fresh_correlation_id() -> bytes:
    """16 random bytes in the uuid4 format, as Pyro5 gives a reply to a request without one
    (``random``, reseeded in each forked process, instead of a ``getrandom`` call: it only
    tells replies apart in logs)."""
    return ((random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET).to_bytes(16, "big")


class _Pending:
    """What a connection has sent of its next message."""

    __slots__ = ("buffer", "connecting", "filled", "since")

    def __init__(self, since: float = 0.0) -> None:
        self.buffer = bytearray(BUFFER_BYTES)
        self.filled = 0
        self.since = since
        """When the first byte of the message in the buffer came, or the connection was accepted
        while it has not passed its handshake (monotonic); 0.0 for none."""
        self.connecting = since > 0.0
        """True until the connection passed its handshake: nothing but that is read from it."""


class _Replayed:
    """A Pyro5 connection whose first bytes come from ``data`` (read here already)."""

    def __init__(self, conn: Any, data: bytes) -> None:
        self._conn = conn
        self._data = data

    def recv(self, size: int) -> bytes:
        """``size`` bytes, the replayed ones first."""
        head, self._data = self._data[:size], self._data[size:]
        if len(head) == size:
            return head
        return head + bytes(self._conn.recv(size - len(head)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        """Attributes land on the connection itself (the handshake keeps the peer there)."""
        if name in ("_conn", "_data"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


class DirectRequests:
    """Reads and answers the requests of a daemon's plain connections (the one ``object_id``'s
    ``run_batch``) and hands the rest to the daemon."""

    def __init__(
        self,
        daemon: Any,
        object_id: str,
        role: int,
        service: Service,
        bound_s: float,
    ) -> None:
        """``role``: what a peer needs for ``run_batch``; ``service`` answers it; ``bound_s``:
        longest a message may take to arrive whole."""
        self._daemon = daemon
        self._server = daemon.transportServer
        self._object_id = object_id
        self._role = role
        self._service = service
        self._bound_s = bound_s
        self._pending: dict[Any, _Pending] = {}
        """The plain connections served here, by their Pyro5 connection."""
        self._partial: set[Any] = set()
        """Those holding part of a message."""
        if not hasattr(self._server.sock, "getpeercert"):
            self._server.sock.setblocking(False)  # accepted here (TLS: by Pyro5, blocking)

    def _adopt(self, conn: Any) -> _Pending | None:
        """Serve ``conn`` here from now on if it is a plain connection (not TLS) that passed its
        handshake; its state, else None (the listening socket too: see :meth:`serve`)."""
        sock = getattr(conn, "sock", None)
        if sock is None or hasattr(sock, "getpeercert"):
            return None
        sock.setblocking(False)
        state = self._pending[conn] = _Pending()
        return state

    def _accept(self) -> None:
        """Take a new plain connection; its handshake is read as its requests are, under the same
        bound from the connect on (Pyro5 would wait for it with a socket timeout, serving nothing
        else meanwhile)."""
        try:
            sock, _address = self._server.sock.accept()
            sock.setblocking(False)
        except BlockingIOError:  # the client gave up before it was taken
            return
        except OSError as exc:  # the client went away already, or no file descriptor left
            log.warning("accepting a direct connection failed: %s", exc)
            return
        conn = socketutil.SocketConnection(sock)
        self._pending[conn] = _Pending(since=time.monotonic())
        self._partial.add(conn)
        self._server.selector.register(conn, selectors.EVENT_READ, self._server)

    def _handshake(self, conn: Any, state: _Pending, size: int) -> bool:
        """Pyro5's handshake on the connect message of ``size`` bytes, whole in the buffer (the
        secret, token and role checks of ``auth.py``, its reply); True when it passed and more
        bytes wait."""
        data = bytes(state.buffer[:size])
        self._consume(conn, state, size)
        conn.sock.settimeout(Pyro5.config.COMMTIMEOUT or None)  # for the reply
        try:
            passed = self._daemon._handshake(_Replayed(conn, data))
        except Exception as exc:  # as Pyro5's accept loop: logged, the connection closed
            self._close(conn, f"its handshake failed ({type(exc).__name__}: {exc})")
            return False
        if not passed:
            self._close(conn, None)  # refused: the handshake logged why, the client was told
            return False
        conn.sock.setblocking(False)
        state.connecting = False
        return state.filled > 0

    def timeout(self) -> float | None:
        """Seconds until the earliest deadline of a partial message, None without one."""
        if not self._partial:
            return None
        first = min(self._pending[conn].since for conn in self._partial)
        return max(0.0, first + self._bound_s - time.monotonic())

    def expire(self) -> None:
        """Close the connections whose message is not whole in time (after their bytes are read:
        a message whose end came while the slot ran a batch is whole)."""
        if not self._partial:
            return
        now = time.monotonic()
        for conn in [c for c in self._partial if self._pending[c].since + self._bound_s <= now]:
            filled = self._pending[conn].filled
            self._close(conn, f"{filled} bytes of a message, not whole after {self._bound_s:g} s")

    def serve(self, conn: Any) -> bool:
        """Read what ``conn`` sent, and answer each message that is whole; False (nothing done)
        for a connection Pyro5 serves (a connect on the listening socket, a TLS connection)."""
        state = self._pending.get(conn)
        if state is None:
            if conn is self._server.sock and not hasattr(conn, "getpeercert"):
                self._accept()
                return True
            state = self._adopt(conn)
            if state is None:
                return False
        try:
            with memoryview(state.buffer) as view:
                got = conn.sock.recv_into(view[state.filled :])
        except BlockingIOError:
            return True
        except OSError:
            self._close(conn, None)
            return True
        if not got:
            self._close(conn, None)  # the client closed it
            return True
        if not state.since:
            state.since = time.monotonic()
        state.filled += got
        while self._message(conn, state):
            pass
        return True

    def _message(self, conn: Any, state: _Pending) -> bool:
        """Answer the first message in the buffer if it is whole; True when another may follow."""
        buffer, filled = state.buffer, state.filled
        if filled < HEADER.size:
            if buffer[: min(filled, 4)] != _PYRO[:filled]:
                self._close(conn, "not a Pyro5 message")
                return False
            self._partial.add(conn)
            return False
        tag, version, kind, serializer_id, flags, seq, data_size, notes_size, corr_id, _, magic = (
            HEADER.unpack_from(buffer)
        )
        if tag != _PYRO or version != _VERSION or magic != _MAGIC:
            self._close(conn, "not a Pyro5 message, or another protocol version")
            return False
        body = data_size + notes_size
        if body > Pyro5.config.MAX_MESSAGE_SIZE:
            self._close(conn, f"a message of {body} bytes, over the most ({Pyro5.config.MAX_MESSAGE_SIZE})")
            return False
        size = HEADER.size + body
        if state.connecting:
            if size > MAX_HANDSHAKE_BYTES:
                self._close(conn, f"a connect message of {body} bytes, over {MAX_HANDSHAKE_BYTES}")
                return False
            if filled < size:
                self._partial.add(conn)
                return False
            return self._handshake(conn, state, size)
        if size > LEAN_MAX_BYTES:
            self._to_pyro5(conn, state, filled)  # it reads the rest, bounded by its socket timeout
            return False
        if filled < size:
            if size > len(buffer):
                state.buffer = bytearray(size)
                state.buffer[:filled] = buffer[:filled]
            self._partial.add(conn)
            return False
        if kind != _INVOKE or flags & ~_CORR_ID or notes_size or serializer_id != _MSGPACK.serializer_id:
            return self._to_pyro5(conn, state, size)
        try:  # without Pyro5's hooks, which only a request that is not a plain call needs
            with memoryview(buffer) as view, view[HEADER.size : size] as data:
                object_id, method, args, kwargs = msgpack.unpackb(data, raw=False)
        except Exception:  # whatever the decoder raises on bytes it cannot read: Pyro5 answers it
            return self._to_pyro5(conn, state, size)
        if (
            object_id != self._object_id
            or method != "run_batch"
            or type(args) is not list
            or len(args) != 1
            or type(kwargs) is not dict
            or kwargs
            or not self._passes(conn)
        ):
            return self._to_pyro5(conn, state, size)
        plain = self._service.plain(args[0])
        if plain is None:
            return self._to_pyro5(conn, state, size)
        self._consume(conn, state, size)
        sock = conn.sock
        try:
            reply = self._service.run(plain, sock)
            data = _PACK(reply)
            if len(data) > Pyro5.config.MAX_MESSAGE_SIZE:
                raise Pyro5.errors.ProtocolError(
                    f"message too large ({len(data)}, max={Pyro5.config.MAX_MESSAGE_SIZE})"
                )
            if not flags & _CORR_ID:
                corr_id = fresh_correlation_id()
            header = HEADER.pack(
                _PYRO, _VERSION, _RESULT, serializer_id, _CORR_ID, seq, len(data), 0, corr_id, 0, _MAGIC
            )
            _send(sock, header + data)
        except Exception as exc:  # the reply could not be made or sent: the client sees the close
            self._close(conn, f"its reply failed ({type(exc).__name__}: {exc})")
            return False
        return state.filled > 0

    def _passes(self, conn: Any) -> bool:
        """The peer may call ``run_batch`` now (as ``roles.check`` decides; Pyro5 refuses the rest)."""
        peer = getattr(conn, "pyrocluster_peer", roles.SECRET_PEER)
        if peer.rank < self._role:
            return False
        return not (peer.is_token and roles.invalid_reason(peer, time.time()))

    def _consume(self, conn: Any, state: _Pending, size: int) -> None:
        """Drop the first ``size`` bytes of the buffer (the message being answered)."""
        filled = state.filled
        if filled > size:
            state.buffer[: filled - size] = state.buffer[size:filled]
            state.since = time.monotonic()
        else:
            state.since = 0.0
            self._partial.discard(conn)
        state.filled = filled - size

    def _to_pyro5(self, conn: Any, state: _Pending, size: int) -> bool:
        """Let Pyro5 handle the message of ``size`` bytes (the first ``filled`` in the buffer), with
        its socket timeout; True when the connection stays and holds more bytes."""
        data = bytes(state.buffer[: min(size, state.filled)])
        self._consume(conn, state, min(size, state.filled))
        conn.sock.settimeout(Pyro5.config.COMMTIMEOUT or None)
        active = self._server.handleRequest(_Replayed(conn, data))
        if not active:
            self._close(conn, None)
            return False
        conn.sock.setblocking(False)
        return state.filled > 0

    def _close(self, conn: Any, why: str | None) -> None:
        """Close a connection as Pyro5 does, with a log line when ``why`` says it misbehaved."""
        if why is not None:
            log.warning("closed the direct connection from %s: %s", peer_address(conn), why)
        self._pending.pop(conn, None)
        self._partial.discard(conn)
        try:
            self._daemon._clientDisconnect(conn)
        except Exception as exc:  # as Pyro5's own loop: a failing disconnect hook is only logged
            log.warning("error in clientDisconnect: %s", exc)
        with contextlib.suppress(KeyError, ValueError):
            self._server.selector.unregister(conn)
        conn.close()


def _send(sock: socket.socket, data: bytes) -> None:
    """Write ``data``: one ``send`` when the socket takes it all (the usual reply), else the rest
    with Pyro5's socket timeout."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        sock.settimeout(Pyro5.config.COMMTIMEOUT or None)
        try:
            sock.sendall(memoryview(data)[sent:])
        finally:
            sock.setblocking(False)
