"""The multiplexed transport (coordinator/wire/) against a real Pyro5 daemon on loopback."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import Pyro5.api
import Pyro5.errors
import pytest

from pyrocluster import config
from pyrocluster.auth import SecureDaemon
from pyrocluster.config import Settings
from pyrocluster.coordinator.channel import Channel, Unsent
from pyrocluster.coordinator.frames import WRITE_CHUNK
from pyrocluster.coordinator.wire import POOL_THREADS, Wire, lonecall
from tests.helpers.certs import make_member
from tests.helpers.relay import Relay

RELEASE = threading.Event()


@Pyro5.api.expose
class Peer:
    """What the tests call."""

    def add(self, a: int, b: int) -> int:
        return a + b

    def size(self, blob: str) -> int:
        return len(blob)

    def fail(self) -> None:
        raise ValueError("the peer raised")

    def hold(self) -> str:
        RELEASE.wait(30)
        return "released"


@pytest.fixture
def settings() -> Settings:
    s = Settings.from_sources()
    config.apply(s)
    return s


@pytest.fixture
def uri(settings: Settings) -> Iterator[str]:
    RELEASE.clear()
    daemon = SecureDaemon(settings, host="127.0.0.1")
    address = str(daemon.register(Peer(), objectId="peer"))
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    yield address
    RELEASE.set()
    daemon.shutdown()
    thread.join(timeout=5)
    daemon.close()


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire("test-wire")
    yield w
    w.close()


def call(wire: Wire, channel: Channel, method: str, *args: Any, timeout_s: float | None = None) -> Any:
    """Make one call and wait for its callback; the result, or the exception it got."""
    out: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
    wire.call(channel, method, args, lambda r, e: out.put((r, e)), timeout_s=timeout_s)
    result, exc = out.get(timeout=20)
    return exc if exc is not None else result


def test_calls_reuse_one_connection(wire: Wire, uri: str, settings: Settings) -> None:
    channel = Channel(uri, settings)
    assert [call(wire, channel, "add", i, 1) for i in range(50)] == [i + 1 for i in range(50)]
    first = channel.sock()
    assert call(wire, channel, "add", 2, 2) == 4
    assert channel.sock() is first and not channel.busy


def test_a_request_larger_than_the_socket_takes_at_once_goes_out_whole(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel = Channel(uri, settings)
    assert call(wire, channel, "add", 1, 1) == 2
    blob = "x" * (WRITE_CHUNK * 40)
    assert call(wire, channel, "size", blob) == len(blob)


def test_a_held_request_goes_out_when_pushed_from_a_caller_or_from_the_loop(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel = Channel(uri, settings)
    assert call(wire, channel, "add", 1, 1) == 2  # connected: the next request may be held
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    wire.call(channel, "add", (2, 2), lambda r, e: out.put(e if e is not None else r), hold_write=True)
    wire.push(channel, channel.call_no)  # this thread writes it; the loop reads the reply
    assert out.get(timeout=20) == 4
    second = Channel(uri, settings)
    assert call(wire, second, "add", 0, 0) == 0

    def then_send(result: Any, exc: BaseException | None) -> None:  # runs on the loop thread
        wire.call(second, "add", (3, 3), lambda r, e: out.put(e if e is not None else r), hold_write=True)
        wire.push(second, second.call_no)  # from the loop: the loop writes it

    wire.call(channel, "add", (1, 2), then_send)
    assert out.get(timeout=20) == 6


def test_peer_exception_reaches_the_callback(wire: Wire, uri: str, settings: Settings) -> None:
    channel = Channel(uri, settings)
    exc = call(wire, channel, "fail")
    assert isinstance(exc, ValueError) and "the peer raised" in str(exc)
    assert call(wire, channel, "add", 1, 2) == 3  # the connection is still good


def test_refused_connection_is_unsent(wire: Wire, settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    exc = call(wire, Channel(f"PYRO:peer@127.0.0.1:{port}", settings), "add", 1, 2)
    assert isinstance(exc, Unsent)


def test_unencodable_argument_fails_that_call(wire: Wire, uri: str, settings: Settings) -> None:
    channel = Channel(uri, settings)
    assert call(wire, channel, "add", 1, 1) == 2
    exc = call(wire, channel, "add", object(), 1)
    assert isinstance(exc, (Pyro5.errors.SerializeError, TypeError))
    assert call(wire, channel, "add", 1, 2) == 3


def test_deadline_cuts_a_call_that_gets_no_reply(wire: Wire, uri: str, settings: Settings) -> None:
    channel = Channel(uri, settings)
    exc = call(wire, channel, "hold", timeout_s=0.2)
    assert isinstance(exc, Pyro5.errors.TimeoutError)
    RELEASE.set()
    assert call(wire, channel, "add", 2, 3) == 5  # it reconnects


def test_many_calls_in_flight_use_no_thread_each(wire: Wire, uri: str, settings: Settings) -> None:
    channels = [Channel(uri, settings) for _ in range(40)]
    for ch in channels:
        assert call(wire, ch, "add", 0, 0) == 0  # connected
    before = threading.active_count()
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for ch in channels:
        wire.call(ch, "hold", (), lambda r, e: out.put(r if e is None else e))
    peak = threading.active_count()
    RELEASE.set()
    assert [out.get(timeout=20) for _ in channels] == ["released"] * len(channels)
    assert peak - before <= POOL_THREADS


def test_a_caller_reads_its_own_reply_on_its_thread(wire: Wire, uri: str, settings: Settings) -> None:
    channel = Channel(uri, settings)
    assert call(wire, channel, "add", 1, 1) == 2  # connected: the next request is written directly
    seen: list[tuple[Any, str]] = []
    wire.call(channel, "hold", (), lambda r, e: seen.append((r, threading.current_thread().name)))
    releaser = threading.Thread(target=lambda: (wait_until(lambda: channel.claimed), RELEASE.set()))
    releaser.start()  # the reply comes only once this thread has claimed it (no race with the loop)
    assert wire.receive_here(channel, channel.call_no, 20.0) is True
    releaser.join(timeout=5)
    assert seen == [("released", threading.current_thread().name)]
    assert not channel.busy and call(wire, channel, "add", 1, 2) == 3  # the loop reads the next one


def test_a_late_reply_goes_back_to_the_loop(wire: Wire, uri: str, settings: Settings) -> None:
    channel = Channel(uri, settings)
    assert call(wire, channel, "add", 1, 1) == 2
    out: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()
    wire.call(channel, "hold", (), lambda r, e: out.put((r, threading.current_thread().name)))
    assert wire.receive_here(channel, channel.call_no, 0.05) is False
    RELEASE.set()
    assert out.get(timeout=20) == ("released", "test-wire")


def test_a_cut_or_a_deadline_reaches_a_caller_reading_its_reply(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel = Channel(uri, settings)
    assert call(wire, channel, "add", 1, 1) == 2
    seen: list[BaseException | None] = []
    wire.call(channel, "hold", (), lambda r, e: seen.append(e), timeout_s=0.3)
    assert wire.receive_here(channel, channel.call_no, 20.0) is True  # the loop's deadline cut it
    assert len(seen) == 1 and isinstance(seen[0], Pyro5.errors.TimeoutError)
    RELEASE.set()
    assert call(wire, channel, "add", 2, 3) == 5
    RELEASE.clear()
    seen.clear()
    wire.call(channel, "hold", (), lambda r, e: seen.append(e))
    cutter = threading.Thread(target=lambda: (wait_until(lambda: channel.claimed), wire.cut(channel)))
    cutter.start()
    assert wire.receive_here(channel, channel.call_no, 20.0) is True
    cutter.join(timeout=5)
    assert len(seen) == 1 and isinstance(seen[0], Pyro5.errors.CommunicationError)


@pytest.fixture
def tls_uri(tmp_path: Any) -> Iterator[tuple[str, Settings]]:
    """A TLS daemon serving a Peer (this process speaks TLS until the next ``settings``)."""
    member = make_member(tmp_path)
    tls = Settings.from_sources(tls_cert=member.cert, tls_key=member.key, tls_ca=member.ca)
    config.apply(tls)
    daemon = SecureDaemon(tls, host="127.0.0.1")
    address = str(daemon.register(Peer(), objectId="peer"))
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    yield address, tls
    RELEASE.set()
    daemon.shutdown()
    thread.join(timeout=5)
    daemon.close()
    config.apply(Settings.from_sources())


def test_tls_replies_are_read_as_their_bytes_arrive_and_a_stalled_one_holds_no_other(
    wire: Wire, tls_uri: tuple[str, Settings]
) -> None:
    uri, tls = tls_uri
    host_port = uri.rpartition("@")[2]
    relay = Relay("127.0.0.1", int(host_port.rpartition(":")[2]))
    try:
        direct, relayed = Channel(uri, tls), Channel(uri.replace(host_port, relay.address()), tls)
        assert call(wire, direct, "add", 1, 1) == 2 and call(wire, relayed, "add", 1, 2) == 3
        relay.drip(0.001)  # TLS records arrive a byte at a time: each read wants more
        assert call(wire, relayed, "size", "x" * 300) == 300
        relay.stall(first_bytes=10)
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        wire.call(relayed, "add", (2, 2), lambda r, e: out.put(e if e is not None else r), timeout_s=1.0)
        start = time.monotonic()
        for i in range(20):  # served while the other reply is stuck mid-record
            assert call(wire, direct, "add", i, 1) == i + 1
        assert time.monotonic() - start < 2.5  # ~0.1 s; a loop held by the stalled reply takes 5 s
        assert isinstance(out.get(timeout=10), Pyro5.errors.TimeoutError)
    finally:
        relay.close()


def wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` (a thread of its own may not use the test's wait_for failure)."""
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


def connected(wire: Wire, uri: str, settings: Settings) -> Channel:
    """A channel that has carried a call (connected: the next request may be held)."""
    channel = Channel(uri, settings)
    assert call(wire, channel, "add", 1, 1) == 2
    return channel


def held_unread(wire: Wire, channel: Channel, method: str, out: queue.SimpleQueue[Any]) -> int:
    """Start ``method`` on ``channel``, written by this thread and left for it to read; its number."""
    wire.call(
        channel, method, (), lambda r, e: out.put((e or r, threading.current_thread().name)), hold_write=True
    )
    wire.push(channel, channel.call_no, unread=True)
    return channel.call_no


def test_an_unread_call_is_read_by_its_caller_with_no_selector_change(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel, out = connected(wire, uri, settings), queue.SimpleQueue()
    call_no = held_unread(wire, channel, "hold", out)
    assert channel.registered is None, "the loop does not watch a call its caller will read"
    RELEASE.set()
    assert wire.receive_here(channel, call_no, 20.0) is True
    assert out.get(timeout=1) == ("released", threading.current_thread().name)
    assert channel.registered is None and call(wire, channel, "add", 2, 2) == 4


def test_an_unread_call_nobody_reads_is_read_by_the_loop(wire: Wire, uri: str, settings: Settings) -> None:
    channel, out = connected(wire, uri, settings), queue.SimpleQueue()
    RELEASE.set()
    held_unread(wire, channel, "hold", out)
    assert out.get(timeout=20) == ("released", "test-wire")


def test_watch_hands_an_unread_call_to_the_loop_and_a_cut_ends_one(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel, out = connected(wire, uri, settings), queue.SimpleQueue()
    call_no = held_unread(wire, channel, "hold", out)
    wire.watch(channel, call_no)
    assert channel.registered is not None, "watched from now on"
    RELEASE.set()
    assert out.get(timeout=20) == ("released", "test-wire")
    RELEASE.clear()
    held_unread(wire, channel, "hold", out)
    wire.cut(channel)
    error, _ = out.get(timeout=20)
    assert isinstance(error, Pyro5.errors.CommunicationError), error
    RELEASE.set()
    assert call(wire, channel, "add", 2, 3) == 5, "it reconnects for the next call"


def lone(wire: Wire, channel: Channel, method: str, out: queue.SimpleQueue[Any], *args: Any) -> int:
    """Start ``method`` as a lone direct call (``wire/lonecall.py``): written by this thread and left
    for it to read; its number."""
    data = channel.encode(method, args)
    assert isinstance(data, bytes) and lonecall.fits(channel, data)
    call_no = lonecall.start(wire, channel, lambda r, e: out.put((e or r, threading.current_thread().name)))
    lonecall.write(wire, channel, call_no, data, True)
    return call_no


def test_closing_the_wire_closes_the_connection_of_a_call_still_out(uri: str, settings: Settings) -> None:
    """A call still out when its coordinator closed kept its socket open until the garbage
    collector found it (an unclosed-socket warning in whatever ran then)."""
    wire = Wire("test-wire")
    try:
        channel = connected(wire, uri, settings)
        RELEASE.clear()
        wire.call(channel, "hold", (), lambda r, e: None)
        wait_until(lambda: channel.registered is not None)
        sock = channel.sock()
        assert sock is not None and sock.fileno() != -1
    finally:
        wire.close()
    assert sock.fileno() == -1, "closed with the wire"
    RELEASE.set()


def test_a_lone_call_is_written_and_read_by_its_caller_and_its_channel_serves_again(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel, out = connected(wire, uri, settings), queue.SimpleQueue()
    call_no = lone(wire, channel, "add", out, 2, 5)
    assert channel.registered is None and channel.unread == call_no, "left for this thread, unwatched"
    assert lonecall.read(wire, channel, call_no, 20.0) is True
    assert out.get(timeout=1) == (7, threading.current_thread().name)
    assert not channel.busy and channel.registered is None
    call_no = lone(wire, channel, "fail", out)
    assert lonecall.read(wire, channel, call_no, 20.0) is True
    error, _ = out.get(timeout=1)
    assert isinstance(error, ValueError) and "the peer raised" in str(error)
    assert call(wire, channel, "add", 1, 2) == 3, "the loop carries its next call on the same channel"


def test_a_lone_reply_after_the_inline_window_is_read_by_the_loop(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel, out = connected(wire, uri, settings), queue.SimpleQueue()
    call_no = lone(wire, channel, "hold", out)
    assert lonecall.read(wire, channel, call_no, 0.05) is False, "no reply within the window"
    assert channel.registered is not None, "handed back: the loop watches it"
    RELEASE.set()
    assert out.get(timeout=20) == ("released", "test-wire")
    assert not channel.busy and lonecall.read(wire, channel, call_no, 0.05) is False, "over: nothing to read"


def test_a_lone_reply_in_pieces_is_read_here_within_the_window_and_by_the_loop_after(
    wire: Wire, uri: str, settings: Settings
) -> None:
    host_port = uri.rpartition("@")[2]
    relay = Relay("127.0.0.1", int(host_port.rpartition(":")[2]))
    try:
        channel, out = connected(wire, uri.replace(host_port, relay.address()), settings), queue.SimpleQueue()
        relay.drip(0.001)  # a byte at a time: the first receive takes a piece of the reply
        call_no = lone(wire, channel, "size", out, "x" * 300)
        assert lonecall.read(wire, channel, call_no, 20.0) is True
        assert out.get(timeout=1) == (300, threading.current_thread().name)
        relay.drip(0.01)  # about 1 s for the reply: the window ends mid-reply
        call_no = lone(wire, channel, "size", out, "y" * 30)
        assert lonecall.read(wire, channel, call_no, 0.1) is False
        assert out.get(timeout=20) == (30, "test-wire"), "the loop read the rest of what came"
    finally:
        relay.close()


def test_a_lone_call_cut_while_its_caller_reads_ends_and_its_connection_is_not_reused(
    wire: Wire, uri: str, settings: Settings
) -> None:
    channel, out = connected(wire, uri, settings), queue.SimpleQueue()
    first = channel.sock()
    call_no = lone(wire, channel, "hold", out)
    cutter = threading.Thread(target=lambda: (wait_until(lambda: channel.claimed), wire.cut(channel)))
    cutter.start()  # cut only once this thread holds the socket
    assert lonecall.read(wire, channel, call_no, 20.0) is True
    cutter.join(timeout=5)
    error, _ = out.get(timeout=1)
    assert isinstance(error, Pyro5.errors.CommunicationError), error
    assert not channel.connected and first is not None and first.fileno() == -1, "closed, not kept"
    RELEASE.set()
    assert call(wire, channel, "add", 2, 3) == 5, "the next call connects afresh"
    assert channel.sock() is not first


def test_a_lone_call_sent_from_a_callback_on_the_loop_is_written_once_it_returns(
    wire: Wire, uri: str, settings: Settings
) -> None:
    first, second = connected(wire, uri, settings), connected(wire, uri, settings)
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    wire.call(first, "add", (1, 1), lambda r, e: lone(wire, second, "add", out, r, 10))
    assert out.get(timeout=20) == (12, "test-wire"), "written after the callback, read by the loop"
    assert not second.busy and call(wire, second, "add", 3, 3) == 6
