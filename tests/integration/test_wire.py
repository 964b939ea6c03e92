"""The multiplexed transport (coordinator/wire.py) against a real Pyro5 daemon on loopback."""

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
from pyrocluster.coordinator.frames import WRITE_CHUNK
from pyrocluster.coordinator.wire import POOL_THREADS, Channel, Unsent, Wire

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


def wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` (a thread of its own may not use the test's wait_for failure)."""
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
