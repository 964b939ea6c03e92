"""An ``httpx.AsyncClient`` transport that speaks HTTP/1.1 itself: asyncio protocols and llhttp.

Why it exists: the crawl's CPU per page is mostly HTTP client code. httpx's own async transport
goes through httpcore (a connection pool that rescans every connection for every request, an
anyio stream per read) and h11 (an HTTP/1.1 state machine in pure Python, several events per
response); a worker fetching small pages spent about half its CPU there.

Here each connection is an ``asyncio.Protocol``: bytes arrive by callback and go straight into
``httptools`` (Python bindings of llhttp, Node's C parser), whose callbacks collect the status,
the headers and the body. A request is one ``write`` of bytes built from the httpx request's
headers. Idle keep-alive connections wait in a list per origin; one is reused only when nothing
arrived on it and the kernel has no close from the peer for it. Requests and responses stay
httpx's (:class:`LoopTransport` is an ``httpx.AsyncBaseTransport``), so the client builds
requests, decodes ``Content-Encoding`` and raises httpx's exceptions as usual.

What it does not do, because the crawler does not need it: HTTP/2, proxies, ``Expect:
100-continue`` uploads, protocol upgrades (a ``101`` is a protocol error).

The figure it buys: a worker's ``PageFetcher`` fetching and parsing the W3 site (1,000 small
pages from nginx, 16 at once, batches of 50) spends 0.39-0.53 ms of CPU a page with this
transport against 0.83-0.86 ms with the httpcore-based one it replaced (same run, interleaved,
load 13 on 2 cores), which itself had cut ``httpx.AsyncHTTPTransport``'s 2.2-2.7 ms to 0.9-1.1.
In the W3 benchmark the worker's CPU per page went from 1.49 ms to 0.84 ms.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator

import httptools
import httpx

READ_BUFFER_MAX = 1024 * 1024
"""Bytes of body a connection buffers before it stops reading from the socket (until they are read)."""

_Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: sends a request, parses its response as the bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: _Origin) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_ready: asyncio.Future[None] | None = None
        self._error: Exception | None = None  # a response that cannot be parsed
        self._unsolicited = False  # bytes arrived with no request waiting: never reuse
        self._eof = False
        self.paused = False
        self._head_only = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.done = False  # the whole response arrived
        self.keep_alive = False  # ... and the server keeps the connection open for another
        self.body: list[bytes] = []
        self._buffered = 0
        self._body_framed = False  # Content-Length or chunked: an early close is an error

    # -- asyncio protocol callbacks (on the loop) --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.done:
            self._unsolicited = True
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._error = httpx.RemoteProtocolError("the server switched protocols")
        except httptools.HttpParserError as exc:
            self._error = httpx.RemoteProtocolError(f"malformed HTTP response: {exc}")
        if self._error is not None:
            self._parser = None
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        self._write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- llhttp callbacks (inside feed_data) --

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:
            return  # an interim answer: the real one follows
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                self._body_framed = True
        self.head_done = True
        if self._head_only:  # no body follows an answer to HEAD, whatever its headers say
            self.done = True  # (nor is the connection reused: llhttp would still wait for one)

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            return
        self.body.append(body)
        self._buffered += len(body)
        if self._buffered > READ_BUFFER_MAX and self._transport is not None and not self.paused:
            self._transport.pause_reading()
            self.paused = True

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # forget the interim answer, wait for the real one
            self.status, self.reason, self.headers = 0, b"", []
            return
        assert self._parser is not None
        self.keep_alive = self._parser.should_keep_alive() and not self._head_only
        self.done = True

    # -- used by the transport --

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def reusable(self) -> bool:
        """Idle and healthy: nothing arrived since the last response, the peer has not closed."""
        return (
            not self._eof
            and not self._unsolicited
            and self._error is None
            and self._transport is not None
            and not self._transport.is_closing()
            # the loop may not have run eof_received yet for a close that has already arrived
            and not (self._sock is not None and _readable(self._sock))
        )

    async def send(self, head: bytes, body: bytes, head_only: bool, timeout: float | None) -> None:
        """Send one request; its response is parsed from now on."""
        if self._transport is None or self._transport.is_closing() or self._eof:
            raise httpx.WriteError("the connection is closed")
        self._reset()
        self._head_only = head_only
        self._parser = httptools.HttpResponseParser(self)
        self._transport.write(head + body if body else head)
        if self._write_ready is not None:
            await self._wait(asyncio.shield(self._write_ready), timeout, httpx.WriteTimeout)

    async def wait_head(self, timeout: float | None) -> None:
        """Wait until the status and headers arrived."""
        while not self.head_done:
            await self._more(timeout)

    async def next_body(self, timeout: float | None) -> bytes:
        """The next piece of the body, ``b""`` at its end."""
        while not self.body:
            if self.done:
                return b""
            await self._more(timeout)
        part = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self._buffered = 0
        if self.paused and self._transport is not None:
            self.paused = False
            self._transport.resume_reading()
        return part

    async def _more(self, timeout: float | None) -> None:
        """Wait for more of the response; raise when it can not come."""
        if self._error is not None:
            raise self._error
        if self._eof:
            if self.head_done and not self._body_framed:
                self.done = True  # a body delimited by the close: complete
                return
            raise httpx.RemoteProtocolError("the server closed the connection before the response ended")
        self._waiter = self._loop.create_future()
        await self._wait(self._waiter, timeout, httpx.ReadTimeout)

    async def _wait(
        self, future: asyncio.Future[None], timeout: float | None, error: type[Exception]
    ) -> None:
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, _expire, future, error)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        """Close at once, without waiting for the peer."""
        self._eof = True
        if self._transport is not None:
            self._transport.abort()


def _readable(sock: socket.socket) -> bool:
    """True when the kernel has bytes or a close from the peer for this socket (nothing is read)."""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed under us: as good as readable (not reusable)
        return True


def _expire(future: asyncio.Future[None], error: type[Exception]) -> None:
    if not future.done():
        future.set_exception(error("timed out"))


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; closing it returns the connection to the pool (or closes it)."""

    def __init__(self, transport: LoopTransport, connection: _Connection, timeout: float | None) -> None:
        self._owner: LoopTransport | None = transport
        self._connection = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            part = await self._connection.next_body(self._timeout)
            if not part:
                return
            yield part

    async def aclose(self) -> None:
        """Give the connection back when the response is complete, else close it."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.release(self._connection)


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None, float | None]:
    """The request's connect, read and write timeouts in seconds (None: no limit)."""
    timeout = request.extensions.get("timeout") or {}
    return timeout.get("connect"), timeout.get("read"), timeout.get("write")


class LoopTransport(httpx.AsyncBaseTransport):
    """An HTTP/1.1 transport for ``httpx.AsyncClient`` on the running asyncio loop.

    Keeps up to ``limits.max_keepalive_connections`` idle connections (the least recently used
    is closed first), each for ``limits.keepalive_expiry`` seconds. It does not bound how many
    requests run at once: the caller does.
    """

    def __init__(self, limits: httpx.Limits, verify: bool | ssl.SSLContext = True) -> None:
        self._ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._expiry = limits.keepalive_expiry
        self._keep = max(0, limits.max_keepalive_connections or 0)
        self._idle: dict[_Origin, list[_Connection]] = {}  # most recently used last
        self._idle_count = 0
        self._busy: set[_Connection] = set()

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            expired = self._expiry is not None and time.monotonic() - connection.idle_since > self._expiry
            if not expired and connection.reusable():
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, timeout: float | None, request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context if scheme == "https" else None
        name = host if tls else None
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, origin), host, port, ssl=tls, server_hostname=name
                ),
                timeout,
            )
        except asyncio.TimeoutError as exc:
            why = f"no connection to {host}:{port} within {timeout} s"
            raise httpx.ConnectTimeout(why, request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        sock = connection._sock
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def release(self, connection: _Connection) -> None:
        """A response was closed: keep its connection for the next request to its origin, or close it."""
        self._busy.discard(connection)
        if not (connection.done and connection.keep_alive) or connection.paused or self._keep == 0:
            connection.close()
            return
        if not connection.reusable():
            connection.close()
            return
        if self._idle_count >= self._keep:
            self._close_oldest_idle()
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.origin, []).append(connection)
        self._idle_count += 1

    def _close_oldest_idle(self) -> None:
        oldest: list[_Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest:
            oldest.pop(0).close()
            self._idle_count -= 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request over a kept-alive connection (or a new one); the body streams as it is read."""
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"scheme {scheme!r} is not http or https", request=request)
        port = url.port or (443 if scheme == "https" else 80)
        origin = (scheme, url.host, port)
        connect_s, read_s, write_s = _timeouts(request)
        body = b""
        if request.method not in ("GET", "HEAD"):
            body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        head = _request_head(request, body)
        head_only = request.method == "HEAD"
        idempotent = request.method in ("GET", "HEAD")
        while True:
            connection = self._take_idle(origin)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(origin, connect_s, request)
            self._busy.add(connection)
            try:
                await connection.send(head, body, head_only, write_s)
                await connection.wait_head(read_s)
            except BaseException as exc:
                self._busy.discard(connection)
                connection.close()
                # A kept-alive connection the server closed as the request went out: no answer (no
                # status line) came, so it was not handled; a GET is sent again on a new connection.
                stale = reused and idempotent and not connection.status
                stale = stale and isinstance(exc, httpx.TransportError)
                if stale and not isinstance(exc, httpx.TimeoutException):
                    continue
                if isinstance(exc, httpx.TransportError):
                    exc.request = request
                raise
            break
        return httpx.Response(
            status_code=connection.status,
            headers=connection.headers,
            stream=_Body(self, connection, read_s),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
        )

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        for connection in self._busy:
            connection.close()
        self._idle.clear()
        self._busy.clear()
        self._idle_count = 0


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers, as sent."""
    url = request.url
    lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if name.lower() not in (b"content-length", b"transfer-encoding"):  # the body is sent whole
            lines += [name, b": ", value, b"\r\n"]
    if body:
        lines += [b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)
