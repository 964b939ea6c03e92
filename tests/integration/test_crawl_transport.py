"""The crawler's HTTP/1.1 transport against a real loopback server that answers scripted bytes.

Each path of the server sends fixed bytes (chunked, close-delimited, cut short, an interim 100,
gzip, garbage), so the framing cases of HTTP/1.1 that a web server may choose are each met.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pyrocluster import pki
from pyrocluster.crawl.fetch import PageFetcher
from pyrocluster.crawl.transport import LoopTransport
from pyrocluster.protocol import OK, TRANSIENT

PAGE = b"<html><head><title>T</title></head><body><a href='/next'>n</a></body></html>"


def _head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(body: bytes, size: int = 7) -> bytes:
    parts = [
        f"{len(body[i : i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


ONCE_PER_CONNECTION = "/once-per-connection"
"""Answered as ``/plain`` on a new connection; a second request on it gets the connection closed."""

# path -> (bytes sent, close the connection after them)
SCRIPT: dict[str, tuple[bytes, bool]] = {
    "/plain": (
        _head("HTTP/1.1 200 OK", "Content-Type: text/html", f"Content-Length: {len(PAGE)}") + PAGE,
        False,
    ),
    "/chunked": (
        _head("HTTP/1.1 200 OK", "Content-Type: text/html", "Transfer-Encoding: chunked") + _chunked(PAGE),
        False,
    ),
    "/until-close": (_head("HTTP/1.0 200 OK", "Content-Type: text/html") + PAGE, True),
    "/says-close": (
        _head(
            "HTTP/1.1 200 OK", "Content-Type: text/html", f"Content-Length: {len(PAGE)}", "Connection: close"
        )
        + PAGE,
        False,  # the server keeps it open: the client must not reuse it anyway
    ),
    "/cut-short": (_head("HTTP/1.1 200 OK", "Content-Type: text/html", "Content-Length: 1000") + PAGE, True),
    "/interim": (
        _head("HTTP/1.1 100 Continue")
        + _head("HTTP/1.1 200 OK", "Content-Type: text/html", f"Content-Length: {len(PAGE)}")
        + PAGE,
        False,
    ),
    "/gzip": (
        _head(
            "HTTP/1.1 200 OK",
            "Content-Type: text/html",
            "Content-Encoding: gzip",
            f"Content-Length: {len(gzip.compress(PAGE))}",
        )
        + gzip.compress(PAGE),
        False,
    ),
    "/garbage": (b"this is not HTTP at all\r\n\r\n", True),
    "/not-modified": (_head("HTTP/1.1 304 Not Modified", 'ETag: "v1"'), False),
}


class ScriptedServer:
    """A loopback TCP server answering each request with the bytes of its path in ``SCRIPT``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.connections_opened = 0
        self.requests: list[bytes] = []
        self._open: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections_opened += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        served = 0
        if self._tls is not None:
            try:
                conn = self._tls.wrap_socket(conn, server_side=True)
            except OSError:  # the client refused our certificate
                conn.close()
                return
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                request, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(request)
                served += 1
                path = request.split(b" ")[1].decode().partition("?")[0]
                if path == ONCE_PER_CONNECTION and served > 1:
                    return  # a kept-alive connection closed just as a request arrives on it
                path = "/plain" if path == ONCE_PER_CONNECTION else path
                answer, close = SCRIPT[path]
                conn.sendall(answer)
                if close:
                    conn.shutdown(socket.SHUT_RDWR)
                    return

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._sock.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture
def fetcher() -> Iterator[PageFetcher]:
    with PageFetcher(concurrency=4) as f:
        yield f


def page_of(outcome: list[Any]) -> dict[str, Any]:
    kind, value, _ = outcome
    assert kind == OK, value
    return value


def test_request_line_and_headers_are_sent_as_http_1_1(server, fetcher):
    page_of(fetcher.fetch(server.url("/plain?x=1"), {"headers": {"X-Token": "abc"}}))
    lines = server.requests[0].split(b"\r\n")
    assert lines[0] == b"GET /plain?x=1 HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    assert headers[b"host"] == f"127.0.0.1:{server.port}".encode()
    assert headers[b"x-token"] == b"abc"
    assert b"content-length" not in headers  # a GET sends no body


@pytest.mark.parametrize("path", ["/plain", "/chunked", "/interim", "/gzip"])
def test_each_framing_gives_the_whole_page_on_a_kept_alive_connection(server, fetcher, path):
    for _ in range(3):
        page = page_of(fetcher.fetch(server.url(path)))
        assert page["title"] == "T" and page["bytes"] == len(PAGE)
        assert page["links"] == [server.url("/next")]
    assert server.connections_opened == 1


def test_a_body_delimited_by_the_close_is_complete_and_the_connection_not_reused(server, fetcher):
    for _ in range(2):
        page = page_of(fetcher.fetch(server.url("/until-close")))
        assert page["title"] == "T" and page["bytes"] == len(PAGE)
    assert server.connections_opened == 2


def test_connection_close_from_the_server_is_honoured(server, fetcher):
    for _ in range(2):
        page_of(fetcher.fetch(server.url("/says-close")))
    assert server.connections_opened == 2


def test_a_body_cut_short_is_a_transient_protocol_error(server, fetcher):
    kind, error, _ = fetcher.fetch(server.url("/cut-short"))
    assert kind == TRANSIENT and error["type"] == "RemoteProtocolError"
    page_of(fetcher.fetch(server.url("/plain")))  # the next fetch is not disturbed


def test_an_answer_that_is_not_http_is_a_transient_protocol_error(server, fetcher):
    kind, error, _ = fetcher.fetch(server.url("/garbage"))
    assert kind == TRANSIENT and error["type"] == "RemoteProtocolError"


def test_a_304_has_no_body_and_keeps_the_connection(server, fetcher):
    options = {"any_status": True, "keep_headers": True}
    for _ in range(2):
        page = page_of(fetcher.fetch(server.url("/not-modified"), options))
        assert page["http_status"] == 304 and page["bytes"] == 0 and page["headers"]["etag"] == '"v1"'
    page_of(fetcher.fetch(server.url("/plain")))
    assert server.connections_opened == 1


def test_a_request_on_a_kept_alive_connection_the_server_drops_is_sent_again_on_a_new_one(server, fetcher):
    for _ in range(3):  # each time: the kept-alive connection closes unanswered, a new one answers
        assert page_of(fetcher.fetch(server.url(ONCE_PER_CONNECTION)))["title"] == "T"
    assert server.connections_opened == 3
    assert len(server.requests) == 5  # 1 + 2 x (dropped, sent again)


def _tls_pair(tmp_path: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 from a new CA, and a client one trusting it."""
    ca, ca_key = pki.make_ca("test CA")
    cert, key = pki.issue(ca, ca_key, "site", ips=["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(pki.cert_pem(cert))
    (tmp_path / "key.pem").write_bytes(pki.key_pem(key))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=pki.cert_pem(ca).decode())
    return server, client


def test_https_pages_come_over_tls_on_a_kept_alive_connection(tmp_path):
    server_ctx, client_ctx = _tls_pair(tmp_path)
    site = ScriptedServer(tls=server_ctx)

    async def fetch_twice() -> list[bytes]:
        transport = LoopTransport(httpx.Limits(max_keepalive_connections=2), verify=client_ctx)
        async with httpx.AsyncClient(transport=transport) as client:
            return [(await client.get(site.url("/chunked"))).content for _ in range(2)]

    try:
        assert asyncio.run(fetch_twice()) == [PAGE, PAGE]
        assert site.connections_opened == 1
    finally:
        site.close()


def test_a_certificate_the_fetcher_cannot_verify_is_refused(tmp_path):
    server_ctx, _ = _tls_pair(tmp_path)
    site = ScriptedServer(tls=server_ctx)
    try:
        with PageFetcher(concurrency=2) as fetcher:
            kind, error, _ = fetcher.fetch(site.url("/plain"))
        assert kind == TRANSIENT and error["type"] == "ConnectError"
        assert "certificate" in error["message"].lower()
        assert site.requests == []  # nothing was sent over the unverified connection
    finally:
        site.close()
