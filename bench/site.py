"""The W3 site: N generated pages, ~10 links each, all reachable from ``/``, served fast.

Page 0 is ``/`` (``index.html``), page i >= 1 is ``/p/<i>.html``. Page i links to its tree
children ``10i+1 .. 10i+10`` (so every page is reachable from the root, depth <= log10 N) and
fills up to ``LINKS`` with seeded random pages.

``Site(pages)`` writes the files to a temporary folder and serves them with nginx on a free
127.0.0.1 port (its own config, pid and logs in that folder). Without nginx it prints a
warning and falls back to ``python -m bench.site ROOT PORT``: a ThreadingHTTPServer in a
process of its own (HTTP/1.1 keep-alive, no Nagle), much slower than nginx.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LINKS = 10
"""Links per page."""
START_TIMEOUT_S = 10.0
"""Seconds the server has to accept connections."""
FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
    "aliquip ex ea commodo consequat. "
)
NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bytes '$status $body_bytes_sent';
    access_log {access_log};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ text/html html; }}
    default_type text/html;
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    open_file_cache max=10000 inactive=60s;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        index index.html;
    }}
}}
"""


def page_path(i: int) -> str:
    """URL path of page ``i``."""
    return "/" if i == 0 else f"/p/{i}.html"


def page_links(i: int, n: int, rng: random.Random) -> list[int]:
    """The pages page ``i`` links to: its tree children, then random others."""
    links = [c for c in range(LINKS * i + 1, LINKS * i + LINKS + 1) if c < n]
    while len(links) < min(LINKS, n - 1):
        j = rng.randrange(n)
        if j != i and j not in links:
            links.append(j)
    return links


def write_site(root: Path, n: int, seed: int = 6) -> None:
    """Write the ``n`` pages under ``root``."""
    rng = random.Random(seed)
    (root / "p").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        items = "".join(f'<li><a href="{page_path(j)}">Page {j}</a></li>' for j in page_links(i, n, rng))
        body = (
            f'<!doctype html><html><head><meta charset="utf-8"><title>Page {i}</title></head><body>'
            f"<h1>Page {i}</h1><p>{FILLER * 6}</p><ul>{items}</ul><p>{FILLER * 4}</p></body></html>\n"
        )
        (root / ("index.html" if i == 0 else f"p/{i}.html")).write_text(body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_accepting(port: int, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not accept connections on port {port} within {START_TIMEOUT_S:g} s")


class Site:
    """The generated site, served on 127.0.0.1 until ``close()``."""

    def __init__(self, pages: int, log_bytes: bool = False) -> None:
        self.pages = pages
        self.log_bytes = log_bytes
        """nginx logs each answer's status and body bytes (``body_bytes()``); off for speed runs."""
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-site-"))
        self.root = self.tmp / "www"
        write_site(self.root, pages)
        self.server = "nginx"
        self.warning = ""
        self._proc: subprocess.Popen[Any] | None = None
        nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
        if nginx is not None:
            try:
                self._start_nginx(nginx)
            except RuntimeError as exc:
                self.warning = f"WARNING: nginx failed to start ({exc})"
                nginx = None
        if nginx is None:
            self.warning = (self.warning or "WARNING: nginx not found") + (
                ": serving the W3 site with Python's ThreadingHTTPServer, which is far slower "
                "(install nginx: apt-get install -y nginx)"
            )
            print(self.warning, file=sys.stderr, flush=True)
            self.server = "python ThreadingHTTPServer (fallback)"
            self._start_python()

    @property
    def url(self) -> str:
        """The root URL."""
        return f"http://127.0.0.1:{self.port}/"

    def _start_nginx(self, nginx: str) -> None:
        # nginx's workers drop to an unprivileged user when we are root: they must read the files.
        for d in (self.tmp, self.root, self.root / "p"):
            os.chmod(d, 0o755)
        self.port = _free_port()
        conf = self.tmp / "nginx.conf"
        access_log = f"{self.tmp}/access.log bytes" if self.log_bytes else "off"
        conf.write_text(
            NGINX_CONF.format(tmp=self.tmp, root=self.root, port=self.port, access_log=access_log)
        )
        self._proc = subprocess.Popen(
            [nginx, "-p", str(self.tmp), "-c", str(conf), "-e", str(self.tmp / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _wait_accepting(self.port, self._proc)
        except RuntimeError as exc:
            stderr = self._proc.stderr
            done = self._proc.poll() is not None
            err = stderr.read().decode(errors="replace").strip() if done and stderr is not None else ""
            self._stop()
            raise RuntimeError(f"{exc} {err}".strip()) from None

    def _start_python(self) -> None:
        self.port = _free_port()
        repo = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.site", str(self.root), str(self.port)],
            cwd=repo,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_accepting(self.port, self._proc)

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGQUIT if self.server == "nginx" else signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def body_bytes(self) -> tuple[int, Counter[str]]:
        """Body bytes nginx has sent so far and the count of each status (``log_bytes`` only)."""
        total, statuses = 0, Counter[str]()
        path = self.tmp / "access.log"
        for line in path.read_text().splitlines() if path.exists() else ():
            status, _, sent = line.partition(" ")
            statuses[status] += 1
            total += int(sent or 0)
        return total, statuses

    def close(self) -> None:
        """Stop the server and delete the files."""
        self._stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 65536

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(root: str, port: int) -> None:
    """The fallback server: serve ``root`` on 127.0.0.1:``port`` until SIGTERM."""
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Handler, directory=root))
    server.daemon_threads = True
    server.request_queue_size = 1024
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
