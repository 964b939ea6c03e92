"""A real TCP relay on loopback in front of one address, whose server-to-client side can stall.

It stands for a worker (or a path to it) that goes slow: in ``pass`` mode it forwards both ways;
after :meth:`Relay.stall` every connection forwards a few more bytes from the server and then
nothing (the connection stays open); after :meth:`Relay.drip` every connection forwards one byte
from the server per interval. Client-to-server bytes always pass. The relay runs an asyncio
loop on a thread of its own; :meth:`Relay.close` stops it and every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

PASS, STALL, DRIP = "pass", "stall", "drip"


class _Downstream:
    """What one connection still has to forward from the server to the client."""

    def __init__(self, allowance: int) -> None:
        self.pending = bytearray()
        self.allowance = allowance
        self.changed = asyncio.Event()
        self.server_done = False


class Relay:
    """``Relay(host, port)``: listens on 127.0.0.1 at :attr:`port` and relays to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.mode = PASS
        self.first_bytes = 0
        self.drip_s = 1.0
        self.connections = 0
        self._streams: list[_Downstream] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")

    def address(self) -> str:
        """``127.0.0.1:PORT`` to connect to instead of the target."""
        return f"127.0.0.1:{self.port}"

    def stall(self, first_bytes: int = 8) -> None:
        """From now on each connection forwards ``first_bytes`` more from the server, then nothing."""
        self._loop.call_soon_threadsafe(self._set, STALL, first_bytes)

    def drip(self, interval_s: float = 1.0) -> None:
        """From now on each connection forwards one byte from the server every ``interval_s``."""
        self.drip_s = interval_s
        self._loop.call_soon_threadsafe(self._set, DRIP, 0)

    def _set(self, mode: str, first_bytes: int) -> None:
        self.mode, self.first_bytes = mode, first_bytes
        for stream in self._streams:
            stream.allowance = first_bytes
            stream.changed.set()

    def close(self) -> None:
        """Stop relaying and close every connection."""
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()
            server.close()
            for writer in self._writers:
                writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        self._writers += [client_w, server_w]
        stream = _Downstream(self.first_bytes)
        self._streams.append(stream)
        tasks = [
            asyncio.ensure_future(self._up(client_r, server_w)),
            asyncio.ensure_future(self._take(server_r, stream)),
            asyncio.ensure_future(self._down(stream, client_w)),
        ]
        await asyncio.wait([tasks[0], tasks[2]], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()
        self._streams.remove(stream)

    async def _up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to server, always: ends when the client closes (the coordinator cut it)."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _take(self, reader: asyncio.StreamReader, stream: _Downstream) -> None:
        """Everything the server sends, kept until the mode lets it through."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                stream.pending += data
                stream.changed.set()
        stream.server_done = True
        stream.changed.set()

    async def _down(self, stream: _Downstream, writer: asyncio.StreamWriter) -> None:
        """Server to client, as the mode allows; ends once the server closed and all that may pass did."""
        with contextlib.suppress(OSError):
            while True:
                out = self._next(stream)
                if out:
                    writer.write(out)
                    await writer.drain()
                    if self.mode == DRIP:
                        await asyncio.sleep(self.drip_s)
                    continue
                if stream.server_done and self.mode == PASS:
                    return
                stream.changed.clear()
                await stream.changed.wait()

    def _next(self, stream: _Downstream) -> Any:
        """The bytes that may go to the client now (and take them from what is pending)."""
        if self.mode == PASS:
            n = len(stream.pending)
        elif self.mode == STALL:
            n = min(len(stream.pending), stream.allowance)
            stream.allowance -= n
        else:
            n = min(len(stream.pending), 1)
        out = bytes(stream.pending[:n])
        del stream.pending[:n]
        return out
