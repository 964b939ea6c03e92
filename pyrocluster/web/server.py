"""Run the dashboard: bind, refresh the cache in the background, serve with uvicorn until stopped."""

from __future__ import annotations

import errno
import socket
import sys
import threading
from collections.abc import Callable

import uvicorn

from pyrocluster import revocations
from pyrocluster.config import Settings, loopback_if_wildcard
from pyrocluster.errors import ConfigError
from pyrocluster.ops.health import asgi_probes, http_probe
from pyrocluster.ops.supervise import Supervision
from pyrocluster.web.app import create_app
from pyrocluster.web.cache import StatusCache

SWITCH_INTERVAL_S = 0.001
"""The dashboard process's GIL switch interval (Python's default is 5 ms)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; ConfigError (exit 2) when the address is taken or wrong."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on {host}:{port}: the port is already in use") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    settings: Settings, host: str, port: int, stop: threading.Event, ready: Callable[[str], None]
) -> None:
    """Serve until ``stop`` is set; ``ready(url)`` once requests are answered."""
    sock = bind(host, port)
    # Requests must not queue behind the refresh threads for the GIL: hand it over more often.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    bound_host, bound_port = sock.getsockname()[:2]
    cache = StatusCache(settings)
    cache.start()
    watcher = revocations.watch(settings)  # a revoked token is refused here within 5 s too
    sup = Supervision(
        lambda: http_probe(loopback_if_wildcard(bound_host), bound_port),
        lambda: None if cache.view().updated else "no status round has finished yet",
        host,
        None,
    )
    app = asgi_probes(create_app(cache, settings, bound_host, bound_port), sup.prober.check, sup.readiness)
    # log_config=None: uvicorn's records go through our handler (--log-format), not its own.
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    # uvicorn in a thread of its own installs no signal handlers: ours (``stop``) decide when to end.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    while not server.started and thread.is_alive() and not stop.wait(0.05):
        pass
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if server.started:
        sup.start(probe_always=True)  # /livez answers from the prober
        ready(f"http://{shown}:{bound_port}/")
        sup.ready()
        while thread.is_alive() and not stop.wait(0.2):
            pass
    sup.stopping()
    sup.close()
    server.should_exit = True
    thread.join(timeout=5)
    cache.stop()
    if watcher is not None:
        watcher.stop()
    sock.close()
