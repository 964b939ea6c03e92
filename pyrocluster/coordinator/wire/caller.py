"""A caller's own part of its call: writing its request, reading its reply on its thread, asking
the loop to watch a reply nobody reads.

A caller about to block on the outcome of a call it has just sent may move the call on itself,
which saves the hand-offs to and from the loop thread. It claims the channel's socket
(``holder``) for as long as it uses it and hands the call back to the loop when it stops;
deadlines and cuts work the same either way.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time

import Pyro5.errors

from pyrocluster.coordinator.channel import CALLER, FREE, Channel
from pyrocluster.coordinator.wire.core import LOOP_TICK_S, WireCore


class Wire(WireCore):
    """The loop thread and the pool every channel of one coordinator shares, with what a caller
    does on its own thread (``push``, ``receive_here``, ``watch``)."""

    def receive_here(self, channel: Channel, call_no: int, wait_s: float) -> bool:
        """Read call ``call_no``'s reply on this thread if it comes within ``wait_s``: True if read.

        A caller about to block on the outcome of a call it has just sent moves the call on
        itself (writes the request if the loop has not, reads the reply as it arrives), which
        saves the hand-offs to and from the loop thread. When the reply is late, the call goes
        back to the loop; deadlines and cuts work the same either way.
        """
        if threading.get_ident() == self._loop_id:  # a callback on the loop: the loop reads
            return False
        until = time.monotonic() + wait_s
        while True:
            with self._lock:
                if not channel.busy or channel.call_no != call_no:
                    return False  # it is over
                sock = channel.registered
                if sock is None and channel.unread == call_no:  # left for us: nobody watches it
                    sock = channel.sock()
                if sock is None:
                    return False  # a pool thread is still connecting it, or its request is unsent
                if channel.holder == FREE:
                    channel.holder = CALLER
                    channel.unread = 0
                    self._unregister(channel)
                    break
            if channel.holder == CALLER or time.monotonic() >= until:
                return False
            time.sleep(0)  # the loop is moving it on (a step that never waits): let it finish
        return self._read_claimed(channel, call_no, sock, until, channel.writer is not None)

    def _read_claimed(
        self, channel: Channel, call_no: int, sock: socket.socket, until: float, ready: bool
    ) -> bool:
        """Move on a call this thread holds until its reply is read (True) or ``until`` passes
        (False: the call is handed back to the loop). ``ready``: step at once, else wait first."""
        while True:
            if channel.timed_out or channel.cut_no == call_no:
                self._end(channel, None, Pyro5.errors.ConnectionClosedError("the connection was cut"))
                return True
            if ready and self._step(channel):
                return True
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                poller = channel.poller(sock, select.POLLIN | (select.POLLOUT if channel.writer else 0))
                ready = bool(poller.poll(math.ceil(min(left, LOOP_TICK_S) * 1000)))
            except (OSError, ValueError):
                ready = True  # a socket gone: the next step reports it
        return self._hand_back(channel, call_no, sock)

    def _hand_back(self, channel: Channel, call_no: int, sock: socket.socket) -> bool:
        """Give a call this thread holds back to the loop, which reads its reply from now on:
        False; True when it was cut or timed out meanwhile (it is ended here)."""
        with self._lock:
            if not (channel.timed_out or channel.cut_no == call_no):
                channel.holder = FREE
                if self._register(channel, sock, channel.wanted()):
                    return False
                channel.holder = CALLER
        self._end(channel, None, Pyro5.errors.ConnectionClosedError("the connection was cut"))
        return True

    def push(self, channel: Channel, call_no: int, unread: bool = False) -> None:
        """Write call ``call_no``'s held request (``hold_write``) from this thread, which holds no
        lock: what the socket takes now; the loop writes the rest and reads the reply.

        With ``unread``, a request written whole is left for this thread to read the reply of
        (:meth:`receive_here`) without the loop watching its socket meanwhile (no selector change
        per call); the loop watches it once :meth:`watch` asks, or ``ADOPT_S`` after.
        """
        if threading.get_ident() == self._loop_id:
            self._held.append((channel, call_no))  # written once the callback that sent it returns
            return
        self._write_held(channel, call_no, CALLER, unread)

    def watch(self, channel: Channel, call_no: int) -> None:
        """Have the loop read call ``call_no``'s reply from now on (someone waits for it without
        reading it: a callback, ``concurrent.futures.wait``). Safe from any thread."""
        with self._lock:
            if not channel.busy or channel.call_no != call_no:
                return
            if channel.unread != call_no:  # not written yet (it is then watched), or watched already
                channel.watch_no = call_no
                return
            self._watch_unread(channel)
        if not self._sees_new_sockets:
            self._wake()
