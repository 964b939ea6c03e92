"""``/livez`` and ``/readyz`` on a port of their own, and the prober that decides liveness.

A check is a function returning None when all is well, else the reason. Liveness comes from a
:class:`Prober` that makes a real round trip through the process's own serving loop (a fresh
connection to its Pyro5 daemon, say) at an interval: a process whose loop is wedged stops
answering its own probe, so ``/livez`` turns 503 and the systemd watchdog pings stop, even
though every thread of ours that only keeps time is still running.

The endpoints need no credentials and say nothing beyond ``ok`` or the reason.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pyrocluster.ops import sdnotify

log = logging.getLogger(__name__)

Check = Callable[[], "str | None"]
PROBE_INTERVAL_S = 1.0
"""Seconds between liveness round trips when no watchdog asks for more often."""
STALE_PROBES = 3
"""Liveness fails when no round trip succeeded for this many intervals (and at least STALE_MIN_S)."""
STALE_MIN_S = 2.0


class Prober:
    """Runs ``probe`` (a real round trip; raises or returns a reason when it fails) at an interval.

    Each success also pings the systemd watchdog (``WATCHDOG=1``); a failure does not.
    """

    def __init__(self, probe: Callable[[], str | None], interval_s: float | None = None) -> None:
        self._probe = probe
        watchdog = sdnotify.watchdog_interval()
        self.interval_s = interval_s or min(PROBE_INTERVAL_S, watchdog or PROBE_INTERVAL_S)
        self.watchdog = watchdog is not None
        self.last_ok = time.monotonic()
        self.last_error = ""
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness-probe", daemon=True)

    def start(self) -> Prober:
        """Probe in the background until :meth:`stop`."""
        self.last_ok = time.monotonic()  # the process has just proven itself by starting
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop probing (and pinging the watchdog)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                reason = self._probe()
            except Exception as exc:  # the probe's failure is the finding, never the thread's end
                reason = f"{type(exc).__name__}: {exc}"
            self.last_error = reason or ""
            if reason is None:
                self.last_ok = time.monotonic()
                self._warned = False
                if self.watchdog and not self._stop.is_set():
                    sdnotify.notify("WATCHDOG=1")
            elif not self._warned and (failing := self.check()):
                # once /livez fails, not at a lone miss: a stopping process misses its last probes
                log.warning("liveness probe failing: %s", failing)
                self._warned = True

    def check(self) -> str | None:
        """None while a round trip succeeded recently, else why not."""
        silent = time.monotonic() - self.last_ok
        if silent > max(STALE_MIN_S, STALE_PROBES * self.interval_s):
            return (
                f"no answer from the serving loop for {silent:.0f} s ({self.last_error or 'probe pending'})"
            )
        return None


def probe_answer(path: str, live: Check, ready: Check) -> tuple[int, dict[str, str]] | None:
    """(status, body) for ``/livez`` or ``/readyz``; None for any other path."""
    check = {"/livez": live, "/readyz": ready}.get(path.split("?", 1)[0])
    if check is None:
        return None
    reason = live() if check is ready and live() else check()
    return (503, {"status": "fail", "reason": reason}) if reason else (200, {"status": "ok"})


def asgi_probes(app: Any, live: Check, ready: Check) -> Any:
    """An ASGI app answering ``GET /livez`` and ``/readyz`` itself (before any credential check of
    ``app``) and handing every other request to ``app``."""

    async def probes(scope: Any, receive: Any, send: Any) -> None:
        answer = probe_answer(scope["path"], live, ready) if scope["type"] == "http" else None
        if answer is None or scope.get("method") not in ("GET", "HEAD"):
            await app(scope, receive, send)
            return
        status, body = answer
        data = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return probes


def http_probe(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """A real round trip through an HTTP server's loop: any answer to ``GET /livez`` will do."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/livez")
        conn.getresponse().read()
    finally:
        conn.close()
    return None


class HealthServer:
    """A tiny HTTP server answering GET ``/livez`` and ``/readyz`` (404 for everything else)."""

    def __init__(self, host: str, port: int, live: Check, ready: Check) -> None:
        # Imported here: only a process asked for a health port pays for http.server and email.
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            server_version = "pyrocluster"  # and no Python version: the probe tells nothing else
            sys_version = ""

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.answer(body=True)

            def do_HEAD(self) -> None:  # noqa: N802 - as GET without the body (curl -I, some checkers)
                self.answer(body=False)

            def answer(self, body: bool) -> None:
                status, doc = probe_answer(self.path, live, ready) or (404, {"status": "not found"})
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        # The family of the address asked for: ``::1`` listens as well as ``127.0.0.1`` does.
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][
            0
        ]

        class Server(ThreadingHTTPServer):
            address_family = family
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A log record, never socketserver's bare traceback on stderr (it breaks JSON
                logs); a prober that gave up before the answer is routine."""
                routine = isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError))
                level = logging.DEBUG if routine else logging.WARNING
                log.log(level, "health request from %s failed", client_address[0], exc_info=True)

        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def address(self) -> str:
        """``HOST:PORT`` it listens on."""
        host, port = self._server.socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> HealthServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
