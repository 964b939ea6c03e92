"""A real local web site for crawl tests: a threaded HTTP server on 127.0.0.1, port 0.

``with SiteServer(pages=300) as site:`` serves a generated site whose pages link to each other
in cycles (all reachable from ``/``), plus special routes for the failure cases, and records
every request path so that tests can assert what was (and was not) fetched::

    /                       root: links to /page/0.html, /page/1.html, /private/0.html, the external site
    /page/<i>.html          generated pages; title "Page i", <h1>Heading i</h1>, <p class="price">
    /private/<i>.html       three pages under the folder the default robots.txt disallows
    /robots.txt             ``robots`` text (404 when ``robots=None``) with status ``robots_status``
    /redirect/<n>           a chain of n redirects ending at /redirect/0 (title "Redirect target")
    /redirect-to?url=<u>    one redirect to ``u`` (any scheme)
    /status/<code>          that status
    /status/<code>-once/<key>  that status the first time for each key, 200 afterwards
    /slow                   no answer until ``slow_s`` seconds pass or the server stops
    /delay/<ms>             answers after ``ms`` milliseconds (``max_active``: most waiting at once)
    /big                    an HTML page of ``big_bytes`` bytes
    /hangup/<i>             a page served as if kept alive, then the server closes the connection
    /headers                the request headers, as text/plain
    /status/<code>-once/<key>?retry_after=N   the same with a ``Retry-After: N`` header
    /sitemap-index.xml.gz, /sitemap-orphans.xml.gz, /orphan/<i>.html   with ``orphans=N``: a gzip
                            sitemap index (named in robots.txt) listing N pages linked from nowhere
    /text.txt, /base.html, /extract.html, /latin1.html   content-type, <base>, extract, charset cases

``/`` and ``/page/<i>.html`` carry an ``ETag`` and ``Last-Modified`` and answer 304 to a matching
``If-None-Match``; ``site.edit(path)`` changes a page (and its ETag).

A second server on 127.0.0.2 plays the external host: ``site.external_url`` is linked from ``/``
and ``/page/0.html`` and ``site.external_requests`` must stay empty in a scoped crawl.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_ROBOTS = "User-agent: *\nDisallow: /private/\n"
"""robots.txt served unless told otherwise: everything but /private/ may be crawled."""
PRIVATE_PAGES = 3
"""Number of pages under /private/."""
ORPHANS_LASTMOD = "2001-01-01T00:00:00+00:00"
"""``lastmod`` of every page in the orphans sitemap: older than any fetch."""
LAST_MODIFIED = "Mon, 01 Jan 2001 00:00:00 GMT"
"""``Last-Modified`` of every generated page."""
IDLE_TIMEOUT_S = 5.0
"""A kept-alive connection idle this long is closed by the server, in seconds."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # we close live connections ourselves in SiteServer.stop
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], site: SiteServer, external: bool) -> None:
        self.site = site
        self.external = external
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conn_lock:
            self.connections.add(request)
            self.site.connections_opened += 0 if self.external else 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)  # closed first: a test that waits for it sees it closed
        with self.conn_lock:
            self.connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer is routine here (timeouts, truncation)

    def close_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    # Headers and body leave in one write (flushed after each request) and Nagle is off:
    # otherwise delayed ACKs add ~40 ms to every kept-alive request.
    wbufsize = 65536
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        site = self.server.site
        if self.server.external:
            site._log(self.path, dict(self.headers.items()), external=True)
            self._send(200, "<html><head><title>External</title></head><body>out of scope</body></html>")
            return
        site._log(self.path, dict(self.headers.items()))
        try:
            site._route(self)
        except ValueError:  # a malformed number in the path
            self._send(404, _html("Not found", "bad path"))
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _send(
        self, status: int, body: str | bytes, ctype: str = "text/html; charset=utf-8", **headers: str
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)


def _html(title: str, body: str, head: str = "") -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>{head}</head>'
        f"<body>{body}</body></html>"
    )


def _sitemap(root: str, entries: str) -> bytes:
    """A gzip sitemap file: ``root`` is ``urlset`` or ``sitemapindex``."""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
    )
    return gzip.compress(f"{xml}{entries}</{root}>".encode())


class SiteServer:
    """A generated site on 127.0.0.1 (and an external host on 127.0.0.2), recording every request."""

    def __init__(
        self,
        pages: int = 50,
        *,
        robots: str | None = DEFAULT_ROBOTS,
        robots_status: int = 200,
        big_bytes: int = 1_000_000,
        slow_s: float = 60.0,
        padding: int = 0,
        root_links: Iterable[str] = (),
        orphans: int = 0,
    ) -> None:
        if pages < 2:
            raise ValueError("pages must be at least 2")
        self.pages = pages
        self.robots = robots
        self.robots_status = robots_status
        self.big_bytes = big_bytes
        self.slow_s = slow_s
        self.padding = padding
        self.root_links = list(root_links)
        self.orphans = orphans
        self._edits: Counter[str] = Counter()
        self._headers: list[tuple[str, dict[str, str]]] = []
        self._external_times: list[float] = []
        self._lock = threading.Lock()
        self._requests: list[str] = []
        self._times: list[float] = []
        self._external: list[str] = []
        self._once: Counter[str] = Counter()
        self._active = 0
        self.max_active = 0
        self.connections_opened = 0
        """TCP connections the main host accepted."""
        self._stop = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        self.external_port = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> SiteServer:
        """Bind both servers on free ports and serve them in background threads."""
        main = _Server(("127.0.0.1", 0), self, external=False)
        ext = _Server(("127.0.0.2", 0), self, external=True)
        self.port = main.server_address[1]
        self.external_port = ext.server_address[1]
        for server in (main, ext):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, release every waiting handler, close open connections; never hangs."""
        self._stop.set()
        for server in self._servers:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests read -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, as a crawl job's ``allow`` names it."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this site."""
        return f"http://{self.host}{path}"

    @property
    def external_url(self) -> str:
        """The out-of-scope site linked from ``/`` and ``/page/0.html``."""
        return f"http://127.0.0.2:{self.external_port}/"

    @property
    def requests(self) -> list[str]:
        """Every request path (with query) received by the site, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_times(self) -> list[float]:
        """``time.monotonic()`` of every request to the main host, in arrival order."""
        with self._lock:
            return list(self._times)

    @property
    def external_requests(self) -> list[str]:
        """Every request path received by the external host."""
        with self._lock:
            return list(self._external)

    @property
    def request_headers(self) -> list[tuple[str, dict[str, str]]]:
        """``(path, headers)`` of every request to either host, in order."""
        with self._lock:
            return list(self._headers)

    @property
    def external_request_times(self) -> list[float]:
        """``time.monotonic()`` of every request to the external host."""
        with self._lock:
            return list(self._external_times)

    def edit(self, path: str) -> None:
        """Change the page at ``path`` (``/`` or ``/page/<i>.html``): new body, new ETag."""
        with self._lock:
            self._edits[path] += 1

    def count(self, path: str) -> int:
        """How many times ``path`` was requested."""
        with self._lock:
            return self._requests.count(path)

    def reset(self) -> None:
        """Forget the request log, the 500-once keys and ``max_active``."""
        with self._lock:
            self._requests.clear()
            self._times.clear()
            self._external.clear()
            self._external_times.clear()
            self._headers.clear()
            self._once.clear()
            self.max_active = 0

    def links(self, path: str) -> list[str]:
        """In-site paths that the page at ``path`` links to (fragments removed), in page order."""
        if path == "/":
            return ["/page/0.html", "/page/1.html", "/private/0.html", *self._root_paths()]
        if path.startswith("/page/"):
            i = int(path[len("/page/") : -len(".html")])
            n = self.pages
            targets = [
                f"/page/{(i + 1) % n}.html",
                f"/page/{(2 * i + 1) % n}.html",
                f"/page/{(7 * i + 3) % n}.html",
                "/",
            ]
            return list(dict.fromkeys(targets))
        if path.startswith("/private/"):
            i = int(path[len("/private/") : -len(".html")])
            return [f"/private/{(i + 1) % PRIVATE_PAGES}.html", "/"]
        return []

    def reachable(self, max_depth: int | None = None, disallow: Iterable[str] = ()) -> dict[str, int]:
        """Path -> depth of every in-site page a BFS from ``/`` reaches, skipping ``disallow`` prefixes."""
        prefixes = tuple(disallow)
        depths = {"/": 0}
        queue = deque(["/"])
        while queue:
            path = queue.popleft()
            if max_depth is not None and depths[path] >= max_depth:
                continue
            for link in self.links(path):
                if link not in depths and not link.startswith(prefixes):
                    depths[link] = depths[path] + 1
                    queue.append(link)
        return depths

    # ---- internals -------------------------------------------------------------------------

    def _root_paths(self) -> list[str]:
        return [urlsplit(link).path or "/" for link in self.root_links if link.startswith("/")]

    def _log(self, path: str, headers: dict[str, str], external: bool = False) -> None:
        with self._lock:
            (self._external if external else self._requests).append(path)
            (self._external_times if external else self._times).append(time.monotonic())
            self._headers.append((path, headers))

    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            self.max_active = max(self.max_active, self._active)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _page(self, i: int) -> str:
        n = self.pages
        nxt, two, seven = (i + 1) % n, (2 * i + 1) % n, (7 * i + 3) % n
        body = (
            f'<h1 id="top">Heading {i}</h1><p class="price">${i}.99</p>'
            f'<a href="/page/{nxt}.html">next</a> <a href="{two}.html#part">double</a> '
            f'<a href="{self.url(f"/page/{seven}.html")}">seven</a> <a href="../">home</a> '
            f'<a href="/page/{nxt}.html#again">next again</a> '
            '<a href="mailto:someone@example.com">mail</a> <a href="javascript:void(0)">js</a> '
            '<a href="#top">top</a> <a href="ftp://127.0.0.1/file">ftp</a>'
        )
        if i == 0:
            body += f' <a href="{self.external_url}">external</a>'
        if self.padding:
            body += f"<p>{'x' * self.padding}</p>"
        return _html(f"Page {i}", body)

    def _route(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        if path == "/":
            extra = "".join(f'<a href="{link}">extra</a> ' for link in self.root_links)
            body = (
                '<h1>Home</h1><a href="/page/0.html">first</a> <a href="page/1.html">second</a> '
                f'<a href="/private/0.html">private</a> <a href="{self.external_url}">external</a> {extra}'
            )
            self._send_page(h, path, _html("Home", body))
        elif path.startswith("/page/") and path.endswith(".html"):
            number = path[len("/page/") : -len(".html")]
            if number.isdigit() and int(number) < self.pages:
                self._send_page(h, path, self._page(int(number)))
            else:
                h._send(404, _html("Not found", "no such page"))
        elif path.startswith("/private/") and path.endswith(".html"):
            i = int(path[len("/private/") : -len(".html")] or 0) % PRIVATE_PAGES
            body = (
                f'<h1>Private {i}</h1><a href="{(i + 1) % PRIVATE_PAGES}.html">next</a> <a href="/">home</a>'
            )
            h._send(200, _html(f"Private {i}", body))
        elif path == "/robots.txt":
            if self.robots is None:
                h._send(404, "not found", "text/plain")
            else:
                sitemap = f"\nSitemap: {self.url('/sitemap-index.xml.gz')}\n" if self.orphans else ""
                h._send(self.robots_status, self.robots + sitemap, "text/plain")
        elif path == "/sitemap-index.xml.gz" and self.orphans:
            entry = f"<sitemap><loc>{self.url('/sitemap-orphans.xml.gz')}</loc></sitemap>"
            h._send(200, _sitemap("sitemapindex", entry), "application/gzip")
        elif path == "/sitemap-orphans.xml.gz" and self.orphans:
            entries = "".join(
                f"<url><loc>{self.url(f'/orphan/{i}.html')}</loc><lastmod>{ORPHANS_LASTMOD}</lastmod></url>"
                for i in range(self.orphans)
            )
            h._send(200, _sitemap("urlset", entries), "application/gzip")
        elif path.startswith("/orphan/") and path.endswith(".html") and self.orphans:
            h._send(200, _html(f"Orphan {path[len('/orphan/') : -len('.html')]}", "linked from nowhere"))
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            if n > 0:
                h._send(302, "", Location=f"/redirect/{n - 1}")
            else:
                h._send(200, _html("Redirect target", '<a href="/page/0.html">first</a>'))
        elif path == "/redirect-to":
            target = parse_qs(parts.query).get("url", ["/"])[0]
            h._send(302, "", Location=target)
        elif path.startswith("/status/") and "-once/" in path:
            code, _, key = path[len("/status/") :].partition("-once/")
            with self._lock:
                self._once[key] += 1
                first = self._once[key] == 1
            retry_after = parse_qs(parts.query).get("retry_after")
            if first and retry_after:
                h._send(int(code), _html("Oops", "later"), Retry_After=retry_after[0])
            elif first:
                h._send(int(code), _html("Oops", "try again"))
            else:
                h._send(200, _html(f"Recovered {key}", "fine now"))
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            h._send(code, _html(f"Status {code}", "status page"))
        elif path == "/slow":
            if self._stop.wait(self.slow_s):
                h.close_connection = True  # shutting down: hang up without an answer
                return
            h._send(200, _html("Slow", "finally"))
        elif path.startswith("/delay/"):
            ms = int(path.rsplit("/", 1)[1])
            self._enter()
            try:
                if self._stop.wait(ms / 1000.0):
                    h.close_connection = True
                    return
            finally:
                self._leave()
            h._send(200, _html(f"Delay {ms}", "done"))
        elif path.startswith("/hangup/"):
            h._send(200, _html("Hangup", "served, then the connection is closed"))
            h.close_connection = True  # no "Connection: close": the client learns it from the socket
        elif path == "/big":
            self._send_big(h)
        elif path == "/headers":
            echo = "".join(f"{k}: {v}\n" for k, v in h.headers.items())
            h._send(200, echo, "text/plain; charset=utf-8")
        elif path == "/text.txt":
            h._send(200, '<title>not html</title><a href="/page/1.html">x</a>', "text/plain; charset=utf-8")
        elif path == "/base.html":
            body = '<a href="3.html">three</a> <a href="/page/4.html">four</a>'
            h._send(200, _html("Base", body, head='<base href="/page/">'))
        elif path == "/extract.html":
            body = (
                '<h1>  Big <b>Title</b>  </h1><p class="price"> 12.50 </p><p class="price">99</p>'
                '<div id="desc">First line</div>'
            )
            h._send(200, _html(" Extract \n  page ", body))
        elif path == "/latin1.html":
            data = "<html><head><title>Café</title></head><body>é</body></html>".encode("latin-1")
            h._send(200, data, "text/html; charset=iso-8859-1")
        else:
            h._send(404, _html("Not found", "no such page"))

    def _send_page(self, h: _Handler, path: str, body: str) -> None:
        """A generated page with validators: 304 when the request's ``If-None-Match`` matches."""
        edits = self._edits[path]
        if edits:
            body = body.replace("</body>", f"<p>edit {edits}</p></body>")
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:16] + '"'
        if h.headers.get("If-None-Match") == etag:
            h.send_response(304)
            h.send_header("ETag", etag)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h._send(200, body, ETag=etag, Last_Modified=LAST_MODIFIED)

    def _send_big(self, h: _Handler) -> None:
        head = b"<!doctype html><html><head><title>Big</title></head><body><p>"
        tail = b"</p></body></html>"
        filler = max(0, self.big_bytes - len(head) - len(tail))
        h.send_response(200)
        h.send_header("Content-Type", "text/html; charset=utf-8")
        h.send_header("Content-Length", str(len(head) + filler + len(tail)))
        h.end_headers()
        h.wfile.write(head)
        chunk = b"y" * 65536
        while filler > 0:
            h.wfile.write(chunk[: min(filler, len(chunk))])
            filler -= min(filler, len(chunk))
        h.wfile.write(tail)


def wait_until(predicate: Any, timeout_s: float = 5.0, interval_s: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval_s)
