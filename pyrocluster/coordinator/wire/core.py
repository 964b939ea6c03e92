"""The wire's loop: the thread that writes every queued request and reads every watched reply,
and the state each channel's call moves through (busy, who holds its socket, its deadline, a cut).

A caller's own part (writing its request, reading its reply on its thread, asking the loop to
watch) is in ``caller.py``; the package docstring gives the whole picture.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import Pyro5.errors
from Pyro5 import protocol

from pyrocluster.coordinator.channel import CALLER, FREE, LOOP, READ, WRITE, Channel, Done, Unsent
from pyrocluster.coordinator.frames import ReplyReader, RequestWriter

log = logging.getLogger(__name__)

POOL_THREADS = 4
"""Threads that connect channels (the Pyro5 handshake blocks)."""
LOOP_TICK_S = 0.05
"""Longest the loop (or a caller reading its own reply) sleeps without checking deadlines."""
ADOPT_S = 0.01
"""A call left for its caller to read (``Wire.push`` with ``unread``) that the caller has not
come for in this long is watched by the loop from its next pass on (at most ``LOOP_TICK_S`` later)."""


class WireCore:
    """The loop thread and the pool every channel of one coordinator shares (``Wire`` adds the
    caller's part)."""

    def __init__(self, name: str = "wire", pool_threads: int = POOL_THREADS) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._deadlines: list[tuple[float, int, int, Channel]] = []
        self._order = itertools.count()
        self._closed = False
        self._deferred: collections.deque[Callable[[], None]] = collections.deque()
        self._cuts: collections.deque[tuple[Channel, int]] = collections.deque()
        self._held: collections.deque[tuple[Channel, int]] = collections.deque()
        """Requests sent from callbacks on the loop thread, to write once they return."""
        self._unread: collections.deque[tuple[Channel, int, float]] = collections.deque()
        """Calls left for their callers to read, oldest first, with when they were written."""
        self._woken = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, READ, None)
        self._sees_new_sockets = isinstance(self._selector, selectors.EpollSelector)
        """epoll reports a socket registered during its wait at once: a new request needs no wake-up."""
        self._pool = ThreadPoolExecutor(max_workers=pool_threads, thread_name_prefix=f"{name}-pool")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self._loop_id = self._thread.ident
        """The loop thread's id: a callback running on it must not block on its own reads."""

    def call(
        self,
        channel: Channel,
        method: str,
        args: tuple[Any, ...],
        done: Done,
        timeout_s: float | None = None,
        hold_write: bool = False,
        scan: bool = True,
    ) -> None:
        """Start ``method(*args)`` on ``channel``; ``done`` gets the outcome once. Never blocks.

        With ``hold_write`` the loop is not woken to write the request, nor watches the socket:
        the caller writes it with :meth:`push` as soon as it holds no lock (a thread wake-up less
        per call). Without ``scan`` the caller knows nothing in ``args`` is big enough to travel as
        an attachment (``Channel.encode`` looks for none).

        The channel must not be busy. Unsent (nothing ran), Pyro5.errors.TimeoutError (the
        deadline passed), another CommunicationError (the connection broke), SerializeError,
        Undecodable (a reply that cannot be decoded), or whatever the peer raised, reach
        ``done`` as its exception.
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
                data = channel.encode(method, args, scan=scan)
            except Exception as exc:  # SerializeError and friends: nothing was sent
                self._defer(channel, exc)
                return
            self._queue(channel, data, deadline, self._defer, 0 if hold_write else READ | WRITE)
            return
        channel.connecting = True
        self._pool.submit(self._connect_and_queue, channel, method, args, deadline, scan)

    def connect_later(self, channel: Channel, then: Callable[[BaseException | None], None]) -> None:
        """Connect ``channel`` on a pool thread (the Pyro5 handshake blocks); ``then`` gets None
        or the ``Unsent`` that stopped it. Never blocks."""

        def connect() -> None:
            try:
                channel.connect()
            except Unsent as exc:
                then(exc)
            else:
                then(None)

        try:
            self._pool.submit(connect)
        except RuntimeError:  # the pool is shut down: the wire is closing
            then(Unsent("the coordinator is closing"))

    def cut(self, channel: Channel) -> None:
        """End the call under way on ``channel`` now (ConnectionClosedError); safe from any thread."""
        with self._lock:
            if not channel.busy:
                return
            channel.cut_no = channel.call_no
            self._cuts.append((channel, channel.call_no))
        self._wake()

    def _connect_and_queue(
        self, channel: Channel, method: str, args: tuple[Any, ...], deadline: float | None, scan: bool
    ) -> None:
        try:
            channel.connect()
            data = channel.encode(method, args, scan=scan)
        except Exception as exc:
            channel.connecting = False
            self._finish(channel, None, exc)
            return
        with self._lock:
            channel.connecting = False
            late = channel.timed_out or channel.cut_no == channel.call_no
            closed = self._closed
        if closed:  # connected while the coordinator closed: nothing will read it (no callback)
            channel.release()
            return
        if late:  # the deadline passed (or a cut came) while connecting: nothing was sent
            channel.release()
            why = "no reply within the deadline" if channel.timed_out else "the connection was cut"
            self._finish(channel, None, Pyro5.errors.TimeoutError(why) if channel.timed_out else Unsent(why))
            return
        self._queue(channel, data, deadline, lambda ch, exc: self._finish(ch, None, exc), READ | WRITE)

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            with contextlib.suppress(OSError):  # full: the loop has wake-ups waiting already
                self._wake_w.send(b"x")

    def _defer(self, channel: Channel, exc: BaseException) -> None:
        """Report a failure from the loop thread: the caller may hold locks its callback takes."""
        self._deferred.append(lambda: self._finish(channel, None, exc))
        self._wake()

    def _queue(
        self,
        channel: Channel,
        data: bytes | list[Any],
        deadline: float | None,
        fail: Callable[[Channel, BaseException], None],
        events: int,
    ) -> None:
        """Hand the request to the loop, which writes it as the socket takes it (watching
        ``events``; none: not before :meth:`push` wrote it)."""
        sock = channel.sock()
        if sock is None:
            fail(channel, Unsent("the connection was closed before sending"))
            return
        on_loop = threading.get_ident() == self._loop_id
        if on_loop:  # sent from a callback (under the dispatcher's lock): written when it returns
            events = READ
        with self._lock:
            channel.writer = RequestWriter(data)
            channel.holder = FREE
            registered = self._register(channel, sock, events) if events else True
            if registered and deadline is not None:
                heapq.heappush(self._deadlines, (deadline, next(self._order), channel.call_no, channel))
        if not registered:
            channel.writer = None
            fail(channel, Unsent("the connection was closed before sending"))
            return
        if on_loop:
            self._held.append((channel, channel.call_no))
        elif not self._sees_new_sockets:
            self._wake()

    def _register(self, channel: Channel, sock: socket.socket, events: int) -> bool:
        """Watch ``sock`` for ``events`` (under the lock); False when it was closed under us."""
        try:
            if channel.registered is not sock:
                try:
                    self._selector.register(sock, events, channel)
                except KeyError:  # the number of a socket closed while registered, now reused
                    self._selector.unregister(sock)
                    self._selector.register(sock, events, channel)
            elif channel.events != events:
                self._selector.modify(sock, events, channel)
        except (KeyError, ValueError, OSError):  # released by another thread (fanout, a stop)
            self._unregister(channel)
            return False
        channel.registered, channel.events = sock, events
        return True

    def _unregister(self, channel: Channel) -> None:
        """Stop watching the channel's socket (under the lock)."""
        if channel.registered is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(channel.registered)
            channel.registered, channel.events = None, 0

    def _finish(self, channel: Channel, result: Any, exc: BaseException | None) -> None:
        done, channel.done = channel.done, None
        channel.busy = False
        if done is None:
            return
        try:
            done(result, exc)
        except Exception:  # a callback's bug must not stop the loop
            log.exception("a call's callback failed")

    def _end(
        self, channel: Channel, msg: protocol.ReceivingMessage | None, exc: BaseException | None = None
    ) -> None:
        """The call on ``channel`` is over (by its holder): report its reply or its failure."""
        with self._lock:
            if channel.registered is not None:  # a caller reading its own reply let it go already
                self._unregister(channel)
            channel.holder = FREE
            channel.writer = None
            channel.unread = 0
        result = None
        if msg is not None:
            try:
                result = channel.result_of(msg)
            except Pyro5.errors.ProtocolError as err:  # out of step with the peer: start afresh
                exc = err
            except Exception as err:  # the peer raised, or sent what cannot be decoded
                self._finish(channel, None, err)
                return
        if exc is None:
            self._finish(channel, result, None)
            return
        channel.reader = ReplyReader()
        channel.release()
        if channel.timed_out and type(exc) is not Pyro5.errors.TimeoutError:
            exc = Pyro5.errors.TimeoutError(f"no reply within the deadline ({exc})")
        self._finish(channel, None, exc)

    def _step(self, channel: Channel) -> bool:
        """Move the channel's call on (its holder's turn): True once the call is over."""
        try:
            msg = channel.pump()
        except Exception as exc:  # the connection broke or carries garbage
            self._end(channel, None, exc)
            return True
        if msg is None:
            return False
        self._end(channel, msg)
        return True

    def _loop(self) -> None:
        while not self._closed:
            try:
                events = self._selector.select(LOOP_TICK_S)
            except (OSError, ValueError):  # a socket closed under us: look again
                events = []
            for key, _ in events:
                channel = key.data
                if channel is None:
                    self._woken = False
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                with self._lock:
                    if not channel.busy:  # ended: nothing more to read here
                        self._unregister(channel)
                        continue
                    if channel.holder != FREE or channel.registered is None:
                        # A caller holds it (receive_here, push): stop watching it meanwhile (a
                        # socket left ready would wake this loop again and again); the caller
                        # watches it again when it hands the call back.
                        self._unregister(channel)
                        continue
                    channel.holder = LOOP
                if not self._step(channel):
                    with self._lock:
                        channel.holder = FREE
                        sock = channel.registered
                        watched = sock is not None and self._register(channel, sock, channel.wanted())
                        if not watched:
                            channel.holder = LOOP
                    if not watched:
                        self._end(
                            channel, None, Pyro5.errors.ConnectionClosedError("the connection was closed")
                        )
                self._write_sent()
            while self._deferred:
                self._deferred.popleft()()
            if self._unread:
                self._adopt(time.monotonic() - ADOPT_S)
            self._cut_asked()
            self._expire(time.monotonic())
            self._write_sent()
        for key in list(self._selector.get_map().values()):
            if key.data is not None:  # a call still out at the close: its connection closes with it
                key.data.release()
        self._selector.close()

    def _write_sent(self) -> None:
        """Write the requests that callbacks on this loop sent (now that they returned)."""
        while self._held:
            channel, call_no = self._held.popleft()
            self._write_held(channel, call_no, LOOP)

    def _cut_asked(self) -> None:
        while True:
            with self._lock:
                if not self._cuts:
                    return
                channel, call_no = self._cuts.popleft()
                if not channel.busy or channel.call_no != call_no or channel.holder == CALLER:
                    continue  # over already, or a caller holds it (it sees cut_no)
                if channel.connecting:
                    continue  # the connecting thread sees cut_no
                channel.holder = LOOP
            self._end(channel, None, Pyro5.errors.ConnectionClosedError("the connection was cut"))

    def _write_held(self, channel: Channel, call_no: int, holder: int, unread: bool = False) -> None:
        with self._lock:
            if not channel.busy or channel.call_no != call_no or channel.holder != FREE:
                return  # over, or the loop (or a pool thread) has it
            if channel.writer is None or channel.connecting:
                return
            sock = channel.sock()
            channel.holder = holder  # the loop leaves a held channel alone
        if sock is None:  # closed under us before a byte went out
            self._end(channel, None, Unsent("the connection was closed before sending"))
            return
        try:
            written = channel.writer.write(sock)
        except Exception as exc:  # the connection broke
            self._end(channel, None, exc)
            return
        if written:
            channel.writer = None  # under its holder: nobody else touches it
        self._written(channel, call_no, sock, unread)

    def _written(self, channel: Channel, call_no: int, sock: socket.socket, unread: bool) -> None:
        """The thread holding call ``call_no`` wrote what the socket took of its request (the
        rest, if any, in ``channel.writer``): leave a call written whole for its caller to read
        (``unread``), else have the loop move it on; end it if it was cut meanwhile."""
        with self._lock:
            if not (channel.timed_out or channel.cut_no == call_no):
                channel.holder = FREE
                if unread and channel.writer is None and channel.watch_no != call_no:
                    channel.unread = call_no
                    self._unread.append((channel, call_no, time.monotonic()))
                    return
                if self._register(channel, sock, channel.wanted()):
                    return
        self._end(channel, None, Pyro5.errors.ConnectionClosedError("the connection was cut"))

    def _watch_unread(self, channel: Channel) -> None:
        """Register an unread call's socket with the loop (under the lock)."""
        channel.unread = 0
        sock = channel.sock()
        if sock is None or not self._register(channel, sock, READ):
            self._cuts.append((channel, channel.call_no))  # closed under us: the loop ends it
            channel.cut_no = channel.call_no
            self._wake()

    def _adopt(self, written_before: float) -> None:
        """Watch the calls left for callers that have not come to read them (on the loop)."""
        unread = self._unread
        with self._lock:
            while unread and unread[0][2] <= written_before:
                channel, call_no, _ = unread.popleft()
                if channel.busy and channel.unread == call_no == channel.call_no and channel.holder == FREE:
                    self._watch_unread(channel)

    def _expire(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._deadlines or self._deadlines[0][0] > now:
                    return
                _, _, call_no, channel = heapq.heappop(self._deadlines)
                if not channel.busy or channel.call_no != call_no:
                    continue
                channel.timed_out = True
                if channel.holder == CALLER or channel.connecting:
                    continue  # the thread that holds it sees timed_out
                channel.holder = LOOP
            self._end(channel, None, Pyro5.errors.TimeoutError("no reply within the deadline"))

    def close(self) -> None:
        """Stop the loop and the pool (calls still out get no callback; the loop closes their
        connections as it ends, so none waits for the garbage collector)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()
