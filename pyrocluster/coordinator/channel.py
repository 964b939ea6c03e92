"""One connection to one Pyro5 object and the state of the call it carries (for ``wire.Wire``).

A channel's socket is non-blocking once connected and used by one thread at a time: the wire's
loop, or a caller that claimed it (``holder``). The request is written and the reply read a piece
at a time (``frames.py``); :meth:`Channel.result_of` turns a whole reply into its value.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
from collections.abc import Callable
from typing import Any

import Pyro5.errors
from Pyro5 import protocol, serializers

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.coordinator import bigmessages
from pyrocluster.coordinator.frames import ReplyReader, RequestWriter
from pyrocluster.defaults import CONNECT_TIMEOUT_S

Done = Callable[[Any, BaseException | None], None]
"""A call's callback: ``(result, None)`` or ``(None, exception)``, run on the loop or a pool thread."""

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
FREE, LOOP, CALLER = 0, 1, 2
"""Who uses a channel's socket now: nobody (the loop may), the loop, a caller (receive_here)."""


class Unsent(Exception):
    """The request never reached the peer (connection refused, handshake failed): nothing ran."""


class Undecodable(Exception):
    """The peer's reply arrived whole but its payload could not be decoded."""


class Channel:
    """One connection to one Pyro5 object, carrying at most one call at a time."""

    def __init__(self, uri: str, settings: Settings, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.uri = uri
        self._settings = settings
        self._connect_timeout_s = connect_timeout_s
        self.proxy: Any = None
        self.busy = False
        self.done: Done | None = None
        self.seq = 0
        self.call_no = 0
        """Counts the calls it carried: a deadline or a cut belongs to one call, not to the channel."""
        self.timed_out = False
        self.cut_no = 0
        """The call number a cut was asked for (see :meth:`Wire.cut`)."""
        self.holder = FREE
        self.writer: RequestWriter | None = None
        self.reader = ReplyReader()
        self.registered: socket.socket | None = None
        """The socket as registered with the loop's selector (None while it is not)."""
        self.events = 0
        self.connecting = False
        """True while a pool thread connects it (the proxy is that thread's until it is done)."""
        self.unread = 0
        """The call number of a call left for its caller to read, unwatched (``Wire.push``)."""
        self.watch_no = 0
        """The call number someone asked the loop to watch before its request went out."""
        self._polled: tuple[socket.socket | None, int, Any] = (None, 0, None)
        """The socket, events and ``select.poll`` object a reading caller last waited with."""

    @property
    def claimed(self) -> bool:
        """True while a caller reads its own reply on it (:meth:`Wire.receive_here`)."""
        return self.holder == CALLER

    @property
    def connected(self) -> bool:
        """True while it holds an open connection."""
        return self.proxy is not None and self.proxy._pyroConnection is not None

    def connect(self) -> None:
        """Open the connection and pass the handshake (blocking; Unsent when it cannot)."""
        try:
            if self.proxy is None:
                self.proxy = make_proxy(self.uri, self._settings, timeout_s=self._connect_timeout_s)
            self.proxy._pyroClaimOwnership()
            self.proxy._pyroBind()
            sock = self.sock()
            if sock is None:
                raise Pyro5.errors.CommunicationError("the connection closed during the handshake")
            sock.setblocking(False)  # from now on only the loop (or a claiming caller) touches it
        except Pyro5.errors.SecurityError as exc:
            self.release()
            raise Unsent(f"authentication refused: {exc}") from None
        except Pyro5.errors.CommunicationError as exc:
            self.release()
            raise Unsent(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # e.g. TLS files gone: the request never left
            self.release()
            raise Unsent(f"cannot connect: {type(exc).__name__}: {exc}") from None

    def encode(
        self, method: str, args: tuple[Any, ...], small: bool = False, scan: bool = True
    ) -> bytes | list[Any]:
        """The request message for ``method(*args)`` (SerializeError when args cannot be encoded):
        its bytes, or its header and payload (msgpack: see ``bigmessages.py``). ``small``: a lone
        call's request, nothing in it big enough to travel as an attachment; without ``scan``, a
        batch's request of which the caller knows the same."""
        proxy = self.proxy
        serializer = serializers.serializers[proxy._pyroSerializer or Pyro5.config.SERIALIZER]
        self.seq = (self.seq + 1) & 0xFFFF
        object_id = proxy._pyroConnection.objectId
        if isinstance(serializer, serializers.MsgpackSerializer):
            if small:
                return bigmessages.invoke_small(serializer, self.seq, object_id, method, args)
            return bigmessages.invoke_pieces(serializer, self.seq, object_id, method, args, scan)
        data = serializer.dumpsCall(object_id, method, args, {})
        return bytes(
            protocol.SendingMessage(protocol.MSG_INVOKE, 0, self.seq, serializer.serializer_id, data).data
        )

    def pump(self) -> protocol.ReceivingMessage | None:
        """Write what the socket takes of the request, then read what it holds of the reply.

        The reply message once complete, else None. ConnectionClosedError or ProtocolError when
        the connection broke or carries something that is not the reply.
        """
        sock = self.sock()
        if sock is None:
            raise Pyro5.errors.ConnectionClosedError("the connection was closed")
        if self.writer is not None:
            if not self.writer.write(sock):
                return None
            self.writer = None
        return self.reader.read(sock)

    def poller(self, sock: socket.socket, events: int) -> Any:
        """A ``select.poll`` watching ``sock`` for ``events``, kept from call to call."""
        polled, mask, poller = self._polled
        if polled is not sock:
            poller = select.poll()
            poller.register(sock, events)
            self._polled = (sock, events, poller)
        elif mask != events:
            poller.modify(sock, events)
            self._polled = (sock, events, poller)
        return poller

    def wanted(self) -> int:
        """The selector events its call waits for: the reply, and room for the rest of the request."""
        return READ | (WRITE if self.writer is not None else 0)

    def result_of(self, msg: protocol.ReceivingMessage) -> Any:
        """The reply's value; raise what the peer raised (ProtocolError, Undecodable for bad bytes)."""
        if msg.seq != self.seq:
            raise Pyro5.errors.ProtocolError(f"reply out of sequence ({msg.seq}, expected {self.seq})")
        serializer = serializers.serializers_by_id.get(msg.serializer_id)
        if serializer is None:
            raise Undecodable(f"a reply in serializer {msg.serializer_id}, which is not accepted")
        try:
            data = bigmessages.loads(serializer, msg.data)
        except Exception as exc:  # whatever the decoder raises on bytes it cannot read
            raise Undecodable(f"the reply cannot be decoded: {type(exc).__name__}") from None
        bodies = getattr(msg, "attachments", [])
        if msg.flags & protocol.FLAGS_EXCEPTION:
            if isinstance(data, BaseException) and not bodies:
                raise data
            raise Undecodable("an exception reply that holds no exception")
        try:
            return bigmessages.reattach(data, bodies)
        except ValueError as exc:
            raise Undecodable(f"the reply's attachments are out of place: {exc}") from None

    def sock(self) -> socket.socket | None:
        """The connection's socket, if connected."""
        conn = self.proxy._pyroConnection if self.proxy is not None else None
        return conn.sock if conn is not None else None

    def release(self) -> None:
        """Close the connection (it reconnects on its next call)."""
        if self.proxy is not None:
            # A proxy of a dead connection may fail to close; there is nothing more to do then.
            with contextlib.suppress(Exception):
                self.proxy._pyroClaimOwnership()
                self.proxy._pyroRelease()
