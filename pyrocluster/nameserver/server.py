"""Run the real Pyro5 name server with our storage and authentication."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from dataclasses import replace

import Pyro5.errors

from pyrocluster import config
from pyrocluster.auth import SecureNameServerDaemon
from pyrocluster.config import Settings, loopback_if_wildcard, parse_address
from pyrocluster.defaults import DEFAULT_FORGET_AFTER_S
from pyrocluster.errors import ConfigError
from pyrocluster.nameserver import guard


def storage_url(storage: str) -> str:
    """Turn ``memory`` or ``PATH.sqlite`` into Pyro5's storage setting."""
    if storage == "memory":
        return "memory"
    if not storage.endswith((".sqlite", ".db", ".sqlite3")):
        raise ConfigError(f"--storage {storage}: expected 'memory' or a PATH ending in .sqlite")
    return "sql:" + storage


def start_nameserver(
    settings: Settings, host: str, port: int, storage: str = "memory"
) -> SecureNameServerDaemon:
    """Bind the name server daemon; ConfigError when the address is taken or not ours."""
    config.apply(settings)
    url = storage_url(storage)
    try:
        daemon = SecureNameServerDaemon(settings, host=host, port=port, storage=url)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on {host}:{port}: the port is already in use") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except (Pyro5.errors.PyroError, ValueError) as exc:
        raise ConfigError(f"cannot start the name server: {exc}") from None
    guard.install(daemon)
    return daemon


def bound_address(daemon: object) -> str:
    """``HOST:PORT`` the daemon actually listens on."""
    host, port = daemon.sock.getsockname()[:2]  # type: ignore[attr-defined]
    return f"{host}:{port}"


def serve_until(daemon: object, stop: threading.Event, on_stop: Callable[[], None] | None = None) -> None:
    """Serve requests in a thread until ``stop`` is set (then ``on_stop()``), then shut the daemon down."""
    loop = threading.Thread(target=daemon.requestLoop, name="pyro-request-loop", daemon=True)  # type: ignore[attr-defined]
    loop.start()
    stop.wait()
    if on_stop is not None:
        on_stop()
    daemon.shutdown()  # type: ignore[attr-defined]
    loop.join(timeout=5)


class NameServerThreads:
    """A name server served by threads of this process, with its reaper (``submit --local``: no
    interpreter to start and no command-line imports, about 0.15 s of CPU, off the start-up);
    ``close()`` stops both. ConfigError when it cannot listen."""

    def __init__(
        self, settings: Settings, host: str, port: int, forget_after_s: float = DEFAULT_FORGET_AFTER_S
    ) -> None:
        from pyrocluster.nameserver.reaper import Reaper

        self.daemon = start_nameserver(settings, host, port)
        self.address = bound_address(self.daemon)
        self._reaper = Reaper(settings, self.daemon.nameserver, forget_after_s)
        self._loop = threading.Thread(target=self.daemon.requestLoop, name="nameserver", daemon=True)
        self._loop.start()
        self._reaper.start()

    def close(self) -> None:
        """Stop the reaper and the daemon (its socket is closed)."""
        self._reaper.stop()
        self.daemon.shutdown()
        self._loop.join(timeout=5)


def ping_nameserver(settings: Settings, address: str) -> str | None:
    """A real round trip through the name server at ``address`` (a fresh connection and a ``ping``);
    raises when it does not answer. A wildcard address is reached over loopback."""
    host, port = parse_address(address)
    host = loopback_if_wildcard(host)
    from pyrocluster.nameserver import registry

    proxy = registry.connect(replace(settings, ns_host=host, ns_port=port), timeout_s=2.0)
    try:
        proxy.ping()
    finally:
        proxy._pyroRelease()
    return None
