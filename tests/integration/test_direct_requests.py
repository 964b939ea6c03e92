"""A slot's direct connections after their handshake (``slots/direct_requests.py``), on a real
worker: a client that stops mid-message holds nothing and is cut off at the bound, a frame that
is not Pyro5 closes its connection with a log line, and whatever is not a lone ``run_batch``
still gets Pyro5's own answer on the same connection."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import Pyro5.callcontext
import Pyro5.core
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers
import pytest

from pyrocluster import auth
from pyrocluster.auth import HANDSHAKE_TIMEOUT_S
from pyrocluster.local import ManagedProcess, start_worker
from pyrocluster.slots.direct_requests import HEADER
from tests.conftest import TASKS_FILE, Processes, wait_for
from tests.helpers.rawworker import RawWorker, decoded
from tests.integration.test_direct_path import slot_uri


def _worker(processes: Processes, nameserver: str, name: str) -> tuple[ManagedProcess, RawWorker, str]:
    args = ["--name", name, "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]
    proc = processes.add(start_worker(nameserver, args))
    w = RawWorker(nameserver, name)
    port = wait_for(lambda: w.load().get("direct"), 15, what="the slot lent")[0]
    return proc, w, slot_uri(w, port)


def _connected(w: RawWorker, uri: str) -> tuple[auth.SecureProxy, socket.socket]:
    """A proxy to the slot past its handshake, and its socket (non-blocking, for raw bytes)."""
    proxy = auth.make_proxy(uri, w.settings, timeout_s=10)
    proxy._pyroBind()
    sock = proxy._pyroConnection.sock
    return proxy, sock


def _closed(sock: socket.socket) -> bool:
    """True once the peer closed ``sock``; False while it is open and silent."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _add(w: RawWorker, proxy: auth.SecureProxy, a: int) -> int:
    reply = proxy.run_batch({"from": "test", "calls": [w.call("add", a, 1)]})
    return int(decoded(reply["outcomes"][0])[1])


def test_clients_silent_mid_message_hold_nothing_and_are_cut_off(
    processes: Processes, nameserver: str
) -> None:
    """One connects and says nothing, one stops halfway through its handshake, one halfway
    through a request after it: a call on another connection is answered meanwhile, and each is
    cut off at the bound."""
    _proc, w, uri = _worker(processes, nameserver, "halfway")
    address = (Pyro5.core.URI(uri).host, Pyro5.core.URI(uri).port)
    half_header = b"PYRO\x01\xf6\x04\x19\x00\x00"  # 10 bytes of a 40-byte header
    mute = socket.create_connection(address)
    halfway = socket.create_connection(address)
    halfway.sendall(half_header)
    silent, sock = _connected(w, uri)
    other = auth.make_proxy(uri, w.settings, timeout_s=30)
    try:
        sock.sendall(half_header)
        started = time.monotonic()
        assert _add(w, other, 41) == 42
        # Served while the silent clients' messages are still pending: the slot did not wait on them.
        for s in (mute, halfway, sock):
            assert not _closed(s), "the call was answered only after a silent client was cut off"
        for s in (mute, halfway, sock):
            wait_for(lambda s=s: _closed(s), HANDSHAKE_TIMEOUT_S + 15, what="the silent client cut off")
        assert time.monotonic() - started >= HANDSHAKE_TIMEOUT_S - 1, "cut off before its bound"
        assert _add(w, other, 1) == 2, "the slot serves on"
    finally:
        for s in (mute, halfway):
            s.close()
        silent._pyroRelease()
        other._pyroRelease()


def test_a_frame_that_is_not_pyro5_is_closed_with_a_log_line(processes: Processes, nameserver: str) -> None:
    proc, w, uri = _worker(processes, nameserver, "garbled")
    garbled, sock = _connected(w, uri)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 20)
        wait_for(lambda: _closed(sock), 15, what="the connection closed")
        wait_for(
            lambda: any(
                "closed the direct connection" in line and "not a Pyro5 message" in line
                for line in proc.output
            ),
            15,
            what="the log line",
        )
    finally:
        garbled._pyroRelease()
    with auth.make_proxy(uri, w.settings, timeout_s=30) as proxy:
        assert _add(w, proxy, 2) == 3, "the slot serves on"


def test_other_requests_get_pyro5s_answer_on_the_same_connection(
    processes: Processes, nameserver: str, tmp_path: Path
) -> None:
    _proc, w, uri = _worker(processes, nameserver, "mixed")
    started = tmp_path / "started"
    with auth.make_proxy(uri, w.settings, timeout_s=30) as proxy:
        assert _add(w, proxy, 1) == 2
        with pytest.raises(AttributeError):
            proxy.no_such_method()  # not run_batch: Pyro5's handling answers it
        assert _add(w, proxy, 2) == 3
        # A value Pyro5's msgpack hooks would make an object of: decoded by Pyro5, as before.
        with pytest.raises(Pyro5.errors.SerializeError):
            proxy.run_batch({"from": "test", "calls": [w.call("add", 1, 1)], "keep": [{"__class__": "x.Y"}]})
        assert _add(w, proxy, 4) == 5
        # A request too big to be read here goes to Pyro5 whole; not a plain call: busy.
        padded = {"from": "test", "calls": [w.call("add", 1, 1)], "pad": b"x" * (3 << 20)}
        assert proxy.run_batch(padded) == {"busy": True}
        # A oneway call would run on a Pyro5 thread, away from the slot's timer: it runs nothing.
        proxy._pyroOneway.add("run_batch")
        proxy.run_batch({"from": "test", "calls": [w.call("hold", str(tmp_path / "gate"), 30, str(started))]})
        proxy._pyroOneway.clear()
        assert _add(w, proxy, 3) == 4, "the connection still answers in order"
    w.info()
    assert not started.exists(), "a oneway call ran a task"


def test_a_request_before_the_handshake_runs_nothing(
    processes: Processes, nameserver: str, tmp_path: Path
) -> None:
    _proc, w, uri = _worker(processes, nameserver, "early")
    ran = tmp_path / "ran"
    parsed = Pyro5.core.URI(uri)
    serializer = Pyro5.serializers.serializers["msgpack"]
    request = {"from": "test", "calls": [w.call("logged", "x", str(ran))]}
    body = serializer.dumpsCall(parsed.object, "run_batch", (request,), {})
    message = Pyro5.protocol.SendingMessage(Pyro5.protocol.MSG_INVOKE, 0, 1, serializer.serializer_id, body)
    with socket.create_connection((parsed.host, parsed.port), timeout=15) as raw:
        raw.sendall(message.data)
        reply = raw.recv(4096)
        assert reply == b"" or reply[6] == Pyro5.protocol.MSG_CONNECTFAIL, reply
        wait_for(lambda: _closed(raw), 15, what="the connection closed")
    with auth.make_proxy(uri, w.settings, timeout_s=30) as proxy:
        assert _add(w, proxy, 1) == 2
    assert not ran.exists(), "a call ran without a handshake"


def _exchange(
    sock: socket.socket, message: bytes, between: Callable[[], object] | None = None
) -> tuple[tuple[Any, ...], Any]:
    """Send one raw message, read its reply: ``(header fields, decoded body)``. With
    ``between``, the message goes in three pieces (half its header, then part of its body, then
    the rest), ``between()`` after each: a round trip through the slot, which has then read it."""
    sock.setblocking(True)
    sock.settimeout(30)
    if between is None:
        sock.sendall(message)
    else:
        for piece in (message[:20], message[20 : HEADER.size + 10], message[HEADER.size + 10 :]):
            sock.sendall(piece)
            between()
    head = b""
    while len(head) < HEADER.size:
        head += sock.recv(HEADER.size - len(head))
    fields = HEADER.unpack(head)
    body = b""
    while len(body) < fields[6] + fields[7]:
        body += sock.recv(fields[6] + fields[7] - len(body))
    return fields, msgpack.unpackb(body, raw=False)


def test_a_reply_is_pyro5s_own_framing(processes: Processes, nameserver: str) -> None:
    """The reply a slot writes itself: Pyro5's header, the request's sequence number, its
    correlation id echoed (or a fresh uuid4 one), the serializer of the request, no annotations;
    the second request arrives in pieces read apart."""
    _proc, w, uri = _worker(processes, nameserver, "framing")
    proxy, sock = _connected(w, uri)
    other = auth.make_proxy(uri, w.settings, timeout_s=30)
    try:
        serializer = Pyro5.serializers.serializers["msgpack"]
        request = {"from": "test", "calls": [w.call("add", 2, 3)]}
        body = serializer.dumpsCall(Pyro5.core.URI(uri).object, "run_batch", (request,), {})
        for seq, corr in ((7, None), (8, uuid.uuid4())):
            Pyro5.callcontext.current_context.correlation_id = corr
            try:
                message = Pyro5.protocol.SendingMessage(
                    Pyro5.protocol.MSG_INVOKE, 0, seq, serializer.serializer_id, body
                ).data
            finally:
                Pyro5.callcontext.current_context.correlation_id = None
            fields, reply = _exchange(sock, message, None if corr is None else lambda: _add(w, other, 0))
            tag, version, kind, serializer_id, flags, got_seq, _size, notes, corr_id, _, magic = fields
            assert (tag, version, magic) == (b"PYRO", Pyro5.protocol.PROTOCOL_VERSION, 0x4DC5)
            assert (kind, serializer_id, flags, got_seq, notes) == (
                Pyro5.protocol.MSG_RESULT,
                serializer.serializer_id,
                Pyro5.protocol.FLAGS_CORR_ID,
                seq,
                0,
            )
            if corr is None:
                assert uuid.UUID(bytes=corr_id).version == 4
            else:
                assert corr_id == corr.bytes
            assert decoded(reply["outcomes"][0]) == (0, 5)
    finally:
        proxy._pyroRelease()
        other._pyroRelease()
