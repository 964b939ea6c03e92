"""Multiplexed Pyro5 calls: sent from the caller's thread, every reply received on one loop thread.

A blocking Pyro5 proxy holds a thread for as long as its call runs, so a coordinator built on
them needs a thread per call in flight (and one per worker to probe it). Here a call is split
into its two halves on the proxy's own connection:

* **send**: the request is encoded and written by the thread that makes the call, when its
  channel is connected and the request is small (the socket buffer takes it at once, so a
  stopped worker cannot block the caller); otherwise a thread of a small pool connects (the
  handshake can wait on a silent worker) and sends;
* **receive**: one loop thread waits on every socket with a call out (``selectors``), reads
  each reply when it arrives and hands it to the call's callback.

So the coordinator's thread count does not depend on the number of workers or of calls in
flight: one loop thread plus at most ``POOL_THREADS``. A call may carry a deadline; when it
passes, the connection is cut and the call fails with ``Pyro5.errors.TimeoutError``.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import math
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import Pyro5.errors
from Pyro5 import protocol, serializers

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.defaults import CONNECT_TIMEOUT_S

log = logging.getLogger(__name__)

POOL_THREADS = 4
"""Threads that connect channels and send large requests."""
DIRECT_BYTES = 64 * 1024
"""Largest request the calling thread writes itself (well under a loopback socket's buffer)."""
LOOP_TICK_S = 0.05
"""Longest the loop sleeps without checking deadlines."""

Done = Callable[[Any, BaseException | None], None]
"""A call's callback: ``(result, None)`` or ``(None, exception)``, run on the loop or a pool thread."""


class Unsent(Exception):
    """The request never reached the peer (connection refused, handshake failed): nothing ran."""


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
        self.timed_out = False
        self.sent_at = 0.0
        self.call_no = 0
        """Counts the calls it carried: a deadline belongs to one call, not to the channel."""
        self.sending = False
        """True while a thread writes the request (the loop waits for it before reading: TLS objects
        must not be read and written at once)."""
        self.claimed = False
        """True once a thread (the loop, or a caller in :meth:`Wire.receive_here`) reads the reply."""

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
        except Pyro5.errors.SecurityError as exc:
            self.release()
            raise Unsent(f"authentication refused: {exc}") from None
        except Pyro5.errors.CommunicationError as exc:
            self.release()
            raise Unsent(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # e.g. TLS files gone: the request never left
            self.release()
            raise Unsent(f"cannot connect: {type(exc).__name__}: {exc}") from None

    def encode(self, method: str, args: tuple[Any, ...]) -> bytes:
        """The request message for ``method(*args)`` (SerializeError when args cannot be encoded)."""
        proxy = self.proxy
        serializer = serializers.serializers[proxy._pyroSerializer or Pyro5.config.SERIALIZER]
        data = serializer.dumpsCall(proxy._pyroConnection.objectId, method, args, {})
        self.seq = (self.seq + 1) & 0xFFFF
        return bytes(
            protocol.SendingMessage(protocol.MSG_INVOKE, 0, self.seq, serializer.serializer_id, data).data
        )

    def decode(self) -> Any:
        """Read one reply from the connection; return its value or raise what the peer raised."""
        conn = self.proxy._pyroConnection
        msg = protocol.recv_stub(conn, [protocol.MSG_RESULT])
        serializer = serializers.serializers_by_id[msg.serializer_id]
        if msg.seq != self.seq:
            raise Pyro5.errors.ProtocolError(f"reply out of sequence ({msg.seq}, expected {self.seq})")
        data = serializer.loads(msg.data)
        if msg.flags & protocol.FLAGS_EXCEPTION:
            raise data
        return data

    def sock(self) -> socket.socket | None:
        """The connection's socket, if connected."""
        conn = self.proxy._pyroConnection if self.proxy is not None else None
        return conn.sock if conn is not None else None

    def cut(self) -> None:
        """Shut the socket down (a read under way returns at once); the channel must reconnect."""
        sock = self.sock()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Close the connection (it reconnects on its next call)."""
        if self.proxy is not None:
            # A proxy of a dead connection may fail to close; there is nothing more to do then.
            with contextlib.suppress(Exception):
                self.proxy._pyroClaimOwnership()
                self.proxy._pyroRelease()


class Wire:
    """The loop thread and the pool every channel of one coordinator shares."""

    def __init__(self, name: str = "wire", pool_threads: int = POOL_THREADS) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._deadlines: list[tuple[float, int, int, Channel]] = []
        self._order = itertools.count()
        self._closed = False
        self._deferred: collections.deque[Callable[[], None]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pool = ThreadPoolExecutor(max_workers=pool_threads, thread_name_prefix=f"{name}-pool")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def call(
        self,
        channel: Channel,
        method: str,
        args: tuple[Any, ...],
        done: Done,
        timeout_s: float | None = None,
    ) -> None:
        """Start ``method(*args)`` on ``channel``; ``done`` gets the outcome once. Never blocks long.

        The channel must not be busy. Unsent (nothing ran), Pyro5.errors.TimeoutError (the
        deadline passed), another CommunicationError (the connection broke), SerializeError,
        or whatever the peer raised, reach ``done`` as its exception.
        """
        if channel.busy:
            raise RuntimeError(f"channel to {channel.uri} already carries a call")
        channel.busy, channel.done, channel.timed_out = True, done, False
        channel.call_no += 1
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if self._closed:
            self._defer(channel, Unsent("the coordinator is closing"))
            return
        if channel.connected:
            try:
                data = channel.encode(method, args)
            except Exception as exc:  # SerializeError and friends: nothing was sent
                self._defer(channel, exc)
                return
            if len(data) <= DIRECT_BYTES:
                self._send(channel, data, deadline, direct=True)
                return
            self._pool.submit(self._send, channel, data, deadline)
            return
        self._pool.submit(self._connect_and_send, channel, method, args, deadline)

    def _connect_and_send(
        self, channel: Channel, method: str, args: tuple[Any, ...], deadline: float | None
    ) -> None:
        try:
            channel.connect()
            data = channel.encode(method, args)
        except Exception as exc:
            self._finish(channel, None, exc)
            return
        self._send(channel, data, deadline)

    def _defer(self, channel: Channel, exc: BaseException) -> None:
        """Report a failure from the loop thread: the caller may hold locks its callback takes."""
        self._deferred.append(lambda: self._finish(channel, None, exc))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _send(self, channel: Channel, data: bytes, deadline: float | None, direct: bool = False) -> None:
        fail = self._defer if direct else lambda ch, exc: self._finish(ch, None, exc)
        sock = channel.sock()
        if sock is None:
            fail(channel, Unsent("the connection was closed before sending"))
            return
        with self._lock:
            channel.claimed = False
            try:
                self._selector.register(sock, selectors.EVENT_READ, channel)
            except KeyError:  # the number of a socket closed while registered, now reused
                self._selector.unregister(sock)
                self._selector.register(sock, selectors.EVENT_READ, channel)
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, next(self._order), channel.call_no, channel))
        channel.sent_at = time.monotonic()
        channel.sending = True
        try:
            channel.proxy._pyroConnection.send(data)
        except Exception as exc:
            with self._lock, contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            channel.sending = False
            channel.release()
            fail(channel, exc)
            return
        channel.sending = False
        if deadline is not None and deadline - time.monotonic() < LOOP_TICK_S:
            self._wake_w.send(b"x")

    def _finish(self, channel: Channel, result: Any, exc: BaseException | None) -> None:
        done, channel.done = channel.done, None
        channel.busy = False
        if done is None:
            return
        try:
            done(result, exc)
        except Exception:  # a callback's bug must not stop the loop
            log.exception("a call's callback failed")

    def _loop(self) -> None:
        while not self._closed:
            try:
                events = self._selector.select(LOOP_TICK_S)
            except (OSError, ValueError):  # a socket closed under us: look again
                events = []
            for key, _ in events:
                channel = key.data
                if channel is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                with self._lock:
                    if channel.claimed:  # a caller reads this reply itself (receive_here)
                        continue
                    channel.claimed = True
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(key.fileobj)
                self._receive(channel)
            while self._deferred:
                self._deferred.popleft()()
            self._expire(time.monotonic())
        self._selector.close()

    def _receive(self, channel: Channel) -> None:
        while channel.sending:  # the reply came before the writer returned: let it finish
            time.sleep(0)
        try:
            result = channel.decode()
        except Pyro5.errors.CommunicationError as exc:
            channel.release()
            if channel.timed_out:
                exc = Pyro5.errors.TimeoutError(f"no reply within the deadline ({exc})")
            self._finish(channel, None, exc)
        except Exception as exc:  # the peer raised, or sent what cannot be decoded
            self._finish(channel, None, exc)
        else:
            self._finish(channel, result, None)

    def receive_here(self, channel: Channel, call_no: int, wait_s: float) -> bool:
        """Read call ``call_no``'s reply on this thread if it comes within ``wait_s``: True if read.

        A caller about to block on the outcome of a call it has just sent waits on the socket
        itself, which saves the hand-off from the loop thread. When the reply is late, the call
        goes back to the loop; deadlines and cuts work the same either way.
        """
        sock = channel.sock()
        if threading.current_thread() is self._thread:  # a callback on the loop: the loop reads
            return False
        with self._lock:
            if channel.claimed or not channel.busy or channel.call_no != call_no or sock is None:
                return False
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):  # not registered yet (a pool thread is still sending)
                return False
            channel.claimed = True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        try:
            ready = bool(poller.poll(math.ceil(wait_s * 1000)))
        except OSError:
            ready = True  # the socket is gone: reading reports the broken connection
        if ready:
            self._receive(channel)
            return True
        with self._lock:
            channel.claimed = False
            try:
                self._selector.register(sock, selectors.EVENT_READ, channel)
            except (KeyError, ValueError, OSError):
                channel.claimed = True
            else:
                return False
        self._receive(channel)  # the socket closed under us: report it from here
        return True

    def _expire(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._deadlines or self._deadlines[0][0] > now:
                    return
                _, _, call_no, channel = heapq.heappop(self._deadlines)
            if channel.busy and channel.call_no == call_no:
                channel.timed_out = True
                channel.cut()  # the socket turns readable (EOF): _receive reports the timeout

    def close(self) -> None:
        """Stop the loop and the pool (calls still out get no callback)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()
