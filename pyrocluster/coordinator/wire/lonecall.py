"""A lone direct call written by one function and read by another on its channel, outside
:meth:`Wire.call`: the wire's general steps skipped for the commonest call there is.

A lone ``submit(...).result()`` to a slot its worker lends went through the wire's general
machinery: ``Wire.call`` (the checks a call of any kind needs, the request encoded),
``_queue`` (a ``RequestWriter``, a lock), ``push`` (another writer pass, two locks),
``receive_here`` (a claim loop, a poll, ``_step``, ``pump``, the piecewise reader) and ``_end``.
Here the request is encoded by the route beforehand (exactly the bytes ``Channel.encode``
makes: Pyro5's protocol), and:

* :func:`start` marks the idle, connected channel busy with the call (no lock: nobody else
  holds an idle channel);
* :func:`write`, on the submitting thread once it holds no lock, sends the bytes with one
  ``send`` and leaves the call for its caller to read, unwatched, as ``Wire.push`` with
  ``unread`` does;
* :func:`read`, on the thread waiting in ``result()``, claims the socket, polls, takes the
  reply in one ``recv``, decodes it in one step when it is the plain whole reply it nearly always
  is (``plainreply.py``), and hands its value to the call's ``done`` (the same settle step).

Everything unusual goes to the wire's ordinary steps, which take the channel over in the state
they expect: a send that took part of the bytes (the loop writes the rest), a reply that comes
in pieces (read here by ``Wire._read_claimed`` until the window ends, then by the loop), no reply
within the window (handed back to the loop), a cut or a broken connection (``Wire._end``: the
channel is closed, never reused), a call already watched (``Wire.watch``: ``wait``,
``as_completed``, a callback), a call the loop adopted meanwhile (``receive_here``).

The figure it buys: 21-43 us less CPU on the calling thread per lone call at load 3-5 (the call's
start 12.6-16.7 -> 6.0-9.4 us, the reply's read 30-52 -> 21-34 us; ``bench.lone_cpu``, three
pairs), about a tenth of it; BENCHMARKS.md, "The lone direct call, one function each way".
"""

from __future__ import annotations

import math
import select
import threading
import time
from typing import Any

import Pyro5.errors

from pyrocluster.coordinator.channel import CALLER, FREE, Channel, Done, Unsent
from pyrocluster.coordinator.frames import AGAIN, EAGER_BYTES, WRITE_CHUNK, RequestWriter
from pyrocluster.coordinator.wire.caller import Wire
from pyrocluster.coordinator.wire.core import LOOP_TICK_S
from pyrocluster.coordinator.wire.plainreply import NOT_PLAIN, plain_value
from pyrocluster.coordinator.wire.replyspin import ReplySpin, spin


def fits(channel: Channel, data: bytes) -> bool:
    """True for a request this path may carry: a small one, on a connected channel."""
    return len(data) <= WRITE_CHUNK and channel.connected


def start(wire: Wire, channel: Channel, done: Done) -> int:
    """Mark the idle channel busy with a call whose request :func:`write` sends; its number."""
    if channel.busy:
        raise RuntimeError(f"channel to {channel.uri} already carries a call")
    channel.busy, channel.done, channel.timed_out = True, done, False
    channel.call_no += 1
    if wire._closed:
        wire._defer(channel, Unsent("the coordinator is closing"))
    return channel.call_no


def write(wire: Wire, channel: Channel, call_no: int, data: bytes, unread: bool) -> None:
    """Send call ``call_no``'s request from this thread, which holds no lock. With ``unread`` a
    request sent whole is left for this thread to :func:`read`; else (or when the socket took
    only part of it) the loop writes the rest and reads the reply."""
    if threading.get_ident() == wire._loop_id:  # a callback on the loop: it writes once that returns
        channel.writer = RequestWriter(data)
        wire._held.append((channel, call_no))
        return
    with wire._lock:
        if not channel.busy or channel.call_no != call_no or channel.holder != FREE:
            return  # over already (cut, closing)
        sock = channel.sock()
        channel.holder = CALLER
    if sock is None:
        wire._end(channel, None, Unsent("the connection was closed before sending"))
        return
    try:
        sent = sock.send(data)
    except AGAIN:
        sent = 0
    except OSError as exc:
        wire._end(channel, None, Pyro5.errors.ConnectionClosedError(f"sending: {exc}"))
        return
    if sent < len(data):  # the loop writes the rest (the same bytes: a TLS retry needs them)
        channel.writer = RequestWriter(data[sent:])
    wire._written(channel, call_no, sock, unread)


def read(wire: Wire, channel: Channel, call_no: int, wait_s: float, awake: ReplySpin | None = None) -> bool:
    """Read call ``call_no``'s reply on this thread if it comes within ``wait_s``: True once the
    call is over (its ``done`` called). A call not left unread for this thread goes through
    ``Wire.receive_here``; a late reply goes back to the loop. With ``awake``, the wait first
    polls without sleeping for as long as it says (``replyspin.py``)."""
    with wire._lock:
        sock = None
        if (
            channel.busy
            and channel.call_no == call_no
            and channel.unread == call_no
            and channel.holder == FREE
        ):
            sock = channel.sock()
            if sock is not None:
                channel.holder = CALLER
                channel.unread = 0
    if sock is None:  # watched by the loop, written by it, or over: the ordinary way
        return wire.receive_here(channel, call_no, wait_s)
    until = time.monotonic() + wait_s
    poller = channel.poller(sock, select.POLLIN)
    ready = False
    if awake is not None:
        window = awake.window()
        if window:
            try:
                ready = spin(poller.poll, window)
            except (OSError, ValueError):
                ready = True  # a socket gone: the receive reports it
            awake.caught(ready)
    while True:
        if channel.timed_out or channel.cut_no == call_no:  # a cut asked before the reply is read wins
            wire._end(channel, None, Pyro5.errors.ConnectionClosedError("the connection was cut"))
            return True
        if ready:
            break
        left = until - time.monotonic()
        if left <= 0:
            return wire._hand_back(channel, call_no, sock)
        try:
            ready = bool(poller.poll(math.ceil(min(left, LOOP_TICK_S) * 1000)))
        except (OSError, ValueError):
            ready = True  # a socket gone: the receive reports it
    try:
        chunk = sock.recv(EAGER_BYTES)
    except AGAIN:  # nothing after all (TLS records that are not data): the ordinary steps
        return wire._read_claimed(channel, call_no, sock, until, False)
    except OSError as exc:
        wire._end(channel, None, Pyro5.errors.ConnectionClosedError(f"receiving: {exc}"))
        return True
    if not chunk:
        wire._end(channel, None, Pyro5.errors.ConnectionClosedError("receiving: not enough data"))
        return True
    result: Any = plain_value(chunk, channel.seq)
    failure: BaseException | None = None
    if result is NOT_PLAIN:  # the ordinary steps, on the same bytes
        try:
            msg = channel.reader.take_first(chunk)
        except Exception as exc:  # not a Pyro5 reply: out of step with the peer
            wire._end(channel, None, exc)
            return True
        if msg is None:  # part of it came: read the rest the ordinary way (the reader keeps what came)
            return wire._read_claimed(channel, call_no, sock, until, True)
        try:
            result = channel.result_of(msg)
        except Pyro5.errors.ProtocolError as err:  # out of step with the peer: start afresh
            wire._end(channel, None, err)
            return True
        except Exception as err:  # the peer raised, or sent what cannot be decoded
            result, failure = None, err
    with wire._lock:
        channel.holder = FREE
    wire._finish(channel, result, failure)
    return True
